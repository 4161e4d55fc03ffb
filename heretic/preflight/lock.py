"""Single-instance locks: one run per study folder, one run per GPU.

Guarantees: the locks are `fcntl.flock` locks on files, taken with LOCK_NB, so acquiring never
blocks; the kernel releases them when the holder's file descriptor closes, which includes the
holder dying by SIGKILL, so a crashed run never blocks the next one and no clean-up is needed.
The lock file's content (holder PID, command line, start time) only feeds error messages; stale
content is harmless because the flock, not the content, decides who holds the lock.

Not guaranteed: flock locks are per open file description, so a child created by a bare
`fork()` (without exec) inherits the lock; descriptors here are close-on-exec, so children
started with subprocess do not. Locks are per machine and per filesystem namespace: two
containers with separate /tmp do not see each other's GPU locks (the study lock works whenever
the study folder is shared).

This module imports nothing heavy: `heretic run` takes the study lock before torch loads, so a
second run fails within a fraction of a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from heretic.errors import LockedError
from heretic.secrets import safe_cmdline
from heretic.statefiles import STUDY_LOCK, lock_file, lock_is_held, private_dir, read_text

LOCK_NAME = STUDY_LOCK


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about its holder (possibly stale content; for messages only)."""

    pid: int | None
    cmdline: str
    started: str

    def describe(self) -> str:
        if self.pid is None:
            return "another process (it did not record its PID yet)"
        cmd = f" ({self.cmdline})" if self.cmdline else ""
        since = f", started {self.started}" if self.started else ""
        return f"heretic process PID {self.pid}{cmd}{since}"


def machine_lock_dir() -> Path:
    """Per-user folder for machine-wide locks and the process registry: created 0700, refused
    when it is a link or another user's (anyone can create /tmp/heretic-UID first)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return private_dir(Path(base) / f"heretic-{os.getuid()}")


def _holder_record() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "cmdline": safe_cmdline(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )


def read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(read_text(path) or "{}")
    except (OSError, ValueError):
        data = {}
    pid = data.get("pid") if isinstance(data, dict) else None
    return LockHolder(
        pid=pid if isinstance(pid, int) else None,
        cmdline=str(data.get("cmdline", "")) if isinstance(data, dict) else "",
        started=str(data.get("started", "")) if isinstance(data, dict) else "",
    )


def _try_flock(path: Path) -> int | None:
    """Open (never through a link) and lock `path`; the fd, or None when another holds it."""
    return lock_file(path, block=False)


def write_holder(fd: int) -> None:
    """Replace a held lock file's content with this process's record (for messages)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, _holder_record().encode("utf-8"), 0)


class RunLock:
    """Held flock(s); a context manager. `release()` is idempotent."""

    def __init__(self, paths_and_fds: list[tuple[Path, int]]) -> None:
        self._held = paths_and_fds

    @property
    def held(self) -> bool:
        return bool(self._held)

    def release(self) -> None:
        while self._held:
            _, fd = self._held.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire_run_lock(study_dir: Path) -> RunLock:
    """Lock `study_dir` for this process (creating the folder) or raise LockedError at once."""
    study_dir = Path(study_dir)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockedError(
            f"Cannot create the study folder {study_dir}: {exc.strerror}.",
            "Choose a writable --study-dir or --output.",
        ) from exc
    path = study_dir / LOCK_NAME
    fd = _try_flock(path)
    if fd is None:
        holder = read_holder(path)
        raise LockedError(
            f"The study folder {study_dir} is in use by {holder.describe()}.",
            "Wait for that run to finish, use another --output/--study-dir, or, if it is a "
            "stale heretic process of yours, end it with --kill-stale.",
        )
    write_holder(fd)
    return RunLock([(path, fd)])


def probe_lock(path: Path) -> LockHolder | None:
    """Who holds the flock on `path` now, or None when nobody does. Never creates files.

    A lock held by this very process (through another descriptor) also counts as held;
    compare `holder.pid` with `os.getpid()` to tell.
    """
    return read_holder(path) if lock_is_held(path) else None


def gpu_lock_path(gpu_key: str, lock_dir: Path | None = None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in gpu_key)
    return (lock_dir or machine_lock_dir() / "gpus") / f"gpu-{safe}.lock"


def acquire_gpu_locks(gpu_keys: Iterable[str], lock_dir: Path | None = None) -> RunLock:
    """Lock each GPU (by UUID, or index when NVML gives none) for this run, all or none.

    Two runs on different study folders then cannot share a GPU on this machine.
    """
    held: list[tuple[Path, int]] = []
    lock = RunLock(held)
    for key in sorted(set(gpu_keys)):
        path = gpu_lock_path(key, lock_dir)
        if lock_dir is None:
            private_dir(path.parent)
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = _try_flock(path)
        if fd is None:
            lock.release()
            raise LockedError(
                f"GPU {key} is in use by {read_holder(path).describe()}.",
                "Wait for that run, pick other GPUs with CUDA_VISIBLE_DEVICES, or end a "
                "stale heretic process of yours with --kill-stale.",
            )
        write_holder(fd)
        held.append((path, fd))
    return lock
