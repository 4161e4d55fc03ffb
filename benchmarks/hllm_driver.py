"""Runs heretic-llm 1.4.0 (installed in its own virtual environment; AGPL, run as a program,
none of its code is used here) on a bench model and reads its trials back from the Optuna
journal it checkpoints to, since its run ends in an interactive menu that an unattended run
cannot answer (stdin is closed: it stops there, after the trials are saved).

Its options as `heretic --help` lists them; start-up trials are set to trials // 3, the same
cap this project uses (its default of 60 would make a 40-trial run all random).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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
    journals = list(ckpt.glob("*.jsonl"))
    if not journals:
        return f"no trials saved (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
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
        f"{KL_CAP}) {best_text}; base {base}/{n}; {wall:.0f}s; exit {proc.returncode} "
        "(its interactive menu)"
    )
