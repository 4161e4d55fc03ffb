"""entrypoint.sh with a stand-in `heretic` on PATH: argument routing and signal forwarding."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "entrypoint.sh"

STAND_IN = """#!/bin/sh
# Stand-in for heretic: records its arguments and pid, exits 75 on SIGTERM like heretic does.
printf '%s\\n' "$@" > "$STANDIN_DIR/args"
trap 'echo TERM > "$STANDIN_DIR/signal"; exit 75' TERM
echo $$ > "$STANDIN_DIR/pid.tmp" && mv "$STANDIN_DIR/pid.tmp" "$STANDIN_DIR/pid"
if [ -n "${STANDIN_WAIT:-}" ]; then
    while :; do sleep 0.05; done
fi
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "heretic"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_DIR": str(tmp_path),
    }


def routed(env: dict[str, str], *args: str) -> list[str]:
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return (Path(env["STANDIN_DIR"]) / "args").read_text().splitlines()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["run"]),
        (("--profile", "auto"), ["run", "--profile", "auto"]),
        (("--model", "a b/c"), ["run", "--model", "a b/c"]),
        (("-h",), ["run", "-h"]),
        (("status", "/workspace/output"), ["status", "/workspace/output"]),
        (("upload", "/w/o", "me/m", "--public"), ["upload", "/w/o", "me/m", "--public"]),
        (("heretic", "preflight"), ["preflight"]),
        (("preflight", "--json"), ["preflight", "--json"]),
        (("profiles",), ["profiles"]),
        (("demo",), ["demo"]),
    ],
)
def test_routing_to_heretic(
    env: dict[str, str], args: tuple[str, ...], expected: list[str]
) -> None:
    assert routed(env, *args) == expected


def test_other_commands_run_as_given(env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        ["sh", str(ENTRYPOINT), "bash", "-c", "echo debug shell"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stdout == "debug shell\n"
    assert not (tmp_path / "args").exists()  # heretic was not involved


def test_exit_code_passes_through(env: dict[str, str]) -> None:
    proc = subprocess.run(["sh", str(ENTRYPOINT), "sh", "-c", "exit 10"], env=env, timeout=30)
    assert proc.returncode == 10


def test_sigterm_reaches_heretic_because_of_exec(env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT), "--profile", "auto"], env={**env, "STANDIN_WAIT": "1"}
    )
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid_file.exists(), "the stand-in never started"
    # exec: heretic replaced the shell, so the container's signal goes straight to it.
    assert int(pid_file.read_text()) == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 75
    assert (tmp_path / "signal").read_text().strip() == "TERM"
