"""End-to-end: the real `heretic` CLI on the demo model, as a user (or a provider) runs it."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import load_model
from heretic.engine.prompts import split_for_verification

HERETIC = [sys.executable, "-m", "heretic"]


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(HERETIC + args, env=env, capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        HERETIC + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(predicate, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.05)  # polling interval of a condition with a deadline, not a sync sleep
    raise AssertionError("condition not reached in time")


def _all_trials(study_dir: Path) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    return optuna.load_study(study_name="heretic", storage=storage).get_trials()


def completed_in_journal(study_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return [t for t in _all_trials(study_dir) if t.state == TrialState.COMPLETE]


def progress_completed(study_dir: Path) -> int:
    try:
        data = json.loads((study_dir / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    return int((data.get("trials") or {}).get("completed") or 0)


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prompts")
    demo = demo_prompts()
    files = {}
    for key in ("harmful", "harmless", "harmful_eval", "harmless_eval"):
        path = root / f"{key}.txt"
        path.write_text("\n".join(getattr(demo, key)) + "\n")
        files[key] = path
    return files


def test_contract_command_removes_refusals_and_export_reloads(
    demo_model_dir, prompt_files, cli_env, tmp_path
) -> None:
    out = tmp_path / "out"
    args = [
        "run",
        "--model",
        str(demo_model_dir),
        "--harmful-prompts",
        str(prompt_files["harmful"]),
        "--harmless-prompts",
        str(prompt_files["harmless"]),
        "--harmful-eval-prompts",
        str(prompt_files["harmful_eval"]),
        "--harmless-eval-prompts",
        str(prompt_files["harmless_eval"]),
        "--trials",
        "50",
        "--seed",
        "0",
        "--output",
        str(out),
        "--set",
        "device_map=cpu",
        "--set",
        "dtype=float32",
        "--set",
        "max_weight_position=0,1",
        "--set",
        "min_weight_distance=0.2,1",
    ]
    result = run_cli(args, cli_env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for key in (
        "model",
        "selected_trial",
        "base",
        "selected",
        "pareto_front",
        "trials",
        "timings_s",
    ):
        assert key in report
    assert report["trials"] == {
        "requested": 50,
        "completed": 50,
        "stop_reason": "all 50 requested trials ran",
    }
    assert set(report["timings_s"]) >= {
        "total",
        "load",
        "residuals",
        "trials_total",
        "trial_median",
        "export",
    }
    assert report["base"]["refusals"] >= 0.9 * report["base"]["n_harmful"]
    for name in ("trials.jsonl", "pareto.png", "README.md", "model/config.json"):
        assert (out / name).is_file(), name
    assert len((out / "trials.jsonl").read_text().splitlines()) == 50
    assert f"Model: {out / 'model'}\n" in result.stderr

    # The export alone, loaded with plain transformers, is measured against the base model.
    base = load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))
    edited = load_model(Settings(model=str(out / "model"), device_map="cpu", dtype="float32"))
    demo = demo_prompts()
    kwargs = dict(
        markers=Settings().refusal_markers,
        max_new_tokens=16,
        chat=ChatFormat(),
        batcher=Batcher(64),
    )
    # The search scores the part of each evaluation file that is not held back for verification.
    harmless = split_for_verification(demo.harmless_eval, 0.3, "harmless")[0]
    harmful = split_for_verification(demo.harmful_eval, 0.3, "harmful")[0]
    base_eval = Evaluator(base, harmless, harmful, **kwargs)
    base_eval.compute_base()
    edited_eval = Evaluator(edited, harmless, harmful, **kwargs)
    edited_eval.base_logprobs = base_eval.base_logprobs
    refusals = edited_eval.refusals()
    kl = edited_eval.kl_divergence()
    assert refusals.count <= 0.05 * refusals.total, refusals.responses[:5]
    assert kl <= 0.05
    assert refusals.count == report["selected"]["refusals"]
    # The search's damage is the answer KL; the first-token KL is recorded next to it.
    assert kl == pytest.approx(report["selected"]["first_token_kl"], abs=1e-4)


def test_sigkill_mid_study_then_rerun_ends_with_exact_trials(
    demo_model_dir, cli_env, tmp_path
) -> None:
    out, n = tmp_path / "out", 24
    args = ["run", "--trials", str(n), "--output", str(out)]
    kill_after = random.Random().randint(2, 15)
    proc = start_cli(args, cli_env)
    wait_for(lambda: progress_completed(out / "study") >= kill_after, proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.params for t in completed_in_journal(out / "study")}
    assert kill_after <= len(before) < n

    result = run_cli(args, cli_env)
    assert result.returncode == 0, result.stderr[-3000:]
    after = completed_in_journal(out / "study")
    assert len(after) == n
    assert {t.number: t.params for t in after if t.number in before} == before  # kept, not redone
    failed = [t for t in _all_trials(out / "study") if t.state == TrialState.FAIL]
    reruns = {t.user_attrs.get("heretic_rerun_of"): t.params for t in after}
    for trial in failed:  # the trial killed half-way ran again with the same parameters
        if trial.params:  # (killed before its parameters were drawn: nothing to re-run)
            # Optuna stores each parameter as it is drawn: a kill in the middle of the drawing
            # leaves some, which the re-run keeps and completes.
            assert trial.number in reruns
            assert reruns[trial.number].items() >= trial.params.items()
    assert json.loads((out / "report.json").read_text())["trials"]["completed"] == n


def test_second_run_on_same_study_fails_fast_naming_the_first(
    demo_model_dir, cli_env, tmp_path
) -> None:
    out = tmp_path / "out"
    first = start_cli(["run", "--trials", "400", "--output", str(out)], cli_env)
    lock = out / "study" / ".heretic.lock"
    wait_for(lambda: lock.is_file() and str(first.pid) in lock.read_text(), proc=first)
    start = time.monotonic()
    second = run_cli(["run", "--trials", "400", "--output", str(out)], cli_env, timeout=30)
    elapsed = time.monotonic() - start
    assert second.returncode == 8
    assert str(first.pid) in second.stderr
    assert elapsed < 2.0  # measured about 0.35 s, nearly all of it interpreter start
    first.send_signal(signal.SIGKILL)
    first.wait()
    third = run_cli(
        [
            "run",
            "--trials",
            "3",
            "--output",
            str(tmp_path / "other"),
            "--study-dir",
            str(out / "study"),
            "--set",
            "kl_cap=100",
        ],
        cli_env,
    )
    assert third.returncode == 0, third.stderr[-2000:]  # SIGKILL left nothing that blocks it


def test_sigterm_stops_cleanly_and_the_study_resumes(demo_model_dir, cli_env, tmp_path) -> None:
    out, n = tmp_path / "out", 20
    args = ["run", "--trials", str(n), "--output", str(out)]
    proc = start_cli(args, cli_env)
    wait_for(lambda: progress_completed(out / "study") >= 2, proc=proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err[-2000:]
    assert json.loads((out / "study" / "progress.json").read_text())["phase"] == "interrupted"
    stopped_at = len(completed_in_journal(out / "study"))
    assert 2 <= stopped_at < n
    again = run_cli(args, cli_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(completed_in_journal(out / "study")) == n


def test_done_marker_makes_a_restart_a_no_op(demo_model_dir, cli_env, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["run", "--trials", "4", "--output", str(out), "--set", "kl_cap=100"]
    assert run_cli(args, cli_env).returncode == 0
    assert (out / "study" / "DONE.json").is_file()
    stamp = (out / "trials.jsonl").stat().st_mtime_ns
    again = run_cli(args, cli_env)
    assert again.returncode == 0
    assert "already finished" in again.stderr
    assert (out / "trials.jsonl").stat().st_mtime_ns == stamp


def test_no_acceptable_trial_writes_the_report_and_exits_nine(
    demo_model_dir, cli_env, tmp_path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        [
            "run",
            "--trials",
            "3",
            "--output",
            str(out),
            "--set",
            "kl_cap=1e-12",
            "--set",
            "min_weight_distance=0.9,1",
            "--set",
            "max_weight=1.4,1.5",
        ],
        cli_env,
    )
    assert result.returncode == 9, result.stderr[-2000:]
    assert "No trial met the selection policy" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["selected_trial"] is None and report["trials"]["completed"] == 3
    assert not (out / "model").exists()


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--model", "/nonexistent/model-dir"], 5, "does not exist"),
        (["--harmful-prompts", "EMPTY"], 4, "is empty"),
        (["--harmful-prompts", "/nonexistent/prompts.txt"], 4, "does not exist"),
        (["--config", "BADTOML"], 3, "not valid TOML"),
        (["--set", "no_such_setting=1"], 3, "Unknown setting"),
        (["--profile", "no-such-profile"], 3, "Unknown profile"),
        (["--set", "kl_cap=-1"], 3, "kl_cap"),
    ],
)
def test_bad_input_gets_one_paragraph_and_a_distinct_exit_code(
    args, code, needle, cli_env, tmp_path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    bad = tmp_path / "bad.toml"
    bad.write_text("trials = [unclosed\n")
    args = [str(empty) if a == "EMPTY" else str(bad) if a == "BADTOML" else a for a in args]
    result = run_cli(["run", "--output", str(tmp_path / "out"), *args], cli_env, timeout=120)
    assert result.returncode == code, result.stderr[-2000:]
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_two_workers_share_one_study_and_finish_exactly_n(
    demo_model_dir, cli_env, tmp_path
) -> None:
    # Enough trials that the second worker, which loads the model after the first has started
    # (a few seconds), still finds work: a demo trial takes about 0.1 s.
    out, n = tmp_path / "out", 80
    result = run_cli(["run", "--trials", str(n), "--workers", "2", "--output", str(out)], cli_env)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = completed_in_journal(out / "study")
    assert len(trials) == n
    assert len({t.number for t in trials}) == n
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == n  # no trial ran twice
    owners = {t.user_attrs["heretic_owner"].split(":")[1] for t in trials}
    assert len(owners) == 2, owners  # both processes did work


def test_run_with_upload_publishes_and_never_writes_the_token(
    demo_model_dir, cli_env, tmp_path
) -> None:
    from fakes.fake_hub import FakeHub

    token = "hf_RunTokenNeverWritten0123456789abcdef"
    out = tmp_path / "out"
    with FakeHub(token) as hub:
        env = dict(cli_env, HF_TOKEN=token, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        result = run_cli(
            [
                "run",
                "--trials",
                "6",
                "--output",
                str(out),
                "--set",
                "kl_cap=100",
                "--upload",
                "someone/demo-heretic",
                "--shutdown-after",
            ],
            env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        repo = hub.repos["someone/demo-heretic"]
        assert repo.private is True
        assert {"config.json", "README.md", "heretic/report.json"} <= set(repo.files)
        assert any(name.endswith(".safetensors") for name in repo.files)
    done = json.loads((out / "study" / "DONE.json").read_text())
    assert done["upload_url"].endswith("someone/demo-heretic")
    assert f"Uploaded: {done['upload_url']}\n" in result.stderr
    assert "cannot" in result.stderr.lower()  # no provider here: the machine is left running
    assert token not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_search_only_then_a_finishing_run_on_a_shared_storage(
    demo_model_dir, cli_env, tmp_path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ["run", "--trials", "6", "--storage", url, "--study-name", "shared"]
    worker = run_cli(
        [*common, "--output", str(tmp_path / "machine-a"), "--set", "search_only=true"], cli_env
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert "Search-only" in worker.stderr
    assert not (tmp_path / "machine-a" / "report.json").exists()
    final = run_cli([*common, "--output", str(tmp_path / "final"), "--set", "kl_cap=100"], cli_env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "no new trials" in final.stderr
    report = json.loads((tmp_path / "final" / "report.json").read_text())
    assert report["trials"] == {
        "requested": 6,
        "completed": 6,
        "stop_reason": "all 6 requested trials ran",
    }
    other = run_cli(
        [*common, "--output", str(tmp_path / "other"), "--set", "max_weight=0.5,0.6"], cli_env
    )
    assert other.returncode == 14 and "max_weight" in other.stderr  # no mixing across machines


def test_resuming_with_other_search_settings_is_refused(demo_model_dir, cli_env, tmp_path) -> None:
    out = tmp_path / "out"
    first = run_cli(
        ["run", "--trials", "3", "--output", str(out), "--set", "kl_cap=1e-12"], cli_env
    )
    assert first.returncode == 9, first.stderr[-2000:]  # not finished: no done marker
    again = run_cli(
        [
            "run",
            "--trials",
            "5",
            "--output",
            str(out),
            "--set",
            "kl_cap=1e-12",
            "--max-response-tokens",
            "9",
        ],
        cli_env,
    )
    assert again.returncode == 14
    assert "max_response_tokens" in again.stderr and "Traceback" not in again.stderr
