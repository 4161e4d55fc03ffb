"""A storage password, however it is given (command line, environment, config file), is
masked in command lines, lock files, process records, settings dumps and log text, and a
command line carrying one is rewritten before the run starts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from heretic import secrets
from heretic.cli.argv_secrets import split_storage
from heretic.config.settings import Settings
from heretic.secrets import add_secret, mask_url_password, redact, safe_cmdline

URL = "postgresql://heretic:S3cr3t-Pass-word@db.example.org:5432/heretic"
PASSWORD = "S3cr3t-Pass-word"


@pytest.mark.parametrize(
    "argv",
    [
        ["heretic", "run", "--storage", URL],
        ["heretic", "run", f"--storage={URL}"],
        ["heretic", "run", "--set", f"storage={URL}"],
    ],
)
def test_recorded_command_lines_mask_the_storage_password(argv, monkeypatch, tmp_path):
    line = safe_cmdline(argv, environ={})
    assert PASSWORD not in line and "heretic:****@db.example.org" in line
    # The study lock file records the command line of its holder.
    from heretic.preflight.lock import acquire_run_lock
    from heretic.preflight.registry import register_process

    monkeypatch.setattr(sys, "argv", argv)
    with acquire_run_lock(tmp_path / "study"):
        record = register_process(tmp_path / "study", registry=tmp_path / "runs")
        lock_text = (tmp_path / "study" / ".heretic.lock").read_text()
    assert PASSWORD not in lock_text and PASSWORD not in record.read_text()
    assert json.loads(lock_text)["cmdline"].startswith("heretic run")


def test_a_password_with_reserved_characters_is_masked_whole():
    raw = "postgresql://u:p%40ss:w0rd@host/db and sqlite:///x.db"
    assert mask_url_password(raw) == "postgresql://u:****@host/db and sqlite:///x.db"


def test_the_environment_and_registered_passwords_are_redacted(monkeypatch):
    monkeypatch.setattr(secrets, "_registered", set())
    environ = {"HERETIC_STORAGE": URL}
    assert (
        redact(f"driver said: bad password {PASSWORD}", environ=environ)
        == "driver said: bad password ****"
    )
    add_secret("from-a-config-file-pw")
    assert "from-a-config-file-pw" not in redact("x from-a-config-file-pw y", environ={})


def test_settings_files_mask_the_password_and_accept_postgres_urls():
    settings = Settings(storage=URL.replace("postgresql://", "postgres://"))
    assert settings.storage == URL
    assert (
        settings.public_dump()["storage"] == "postgresql://heretic:****@db.example.org:5432/heretic"
    )


def test_the_command_line_is_rewritten_without_the_password():
    args, url = split_storage(["run", "--storage", URL, "--trials", "3"])
    assert (args, url) == (["run", "--trials", "3"], URL)
    args, url = split_storage(["run", "--set", f"storage={URL}", f"--storage={URL}x"])
    assert (args, url) == (["run"], URL + "x")  # the flag wins over --set, as in the settings
    assert split_storage(["run", "--storage", "sqlite:///s.db"]) == (
        ["run", "--storage", "sqlite:///s.db"],
        None,
    )  # nothing secret: left alone
    # cloud launch forwards --set to the rented machine: not a local setting.
    cloud = ["cloud", "launch", "--set", f"storage={URL}"]
    assert split_storage(cloud) == (cloud, None)


def test_a_worker_gets_the_storage_by_environment_not_in_its_settings_file(tmp_path):
    from heretic.run.worker_pool import worker_settings

    data = worker_settings(Settings(storage=URL, output=Path(tmp_path)))
    assert data["storage"] is None and PASSWORD not in json.dumps(data)
