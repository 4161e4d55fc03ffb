"""Keep a storage password out of the process title.

Every user on a machine can read every process's command line (/proc/PID/cmdline, `ps`), so
`heretic run --storage postgresql://user:PASSWORD@host/db` would show the password for as long
as the run lasts. `scrub_argv` moves such a URL (from `--storage URL`, `--storage=URL` or
`--set storage=URL`) into HERETIC_STORAGE and the process re-executes itself without it: the
environment of a process is readable only by its own user and root. The precedence is kept:
the flag wins over `--set`, and both win over a HERETIC_STORAGE that was already set.

Only for the commands that read settings locally (run, demo, preflight): `cloud launch --set`
forwards settings to a rented machine and is left alone. Not guaranteed: the command line is
visible for the few milliseconds before the re-exec, and the shell history keeps what was typed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from heretic.secrets import url_password

STORAGE_ENV = "HERETIC_STORAGE"
LOCAL_COMMANDS = ("run", "demo", "preflight")


def _command(args: Sequence[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def split_storage(args: Sequence[str]) -> tuple[list[str], str | None]:
    """`args` without storage URLs that carry a password, and the URL that takes effect."""
    if _command(args) not in LOCAL_COMMANDS:
        return list(args), None
    kept: list[str] = []
    flag = assigned = None
    i = 0
    while i < len(args):
        arg, nxt = args[i], (args[i + 1] if i + 1 < len(args) else None)
        if arg == "--storage" and url_password(nxt):
            flag, i = nxt, i + 2
        elif arg.startswith("--storage=") and url_password(arg.partition("=")[2]):
            flag, i = arg.partition("=")[2], i + 1
        elif arg == "--set" and nxt and nxt.startswith("storage=") and url_password(nxt[8:]):
            assigned, i = nxt[8:], i + 2
        else:
            kept.append(arg)
            i += 1
    return kept, flag or assigned


def scrub_argv() -> None:
    """Re-execute this process without a storage password on its command line (no-op when
    there is none). Keeps the PID, so signals, tini and the locks see the same process."""
    args, url = split_storage(sys.argv[1:])
    if url is None:
        return
    env = dict(os.environ, **{STORAGE_ENV: url})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "heretic", *args], env)
