"""Keep secrets out of the process title: a storage password and the notify webhook URL.

Every user on a machine can read every process's command line (/proc/PID/cmdline, `ps`), so
`heretic run --storage postgresql://user:PASSWORD@host/db` or `--notify https://hook/KEY` would
show the secret for as long as the run lasts. `scrub_argv` moves such a value (from `--storage
URL`, `--storage=URL`, `--set storage=URL`, and the same for notify) into its environment
variable (HERETIC_STORAGE, HERETIC_NOTIFY) and the process re-executes itself without it: the
environment of a process is readable only by its own user and root. The precedence is kept:
the flag wins over `--set`, and both win over a variable that was already set.

Only for the commands that read settings locally (run, demo, preflight): `cloud launch --set`
forwards settings to a rented machine and is left alone. Not guaranteed: the command line is
visible for the few milliseconds before the re-exec, and the shell history keeps what was typed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from heretic.secrets import url_password

STORAGE_ENV = "HERETIC_STORAGE"
NOTIFY_ENV = "HERETIC_NOTIFY"
LOCAL_COMMANDS = ("run", "demo", "preflight")


def _command(args: Sequence[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _split(
    args: Sequence[str], key: str, secret: Callable[[str | None], bool]
) -> tuple[list[str], str | None]:
    """`args` without `--KEY VALUE`, `--KEY=VALUE` and `--set KEY=VALUE` whose value is secret,
    and the value that takes effect (the flag over --set)."""
    flag_name, prefix = f"--{key}", f"{key}="
    kept: list[str] = []
    flag = assigned = None
    i = 0
    while i < len(args):
        arg, nxt = args[i], (args[i + 1] if i + 1 < len(args) else None)
        if arg == flag_name and secret(nxt):
            flag, i = nxt, i + 2
        elif arg.startswith(flag_name + "=") and secret(arg.partition("=")[2]):
            flag, i = arg.partition("=")[2], i + 1
        elif arg == "--set" and nxt and nxt.startswith(prefix) and secret(nxt[len(prefix) :]):
            assigned, i = nxt[len(prefix) :], i + 2
        else:
            kept.append(arg)
            i += 1
    return kept, flag or assigned


def split_storage(args: Sequence[str]) -> tuple[list[str], str | None]:
    """`args` without storage URLs that carry a password, and the URL that takes effect."""
    if _command(args) not in LOCAL_COMMANDS:
        return list(args), None
    return _split(args, "storage", lambda v: bool(url_password(v)))


def split_secrets(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """`args` without the storage password and the notify URL, and the variables to carry
    them instead."""
    kept, url = split_storage(args)
    moved = {STORAGE_ENV: url} if url else {}
    if _command(kept) in LOCAL_COMMANDS:
        kept, hook = _split(kept, "notify", lambda v: bool(v))
        if hook:
            moved[NOTIFY_ENV] = hook
    return kept, moved


def scrub_argv() -> None:
    """Re-execute this process without a secret on its command line (no-op when there is
    none). Keeps the PID, so signals, tini and the locks see the same process."""
    args, moved = split_secrets(sys.argv[1:])
    if not moved:
        return
    env = dict(os.environ, **moved)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "heretic", *args], env)
