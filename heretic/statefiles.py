"""Files heretic keeps its state in (locks, the log, the process registry, markers), opened so
that nobody else chooses where the bytes go.

heretic often runs as root in a container, on a study volume other users can write to. A
symbolic link planted where heretic opens a lock or a log would make it truncate or append to
the link's target. Guaranteed here: every state file is opened with O_NOFOLLOW|O_CLOEXEC (a
link in the last component is refused with a `StudyError`, never followed) and never truncated
on open; a folder that holds state is refused when it is a link (for the private machine
folder), belongs to another user (other than root), or is writable by others without the
sticky bit. The private machine folder (`private_dir`) is created 0700 and refused when it is a
link or another user owns it.

Also the flock primitives everything builds on: `lock_file` (exclusive, blocking or not) and
`lock_is_held` (a probe that creates nothing), so `heretic status` can read liveness from the
study lock. Not guaranteed: links in folders above the last component (the user chose them).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from heretic.errors import StudyError

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
STUDY_LOCK = ".heretic.lock"  # held by a run for its whole life (heretic.preflight.lock)


def _link_refused(path: Path) -> StudyError:
    return StudyError(
        f"{path} is a symbolic link; heretic keeps its state there and never follows a link "
        "(whoever planted it would choose which file gets overwritten).",
        f"Remove the link ({path}) and run again; heretic recreates the file.",
    )


def check_folder(folder: Path) -> None:
    """Refuse a state folder that another user could plant files in: owned by someone else
    (root excepted) or writable by others without the sticky bit."""
    try:
        st = os.stat(folder)
    except OSError:
        return  # created by the caller or reported when the file is opened
    uid = os.getuid()
    foreign = st.st_uid not in (uid, 0)
    open_to_all = bool(st.st_mode & stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
    if foreign and uid != 0 or open_to_all:
        why = "belongs to another user" if foreign else "is writable by every user"
        raise StudyError(
            f"The folder {folder} {why} (mode {stat.S_IMODE(st.st_mode):o}); heretic keeps "
            "locks and state there, which anyone able to write it could redirect.",
            f"Use a folder you own that others cannot write to (chmod o-w {folder}), or "
            "another --output / --study-dir.",
        )


def open_state(path: Path, flags: int = os.O_RDWR | os.O_CREAT, mode: int = 0o600) -> int:
    """A descriptor on `path`, never through a link and never truncated by the open itself."""
    check_folder(path.parent)
    try:
        return os.open(path, flags | NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refused(path) from exc
        raise


def refuse_link(path: Path) -> None:
    """Raise when `path` exists as a symbolic link (for files opened by other libraries)."""
    if path.is_symlink():
        raise _link_refused(path)


def append_text(path: Path) -> int:
    """An O_APPEND descriptor for a log file (created 0644: logs hold no secrets)."""
    return open_state(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def lock_file(path: Path, *, block: bool) -> int | None:
    """Open `path` (no link) and take an exclusive flock; the descriptor, or None when another
    open file holds it and `block` is False. Closing the descriptor releases the lock."""
    # 0644: `heretic status` of another user reads liveness from it; it holds no secret.
    fd = open_state(path, mode=0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def lock_is_held(path: Path) -> bool:
    """Whether some open file holds the flock on `path` now (this process's own descriptors
    included). Creates nothing; a missing file or a link counts as not held."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the probe's own shared lock at once
    return False


def read_text(path: Path) -> str:
    """The text of a state file, never through a link (OSError when missing or a link)."""
    fd = os.open(path, os.O_RDONLY | NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as handle:
        return handle.read()


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) or check it: refused when it is a link, not a folder, or
    another user's; a folder of ours open to others is closed to 0700."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _link_refused(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise StudyError(
            f"{path} is not a folder of this user (uid {os.getuid()}; it belongs to uid "
            f"{st.st_uid}); heretic keeps its machine-wide locks and process records there.",
            "Remove it if it is yours to remove, or set XDG_RUNTIME_DIR to a private folder.",
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


@contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive flock on `path` (waiting for it) for the `with` block."""
    fd = lock_file(path, block=True)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the flock
