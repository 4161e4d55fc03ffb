"""Runs heretic-llm 1.4.0 (installed in its own virtual environment; AGPL, run as a program,
none of its code is used here) on a bench model and reads its trials back from the Optuna
journal it checkpoints to, since its run ends in an interactive menu that an unattended run
cannot answer (stdin is closed: it stops there, after the trials are saved).

Its options as `heretic --help` lists them; start-up trials are set to trials // 3, the same
cap this project uses (its default of 60 would make a 40-trial run all random).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

KL_CAP = 0.5


def _command(exe: str, model: Path, prompts: dict[str, Path], trials: int, ckpt: Path) -> list[str]:
    return [
        exe,
        "--model",
        str(model),
        "--device-map",
        "cpu",
        "--dtypes",
        '["float32"]',
        "--max-response-length",
        "16",
        "--n-trials",
        str(trials),
        "--n-startup-trials",
        str(trials // 3),
        "--study-checkpoint-dir",
        str(ckpt),
        "--system-prompt",
        "you are a helpful assistant .",
        "--good-prompts.dataset",
        str(prompts["harmless"]),
        "--bad-prompts.dataset",
        str(prompts["harmful"]),
        "--good-evaluation-prompts.dataset",
        str(prompts["harmless_eval"]),
        "--bad-evaluation-prompts.dataset",
        str(prompts["harmful_eval"]),
    ]


def run_hllm(exe: str, model: Path, prompts: dict[str, Path], trials: int, work: Path) -> str:
    ckpt = work / f"hllm-{trials}"
    shutil.rmtree(ckpt, ignore_errors=True)
    start = time.monotonic()
    # Its own environment: this project's PYTHONPATH would shadow its `heretic` package.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        _command(exe, model, prompts, trials, ckpt),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env=env,
        cwd=work,
    )
    wall = time.monotonic() - start
    return journal_summary(ckpt, wall, proc.returncode, proc.stderr)


def journal_summary(ckpt: Path, wall: float, code: int, stderr: str = "") -> str:
    """Its trials as its Optuna journal holds them: first trial <= 5%, best under the KL cap."""
    journals = list(ckpt.glob("*.jsonl"))
    if not journals:
        return f"no trials saved (exit {code}): {stderr.strip()[-300:]}"
    storage = JournalStorage(JournalFileBackend(str(journals[0])))
    study = optuna.load_study(study_name="heretic", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [(int(t.user_attrs["refusals"]), float(t.user_attrs["kl_divergence"])) for t in done]
    n = int(done[0].user_attrs["n_bad_prompts"]) if done else 0
    base = done[0].user_attrs.get("base_refusals") if done else None
    first = next((i + 1 for i, (r, kl) in enumerate(rows) if r <= 0.05 * n and kl <= KL_CAP), None)
    ok = [(r, kl) for r, kl in rows if kl <= KL_CAP]
    best = min(ok) if ok else None
    best_text = f"{best[0]:>2}/{n} KL {best[1]:.4f}" if best else "none under the KL cap"
    return (
        f"trials run {len(rows):>3}, first <=5%: {str(first):>4}, best (fewest refusals, KL <= "
        f"{KL_CAP}) {best_text}; base {base}/{n}; {wall:.0f}s; exit {code}"
    )


# --- driving its menu to an export --------------------------------------------------------
# heretic-llm reads its menu answers with input() when it believes it runs in a notebook
# (COLAB_GPU set); its prompts then arrive on stdout without a newline. That is the only way to
# make it save a model without a terminal: the driver answers the trial menu by the policy
# below, then "Save the model to a local folder", then the folder; --export-strategy merge
# skips the export question. Closing stdin at the next menu ends it (EOFError, exit 1).

_CHOICE = re.compile(
    r"\[(\d+)\] \[Trial\s+(\d+)\] Refusals:\s*(\d+)/(\d+), KL divergence: ([0-9.eE+-]+)"
)


@dataclass
class HllmExport:
    trial: int | None
    refusals: int | None
    n: int | None
    kl: float | None
    search_s: float  # start to its trial menu (loading, directions, all trials)
    total_s: float  # start to the saved model
    exit_code: int
    model_dir: Path | None
    log_tail: str


def pick(choices: list[tuple[int, int, int, int, float]]) -> tuple[int, int, int, int, float]:
    """Its Pareto front as listed (index, trial, refusals, n, kl): the fewest refusals with
    KL <= KL_CAP, then the lowest KL; this project's former default, i.e. what a user who
    wants the refusals gone picks from the menu."""
    ok = [c for c in choices if c[4] <= KL_CAP] or choices
    return min(ok, key=lambda c: (c[2], c[4]))


def _read_until(fd: int, buf: list[str], needles: tuple[str, ...], deadline: float) -> str | None:
    while time.monotonic() < deadline:
        text = "".join(buf)
        for needle in needles:
            if text.rstrip().endswith(needle.rstrip()):
                return needle
        ready, _, _ = select.select([fd], [], [], 5.0)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buf.append(chunk.decode(errors="replace"))
    return None


def run_hllm_export(
    exe: str, args: list[str], save_to: Path, *, timeout_s: float = 3600
) -> HllmExport:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COLAB_GPU="1", HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    deadline = start + timeout_s
    proc = subprocess.Popen(
        [exe, *args, "--export-strategy", "merge"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    fd = proc.stdout.fileno()
    buf: list[str] = []
    chosen: tuple[int, int, int, int, float] | None = None
    search_s = 0.0
    model_dir: Path | None = None
    if _read_until(fd, buf, ("Enter number:",), deadline):
        search_s = time.monotonic() - start
        choices = [
            (int(a), int(b), int(c), int(d), float(e))
            for a, b, c, d, e in _CHOICE.findall("".join(buf))
        ]
        if choices:
            chosen = pick(choices)
            proc.stdin.write(f"{chosen[0]}\n".encode())
            proc.stdin.flush()
            buf.clear()
            if _read_until(fd, buf, ("Enter number:",), deadline):
                proc.stdin.write(b"1\n")  # Save the model to a local folder
                proc.stdin.flush()
                buf.clear()
                if _read_until(fd, buf, ("Path to the folder::", "Path to the folder:"), deadline):
                    proc.stdin.write(f"{save_to}\n".encode())
                    proc.stdin.flush()
                    buf.clear()
                    if _read_until(fd, buf, ("Enter number:",), deadline):
                        model_dir = save_to if (save_to / "config.json").exists() else None
    total_s = time.monotonic() - start
    proc.stdin.close()
    while _read_until(fd, buf, ("\0never",), deadline) is not None:
        pass
    code = proc.wait(timeout=60)
    return HllmExport(
        trial=chosen[1] if chosen else None,
        refusals=chosen[2] if chosen else None,
        n=chosen[3] if chosen else None,
        kl=chosen[4] if chosen else None,
        search_s=search_s,
        total_s=total_s,
        exit_code=code,
        model_dir=model_dir,
        log_tail="".join(buf)[-2000:],
    )


def export_for_bench(
    exe: str, model: Path, prompts: dict[str, Path], trials: int, work: Path
) -> HllmExport:
    """The bench_search run of heretic-llm, driven to save its chosen trial under `work`."""
    ckpt = work / f"hllm-export-{trials}"
    shutil.rmtree(ckpt, ignore_errors=True)
    args = _command(exe, model, prompts, trials, ckpt / "study")[1:]
    return run_hllm_export(exe, args, ckpt / "model")
