"""One failure policy in the container whatever the provider (heretic/lifecycle/retry.py):
in-process retries with back-off, then `--on-failure`; the `--max-hours` deadline; and no
self-termination of a machine heretic did not launch (SkyPilot's).

Against the loopback provider fakes (requests held to the published schemas; see
tests/test_lifecycle_failure.py for the endpoints): Vast.ai never restarts an exited
container (docs.vast.ai, instance states), so the retries must happen here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fakes.fake_runpod import RUNPOD_KEY
from test_lifecycle_failure import (
    POD,
    STOP,
    RunPodWithActions,
    VastWithStop,
    provider_calls,
    vast_env,
)

from heretic.errors import ExitCode, InterruptedRun, StorageError
from heretic.lifecycle.retry import Deadline, RetryPlan, Watchdog, backoff, ends_rental
from heretic.lifecycle.state import RunState
from heretic.run.execution import execute

# Nothing listens on port 1: the storage check fails with exit 16, which a retry may cure.
UNREACHABLE = "postgresql://u:pw@127.0.0.1:1/db"


def test_a_retryable_failure_on_vast_is_retried_then_ends_in_on_failure(tmp_path, heretic_cache):
    waits: list[float] = []
    out = tmp_path / "out"
    with VastWithStop() as fake:
        with pytest.raises(StorageError):
            execute(
                {"output": out, "trials": 2, "storage": UNREACHABLE},
                assignments=["retries=1", "retry_backoff_s=30"],
                environ=vast_env(fake),
                sleep=waits.append,
            )
        # The stop comes once, after the retry, not after the first failure.
        assert provider_calls(fake) == [STOP["vast"]]
    assert waits == [30.0]
    progress = RunState(out / "study").read()["progress"]
    assert progress["after_failure"]["policy"] == "stop" and progress["after_failure"]["ok"]


def test_a_machine_heretic_did_not_launch_is_never_stopped(tmp_path):
    """SkyPilot starts the image with its own `run:`; the pod has RUNPOD_POD_ID and a key but
    no HERETIC_LAUNCHED_BY: a terminal failure must not stop it behind SkyPilot's back."""
    with RunPodWithActions() as fake:
        env = {
            "RUNPOD_POD_ID": POD,
            "RUNPOD_API_KEY": RUNPOD_KEY,
            "HERETIC_RUNPOD_API_URL": fake.base,
        }
        with pytest.raises(Exception) as info:
            execute(
                {"model": str(tmp_path / "missing"), "output": tmp_path / "out"},
                assignments=["search_only=true"],
                environ=env,
            )
        assert int(info.value.exit_code) == ExitCode.MODEL_NOT_FOUND
    assert fake.requests == []


def test_max_hours_past_at_start_ends_the_rental_and_runs_nothing(tmp_path):
    launched = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    with VastWithStop() as fake:
        env = {**vast_env(fake), "HERETIC_LAUNCHED_AT": launched}
        with pytest.raises(InterruptedRun, match="max-hours 1"):
            execute({"output": tmp_path / "out", "trials": 2, "max_hours": 1.0}, environ=env)
        assert provider_calls(fake) == [STOP["vast"]]
    assert not (tmp_path / "out" / "study").exists()  # no run began


def test_the_watchdog_ends_the_rental_when_the_deadline_passes_mid_run():
    now = [1000.0]
    deadline = Deadline.of(1.0, {}, clock=lambda: now[0])
    fired: list[str] = []
    dog = Watchdog(deadline, lambda: fired.append("end")).start()
    assert not dog.fired.wait(0.05) and fired == []  # an hour to go: nothing happens
    now[0] += 3600.0
    dog.cancel()  # wake the thread; it re-reads the clock only while not cancelled
    dog.join(5)
    # A fresh watchdog on the expired deadline fires at once, exactly once.
    dog = Watchdog(deadline, lambda: fired.append("end")).start()
    assert dog.fired.wait(5) and fired == ["end"]
    dog.join(5)


def test_policy_words():
    assert [backoff(n, 60) for n in (1, 2, 3)] == [60, 120, 240] and backoff(10, 60) == 3600
    plan = RetryPlan(2, 60, batch_size=0, max_batch_size=64)
    assert plan.should_retry(ExitCode.OUT_OF_MEMORY, 1)
    assert not plan.should_retry(ExitCode.OUT_OF_MEMORY, 2)
    assert not plan.should_retry(ExitCode.CONFIG, 0)  # terminal: no retry
    first = plan.overrides(ExitCode.OUT_OF_MEMORY, {})
    assert first == {"max_batch_size": 32}
    assert plan.overrides(ExitCode.OUT_OF_MEMORY, {"batch_size": 8}) == {
        "batch_size": 4,
        "max_batch_size": 32,
    }
    for code in (ExitCode.LOCKED, ExitCode.INTERRUPTED, ExitCode.OK):
        assert not ends_rental(code)
    for code in (ExitCode.UPLOAD, ExitCode.OUT_OF_MEMORY, ExitCode.CONFIG, ExitCode.DISK_FULL):
        assert ends_rental(code)


def test_the_self_termination_route_is_checked_before_the_run(tmp_path):
    from fakes.fake_vast import Reply

    from heretic.lifecycle.shutdown import check_route

    with VastWithStop() as fake:
        route = check_route(vast_env(fake), sleep=lambda s: None)
        assert route is not None and route.status == "OK"
        assert "CONTAINER_API_KEY reads instance 555" in route.measured
        assert fake.calls("GET", "/api/v0/instances/555/")[0].query == {"owner": ["me"]}
    with RunPodWithActions() as fake:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": POD,
            "RUNPOD_API_KEY": RUNPOD_KEY,
            "HERETIC_RUNPOD_API_URL": fake.base,
            "PATH": str(tmp_path),  # no runpodctl here
        }
        fake.fail_queue.append(Reply(403, {"title": "Forbidden", "status": 403}))
        route = check_route(env, sleep=lambda s: None)
        assert route is not None and route.status == "WARN"
        assert "cannot read pod" in route.measured and "no runpodctl" in route.detail
        assert RUNPOD_KEY not in route.measured + route.detail
    skypilot = {"RUNPOD_POD_ID": POD, "RUNPOD_API_KEY": RUNPOD_KEY}
    assert check_route(skypilot).status == "OK"  # type: ignore[union-attr]
    assert check_route({}) is None
