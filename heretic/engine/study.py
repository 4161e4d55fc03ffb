"""The Optuna study: storage, resume, and a trial loop that ends at exactly N completed trials.

- Storage: a journal file in the study folder by default (safe for several processes on one
  machine), or an Optuna RDB URL (PostgreSQL for several machines; SQLite works too). RDB
  studies record a heartbeat per running trial, so a trial of a machine that vanished (spot
  preemption) is failed after the grace period and re-run with the same parameters.
- Resume: a trial left RUNNING by a process that is gone is marked FAIL and its parameters are
  enqueued, so it is re-run; completed trials are never repeated.
- Exactness: a worker claims a trial only while `completed + running < N`, under a file lock in
  the study folder, so N is reached exactly by any number of workers on one machine. On
  PostgreSQL the claim also holds a database advisory lock, so N is exact across machines too
  (the lock is tied to a connection, so a killed machine's lock goes with it). On other RDB
  storages the lock is per machine, so the last round can add up to (machines - 1) extra
  trials; selection always takes the first N.
- A machine that finds no trial left to claim while another machine's trial still runs waits
  for it (RDB storages): if that machine vanished, its heartbeat goes stale and the trial is
  re-run here, so a preempted machine's last trial is not left for the finishing run. Not
  guaranteed: a process killed in the microseconds between claiming a trial and recording its
  first heartbeat leaves a trial Optuna never calls stale (fail it by hand).
- Each trial records its owner (host, pid, process start time) so a live worker's trial is never
  mistaken for a dead one. The host is HERETIC_HOST_ID when set (tests run two "machines" on
  one host; containers with the same hostname can tell themselves apart), else the hostname.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import psutil
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from heretic.errors import InterruptedRun
from heretic.statefiles import held_lock

OWNER_KEY = "heretic_owner"
RERUN_KEY = "heretic_rerun_of"
optuna.logging.set_verbosity(optuna.logging.WARNING)
# The ask/tell loop records heartbeats itself (see _heartbeat), which Optuna warns about, and
# its heartbeat API is marked experimental; neither warning is news to a user.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed", category=UserWarning)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


HOST_ID_ENV = "HERETIC_HOST_ID"


def host_id() -> str:
    return os.environ.get(HOST_ID_ENV, "").replace(":", "_") or socket.gethostname()


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    started = psutil.Process(pid).create_time()
    return f"{host_id()}:{pid}:{started:.2f}"


def owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != host_id():
        return True  # another machine's worker: only heartbeats (RDB storage) can tell
    try:
        proc = psutil.Process(int(pid_text))
        return f"{proc.create_time():.2f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False


HEARTBEAT_S = 60
GRACE_S = 180


def make_storage(
    study_dir: Path, url: str | None, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S
) -> BaseStorage | str:
    if url:
        if url.startswith(("postgresql", "mysql", "sqlite")):
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=3
                ),
            )
        return url
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))


def open_study(
    study_dir: Path,
    *,
    name: str,
    storage_url: str | None,
    seed: int,
    startup_trials: int,
    worker_index: int = 0,
    storage: BaseStorage | str | None = None,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
) -> optuna.Study:
    storage = storage or make_storage(
        study_dir, storage_url, heartbeat_s=heartbeat_s, grace_s=grace_s
    )
    # Seed with the trial count so a resumed sampler does not replay the same random start.
    probe = optuna.create_study(
        storage=storage, study_name=name, directions=["minimize", "minimize"], load_if_exists=True
    )
    offset = len(probe.get_trials(deepcopy=False)) + 7919 * worker_index
    sampler = optuna.samplers.TPESampler(
        multivariate=True, n_startup_trials=startup_trials, seed=seed + offset
    )
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def recover_abandoned(study: optuna.Study) -> int:
    """Fail trials whose owner is gone and enqueue their parameters for a re-run."""
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER_KEY) or trial.user_attrs.get(OWNER_KEY)
        if owner and owner_alive(str(owner)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={RERUN_KEY: trial.number})
        recovered += 1
    return recovered


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


@contextmanager
def _claim_lock(study: optuna.Study, study_dir: Path) -> Iterator[None]:
    study_dir.mkdir(parents=True, exist_ok=True)
    # Never through a link and never truncating: a planted link cannot choose a victim file.
    with held_lock(study_dir / ".claim.lock"), _database_lock(study):
        yield


@contextmanager
def _database_lock(study: optuna.Study) -> Iterator[None]:
    """A PostgreSQL advisory lock per study around the claim, so machines claim one at a time.
    Session-level on its own connection: if this process dies the server drops it."""
    backend = getattr(study._storage, "_backend", study._storage)
    engine = getattr(backend, "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    key = {"k": zlib.crc32(f"heretic-claim:{study.study_name}".encode())}
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), key)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), key)
            conn.commit()


def claim_trial(study: optuna.Study, study_dir: Path, n_trials: int) -> optuna.Trial | None:
    """A new trial owned by this process, or None when the study has (or will have) N trials."""
    with _claim_lock(study, study_dir):
        if _heartbeat_storage(study) is not None:
            optuna.storages.fail_stale_trials(study)  # other machines' vanished trials
        recover_abandoned(study)
        busy = count(study, TrialState.COMPLETE, TrialState.RUNNING)
        if busy >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr(OWNER_KEY, owner_id())
        beating = _heartbeat_storage(study)
        if beating is not None:
            # At once, not only when the trial starts: Optuna never fails a trial that has no
            # heartbeat, and other machines wait for RUNNING trials to end or go stale.
            beating.record_heartbeat(trial._trial_id)
        return trial


TrialFn = Callable[[optuna.Trial], tuple[float, float]]


def run_trials(
    study: optuna.Study,
    study_dir: Path,
    n_trials: int,
    objective: TrialFn,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    on_complete: Callable[[FrozenTrial], None] = lambda t: None,
    done_early: Callable[[], str | None] = lambda: None,
    before_claim: Callable[[], None] = lambda: None,
) -> int:
    """Run trials until the study holds n_trials COMPLETE ones, or until `done_early` gives a
    reason (patience; checked before each claim). `before_claim` may raise to stop the search
    before a trial starts (a filling disk). Returns trials run here."""
    ran = 0
    while True:
        if should_stop():
            raise InterruptedRun(
                "Stopped on request after the current trial; the study is saved.",
                "Run the same command again to resume.",
            )
        if done_early() is not None:
            return ran
        before_claim()
        trial = claim_trial(study, study_dir, n_trials)
        if trial is None:
            if not _others_still_running(study, n_trials):
                return ran
            _wait_heartbeat(study, should_stop)
            continue
        try:
            with _heartbeat(study, trial):
                values = objective(trial)
        except BaseException:
            # The trial is abandoned: fail it and enqueue its parameters so a resume re-runs it.
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={RERUN_KEY: trial.number})
            raise
        frozen = study.tell(trial, list(values))
        ran += 1
        on_complete(frozen)


def _others_still_running(study: optuna.Study, n_trials: int) -> bool:
    """Trials are missing and other machines' trials run (RDB storages only): one of them may
    belong to a vanished machine, which only its stale heartbeat will tell."""
    if _heartbeat_storage(study) is None:
        return False
    return count(study, TrialState.COMPLETE) < n_trials and count(study, TrialState.RUNNING) > 0


def _wait_heartbeat(study: optuna.Study, should_stop: Callable[[], bool]) -> None:
    """Wait one heartbeat interval (in short steps, so a stop request is seen at once)."""
    storage = _heartbeat_storage(study)
    interval = float(storage.get_heartbeat_interval() or HEARTBEAT_S) if storage else 1.0
    deadline = time.monotonic() + interval
    while time.monotonic() < deadline and not should_stop():
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


def _heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    storage = study._storage
    if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
        return storage
    return None


@contextmanager
def _heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat while it runs (RDB storages only): Optuna does this inside
    study.optimize, which this ask/tell loop does not use."""
    storage = _heartbeat_storage(study)
    if storage is None:
        yield
        return
    interval = float(storage.get_heartbeat_interval() or HEARTBEAT_S)
    done = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, name="heretic-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    return sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
