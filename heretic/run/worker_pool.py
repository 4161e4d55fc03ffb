"""Several worker processes on one machine running trials of ONE study.

The parent run computes the directions (saved in the study folder), then starts workers
1..N-1 with `python -m heretic.run.worker`; each loads its own replica of the model, reads the
saved directions, and claims trials from the shared study until it holds N (the claim is a
file lock in the study folder, so N is reached exactly and no trial runs twice). With at least
N GPUs visible, worker i gets GPU i to itself (CUDA_VISIBLE_DEVICES). The parent is worker 0.

Signals: each worker runs in its own process group, so a signal sent to the parent's group
(tini -g in the image, Ctrl-C in a terminal) reaches only the parent, which passes each stop
request on once (`WorkerGroup.forward`): a worker sees exactly as many requests as the parent,
and its current trial finishes (a second request would abandon it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from heretic.atomic import write_atomic
from heretic.config.settings import Settings

WORKER_ENV = "HERETIC_WORKER_INDEX"
STORAGE_ENV = "HERETIC_STORAGE"


def visible_gpu_ids() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [x.strip() for x in listed.split(",") if x.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def one_gpu_each(workers: int) -> bool:
    return workers > 1 and len(visible_gpu_ids()) >= workers


def worker_settings(settings: Settings) -> dict[str, object]:
    data = settings.model_dump(mode="json")
    # No secrets in the file: the storage URL (it may hold a password) goes by environment.
    data.update(
        workers=1, skip_preflight=True, upload=None, shutdown_after=False, notify=None, storage=None
    )
    if one_gpu_each(settings.workers):
        data["device_map"] = "cuda:0"
    return data


def start_workers(settings: Settings) -> list[subprocess.Popen[bytes]]:
    study_dir = settings.resolved_study_dir
    path = study_dir / "worker-settings.json"
    write_atomic(path, json.dumps(worker_settings(settings), indent=2))
    gpus = visible_gpu_ids() if one_gpu_each(settings.workers) else []
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    procs = []
    for index in range(1, settings.workers):
        env = dict(os.environ, **{WORKER_ENV: str(index), "OMP_NUM_THREADS": str(threads)})
        if settings.storage:
            env[STORAGE_ENV] = settings.storage
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "heretic.run.worker", str(path), str(index)],
                env=env,
                process_group=0,  # out of the parent's group: see the module docstring
            )
        )
    return procs


class WorkerGroup:
    """The worker processes of one run and the stop requests sent to them."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.procs = procs
        self.requests_sent = 0

    def forward(self, abandon: bool = False) -> None:
        """Pass one stop request (SIGTERM) to every live worker; the second one abandons."""
        self.requests_sent += 1
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 120.0) -> None:
        """Ask the workers to finish their trials unless already asked, then wait."""
        if self.requests_sent == 0:
            self.forward()
        wait_workers(self.procs, timeout_s)


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float = 120.0) -> None:
    """Ask each worker to finish its trial (SIGTERM), then wait; kill only if it hangs."""
    WorkerGroup(procs).stop(timeout_s)


def wait_workers(procs: list[subprocess.Popen[bytes]], timeout_s: float | None = None) -> list[int]:
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def parent_device_map(settings: Settings) -> Settings:
    """With one GPU per worker, the parent keeps to the first one."""
    if one_gpu_each(settings.workers) and os.environ.get(WORKER_ENV) is None:
        return settings.model_copy(update={"device_map": "cuda:0"})
    return settings


def settings_file(path: Path) -> Settings:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["storage"] = os.environ.get(STORAGE_ENV) or None
    return Settings.model_validate(data)
