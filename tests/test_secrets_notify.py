"""The notify webhook URL carries its key: it stays out of the process title, lock files and
the recorded command lines, whichever way it was given."""

from __future__ import annotations

import signal
from pathlib import Path

from test_run_cli import start_cli, wait_for

from heretic.cli.argv_secrets import NOTIFY_ENV, STORAGE_ENV, split_secrets
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.launch import LaunchOptions, plan_launch
from heretic.cloud.vast import VastClient
from heretic.secrets import safe_cmdline

HOOK = "https://hooks.example.org/services/T000/B000/SeCrEtKeY0123456789"
SET_HOOK = "https://hooks.example.org/other?key=AnotherSecretKey987"
DB = "postgresql://heretic:DbPassw0rdXyz@db.example.org/s"


def test_the_notify_url_moves_to_the_environment_however_it_was_given() -> None:
    assert split_secrets(["run", "--notify", HOOK, "--trials", "3"]) == (
        ["run", "--trials", "3"],
        {NOTIFY_ENV: HOOK},
    )
    assert split_secrets(["run", f"--notify={HOOK}"]) == (["run"], {NOTIFY_ENV: HOOK})
    args, moved = split_secrets(["run", "--set", f"notify={SET_HOOK}", "--notify", HOOK])
    assert args == ["run"] and moved == {NOTIFY_ENV: HOOK}  # the flag wins, as in settings
    args, moved = split_secrets(["run", "--storage", DB, "--set", f"notify={SET_HOOK}"])
    assert args == ["run"] and moved == {STORAGE_ENV: DB, NOTIFY_ENV: SET_HOOK}
    cloud = ["cloud", "launch", "--set", f"notify={SET_HOOK}"]
    assert split_secrets(cloud) == (cloud, {})  # forwarded to the rented machine


def test_recorded_command_lines_mask_notify_in_every_form() -> None:
    line = safe_cmdline(
        ["heretic", "run", "--set", f"notify={SET_HOOK}", f"--set=notify={HOOK}", "--notify", HOOK],
        environ={},
    )
    assert HOOK not in line and SET_HOOK not in line
    assert line.count("notify=****") == 2 and "--notify ****" in line


def test_cloud_launch_dry_run_masks_the_notify_url() -> None:
    client = VastClient(None, base_url="http://127.0.0.1:9/api/v0")
    opts = LaunchOptions(
        provider="vast",
        gpu=gpu_kind("A100-80GB"),
        model="meta-llama/Llama-3.1-8B-Instruct",
        settings={"notify": SET_HOOK},
        allow_plain_secrets=True,  # without it the launch refuses a plain notify URL (exit 3)
    )
    shown = plan_launch(opts, client, n_params=None, hf_token=None, dry_run=True).describe(client)
    assert "AnotherSecretKey987" not in str(shown)


def test_a_live_run_shows_no_webhook_key_in_its_title_or_lock(
    demo_model_dir, cli_env, tmp_path
) -> None:
    out = tmp_path / "out"
    args = ["run", "--trials", "400", "--output", str(out), "--set", f"notify={SET_HOOK}"]
    proc = start_cli([*args, "--notify", HOOK], cli_env)
    lock = out / "study" / ".heretic.lock"
    try:
        wait_for(lambda: lock.is_file() and str(proc.pid) in lock.read_text(), proc=proc)
        title = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        recorded = lock.read_text() + (out / ".heretic-output.lock").read_text()
        for secret in ("SeCrEtKeY0123456789", "AnotherSecretKey987"):
            assert secret not in title and secret not in recorded
        assert "--trials" in title  # the same run, re-executed without the secrets
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
