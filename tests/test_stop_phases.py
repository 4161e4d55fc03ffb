"""A stop request (SIGTERM/SIGINT) is honoured in every phase, not only between trials: between
batches of the residual pass, in the verification (the next start verifies again, nothing is
dropped), during the demo model's training; and the message says what will happen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from heretic.config.settings import Settings
from heretic.demo.model import ModelSpec, ensure_model
from heretic.errors import ExitCode, InterruptedRun
from heretic.lifecycle.signals import WHAT_HAPPENS, GracefulStop
from heretic.run.recipe import RunHooks, prepare, run


class Counting:
    """A reporter that counts each task's progress and can ask for a stop at a given point."""

    def __init__(self, stop_when: Callable[[str, int], bool] = lambda name, done: False) -> None:
        self.done: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.lines: list[str] = []
        self.stop = False
        self._stop_when = stop_when

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append(message)

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        self.totals[name] = total
        self.done.setdefault(name, 0)

        def advance(n: int = 1) -> None:
            self.done[name] += n
            if self._stop_when(name, self.done[name]):
                self.stop = True

        yield advance


def _settings(tmp_path: Path, **extra: object) -> Settings:
    from heretic.demo.settings import DEMO_LAYER

    return Settings.model_validate(
        {**DEMO_LAYER, "output": tmp_path / "out", "batch_size": 4, **extra}
    )


def test_a_stop_during_the_residual_pass_ends_it_within_one_batch(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    reporter = Counting(stop_when=lambda name, done: name.startswith("residuals"))
    hooks = RunHooks(should_stop=lambda: reporter.stop)
    with pytest.raises(InterruptedRun) as err:
        prepare(_settings(tmp_path), reporter, hooks, {})
    assert "during the residual pass" in err.value.message
    assert "computes the directions again" in err.value.hint
    assert reporter.done["residuals (harmful)"] == 4  # one batch of 4, not the whole pass
    assert reporter.totals["residuals (harmful)"] > 8
    assert "residuals (harmless)" not in reporter.done
    assert not (tmp_path / "out" / "study" / "directions.safetensors").exists()


def test_a_stop_during_the_verification_is_honoured_and_the_next_start_verifies(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    settings = _settings(
        tmp_path, trials=2, kl_cap=100.0, max_refusal_share=1.0, verify_alternatives=1
    )
    phases: list[str] = []
    stop = {"now": False}

    def on_phase(phase: str) -> None:
        phases.append(phase)
        stop["now"] = stop["now"] or phase == "verify"  # SIGTERM as the verification starts

    first = Counting()
    with pytest.raises(InterruptedRun) as err:
        run(settings, first, RunHooks(on_phase=on_phase, should_stop=lambda: stop["now"]))
    assert "during the verification" in err.value.message  # not after it, before the export
    assert "verifies the chosen trial again" in err.value.hint
    assert not (settings.output / "report.json").exists()  # nothing half-verified is written
    assert not (settings.output / "model").exists()

    second = Counting()
    result = run(settings, second, RunHooks())
    assert any("already holds 2 completed trials" in line for line in second.lines)
    assert result.report is not None and result.report["verification"] is not None
    assert (settings.output / "model").is_dir()


def test_a_stop_during_the_demo_training_ends_it_at_the_next_step(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    steps: list[int] = []

    def check() -> None:
        steps.append(1)
        if len(steps) > 3:
            raise InterruptedRun("stopped", "again")

    start = time.monotonic()
    with pytest.raises(InterruptedRun):
        ensure_model(target, ModelSpec(num_layers=2, steps=400), check=check)
    assert len(steps) == 4 and time.monotonic() - start < 60
    assert not target.exists()  # nothing half-trained is kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-build-")]


@pytest.mark.parametrize(
    ("phase", "needle"),
    [
        ("residuals", "after the current batch of the residual pass"),
        ("verify", "the next start verifies and exports again"),
        ("load", "training the demo model stops at its next step"),
        ("search", "after the current trial"),
        ("upload", "stopping the upload now"),
    ],
)
def test_the_signal_message_says_what_happens_in_each_phase(
    phase: str, needle: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with GracefulStop(phase=phase) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread between bytecodes
    assert stop.requested
    said = capfd.readouterr().err
    assert f"SIGTERM received: {WHAT_HAPPENS[phase]}." in said and needle in said


def test_the_run_tells_the_signal_handler_its_phase(tmp_path: Path) -> None:
    from heretic.lifecycle.session import RunLifecycle

    with RunLifecycle(Settings(output=tmp_path / "out")) as life:
        assert "before the model loads" in life.stop.what_happens()
        life.on_phase("residuals")
        assert "residual pass" in life.stop.what_happens()
        life.on_phase("verify")
        assert "verifies and exports again" in life.stop.what_happens()


def test_sigterm_while_the_demo_model_trains_exits_75_at_once(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "HERETIC_CACHE": str(tmp_path / "fresh-cache")}  # the demo must train
    proc = subprocess.Popen(
        [sys.executable, "-m", "heretic", "run", "--output", str(tmp_path / "out")],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        while "Training the demo model" not in seen:
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        _, rest = proc.communicate(timeout=120)
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, seen + rest
    assert elapsed < 20, elapsed  # a step, not the whole training
    assert "training the demo model stops at its next step" in rest
    assert "during the demo model's training" in rest
    assert not (tmp_path / "fresh-cache" / "demo-model-v2").exists()
