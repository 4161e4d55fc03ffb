"""`heretic cloud ...` end to end against the loopback provider fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.fake_registry import FakeRegistry
from fakes.fake_runpod import RUNPOD_KEY, FakeRunPod
from fakes.fake_vast import VAST_KEY, FakeVast, vast_offer
from typer.testing import CliRunner

from heretic.cli.app import app
from heretic.errors import ExitCode

TOKEN = "hf_abcdefghijklmnopqrstuvwx"


@pytest.fixture()
def fakes(monkeypatch, tmp_path):
    with FakeVast() as vast, FakeRunPod() as runpod, FakeRegistry() as registry:
        # The default image, as a loopback registry holds it (the launch checks its manifest).
        monkeypatch.setattr("heretic.cloud.launch.DEFAULT_IMAGE", registry.image())
        monkeypatch.setenv("HERETIC_VAST_API_URL", vast.base)
        monkeypatch.setenv("HERETIC_RUNPOD_API_URL", runpod.base)
        monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
        monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield vast, runpod


def cli(*args: str):
    return CliRunner().invoke(app, ["cloud", *args])


def test_offers_json_merges_providers_cheapest_first(fakes):
    result = cli("offers", "--gpu", "A100-80GB", "--max-price", "1.7", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["provider"], r["offer"], r["usd_per_hour"]) for r in rows] == [
        ("vast", "102", 1.10),
        ("vast", "101", 1.45),
        ("runpod", "NVIDIA A100 80GB PCIe", 1.64),
    ]


def test_offers_table_and_one_provider_without_key(fakes, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    result = cli("offers")
    assert result.exit_code == 0
    assert "102" in result.stdout and "1.10" in result.stdout
    assert "runpod skipped" in result.stderr


def test_offers_with_model_estimate_needs_the_counter(fakes, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "heretic.preflight.memory", None)
    result = cli("offers", "--model", "org/m")
    assert result.exit_code == ExitCode.CLOUD and "not available" in result.stderr


def test_launch_dry_run_sends_nothing_and_masks(fakes):
    vast, runpod = fakes
    result = cli(
        "launch",
        "--provider",
        "vast",
        "--model",
        "org/m",
        "--upload",
        "me/out",
        "--offer",
        "102",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["launch_request"]["url"] == vast.base + "/asks/102/"
    assert plan["launch_request"]["json"]["env"]["HF_TOKEN"] == "hf_****"
    assert TOKEN not in result.output and VAST_KEY not in result.output
    assert vast.requests == [] and runpod.requests == []
    assert "host's operator" in result.stderr
    assert plan["secrets"][0]["secret"] == "HF_TOKEN" and "operator" in str(plan["secrets"])


def test_launch_vast_for_real(fakes):
    vast, _ = fakes
    result = cli(
        "launch", "--provider", "vast", "--model", "org/m", "--disk", "80", "--max-price", "1.2"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "7777"
    body = vast.calls("PUT", "/api/v0/asks/")[0]
    assert body.path == "/api/v0/asks/102/" and body.body["disk"] == 80
    assert body.body["env"]["HF_TOKEN"] == TOKEN and body.body["runtype"] == "args"
    assert "heretic cloud logs --provider vast 7777" in result.stderr
    assert TOKEN not in result.output


def test_launch_runpod_for_real(fakes):
    _, runpod = fakes
    result = cli(
        "launch", "--provider", "runpod", "--model", "org/m", "--disk", "80", "--set", "trials=50"
    )
    assert result.exit_code == 0, result.output
    body = runpod.calls("POST", "/v2/pods")[0].body
    assert body["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"
    assert body["env"]["HERETIC_TRIALS"] == "50" and "args" not in body
    assert result.stdout.strip() == "pod_abc123"


def test_launch_with_no_offer_under_the_cap(fakes):
    vast, _ = fakes
    vast.offers = [vast_offer(1, 3.0)]
    result = cli(
        "launch", "--provider", "vast", "--model", "org/m", "--disk", "80", "--max-price", "1.0"
    )
    assert result.exit_code == ExitCode.CLOUD and "No vast offer" in result.stderr
    assert vast.calls("PUT", "/api/v0/asks/") == []


def test_status_logs_stop(fakes):
    vast, runpod = fakes
    status = cli("status", "--provider", "vast", "555", "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["state"] == "running"
    assert "hf_s" not in status.stdout
    logs = cli("logs", "--provider", "runpod", "pod_abc123")
    assert logs.exit_code == 0 and "trial 1/200" in logs.stdout
    stop = cli("stop", "--provider", "runpod", "pod_abc123")
    assert stop.exit_code == 0 and runpod.calls("DELETE", "/v2/pods/pod_abc123")


def test_bad_key_exit_code_and_message(fakes, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", "wrong-key-0000000000000")
    result = cli("status", "--provider", "vast", "555")
    assert result.exit_code == ExitCode.CLOUD
    assert "HTTP 401" in result.stderr and "wrong-key-0000000000000" not in result.stderr


def test_bad_inputs(fakes):
    assert cli("offers", "--gpu", "B9000").exit_code == ExitCode.CLOUD
    assert cli("offers", "--provider", "aws").exit_code == ExitCode.CLOUD
    assert cli("monitor", "--launch").exit_code == ExitCode.CONFIG
    bad_set = cli("launch", "--provider", "vast", "--model", "m", "--set", "x", "--dry-run")
    assert bad_set.exit_code == ExitCode.CONFIG and "KEY=VALUE" in bad_set.stderr
    assert cli("monitor", "--interval", "5").exit_code == ExitCode.USAGE


def test_monitor_one_poll_alerts_and_saves_state(fakes, tmp_path):
    state = tmp_path / "m.json"
    result = cli("monitor", "--max-polls", "1", "--state-file", str(state), "--no-bell")
    assert result.exit_code == 0, result.output
    assert "A100-80GB AVAILABLE on vast" in result.stderr
    assert "AVAILABLE on runpod" in result.stderr
    assert json.loads(state.read_text())["providers"]["vast"]["offers"] == 2
    again = cli("monitor", "--max-polls", "1", "--state-file", str(state), "--no-bell")
    assert "AVAILABLE" not in again.stderr


def test_monitor_launch(fakes, tmp_path):
    vast, runpod = fakes
    result = cli(
        "monitor",
        "--provider",
        "vast",
        "--max-polls",
        "3",
        "--launch",
        "--model",
        "org/m",
        "--disk",
        "80",
        "--state-file",
        str(tmp_path / "s.json"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "7777"
    assert len(vast.calls("PUT", "/api/v0/asks/")) == 1 and runpod.requests == []


LLAMA_8B = Path(__file__).parent / "fixtures" / "configs" / "llama3-8b"


def test_dry_run_sizes_the_disk_from_a_local_model_folder_offline(fakes):
    vast, runpod = fakes
    result = cli("launch", "--provider", "runpod", "--model", str(LLAMA_8B), "--dry-run")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    # 8.03B parameters: 2 x 16.1 GB bf16 + 30 GB, rounded up to 10.
    mounts = plan["launch_request"]["json"]["mounts"]
    assert mounts == {"persistent": {"size": 70, "path": "/workspace"}}
    assert plan["offer_search"]["params"]["cloud"] == "SECURE"
    assert "default 150 GB" not in result.stderr
    assert vast.requests == [] and runpod.requests == []


def test_offers_estimate_from_a_local_model_folder(fakes):
    result = cli("offers", "--provider", "vast", "--model", str(LLAMA_8B), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert "8.03B parameters" in result.stderr
    assert rows[0]["est_hours"] == pytest.approx(0.47, abs=0.05)
    assert rows[0]["est_cost_usd"] == pytest.approx(rows[0]["est_hours"] * 1.10, abs=0.02)


def test_a_launch_with_a_missing_image_tag_fails_before_any_create(fakes):
    vast, runpod = fakes
    from heretic.cloud import launch as launch_module

    image = launch_module.DEFAULT_IMAGE.replace("0.1.0-cu126", "9.9.9-cu126")
    for provider in ("vast", "runpod"):
        result = cli(
            "launch", "--provider", provider, "--model", "org/m", "--disk", "80", "--image", image
        )
        assert result.exit_code == ExitCode.CLOUD
        assert "does not exist" in result.stderr and "--image" in result.stderr
    assert vast.requests == [] and runpod.requests == []  # not even an offer search


def test_a_private_image_says_how_to_make_it_public(fakes):
    vast, _ = fakes
    from heretic.cloud import launch as launch_module

    registry_host = launch_module.DEFAULT_IMAGE.split("/")[0]
    result = cli(
        "launch",
        "--provider",
        "vast",
        "--model",
        "org/m",
        "--disk",
        "80",
        "--image",
        f"{registry_host}/someone/private:1.0-cu126",
    )
    assert result.exit_code == ExitCode.CLOUD and "Change visibility" in result.stderr
    assert vast.requests == []


def test_the_launch_marks_its_instance_and_sets_a_deadline(fakes):
    vast, runpod = fakes
    assert cli("launch", "--provider", "vast", "--model", "org/m", "--disk", "80").exit_code == 0
    env = vast.calls("PUT", "/api/v0/asks/")[0].body["env"]
    assert env["HERETIC_LAUNCHED_BY"] == "heretic-cloud-launch" and env["HERETIC_LAUNCHED_AT"]
    assert env["HERETIC_MAX_HOURS"] == "24"  # the model cannot be counted offline: the default
    result = cli(
        "launch", "--provider", "runpod", "--model", "org/m", "--disk", "80", "--max-hours", "5"
    )
    assert result.exit_code == 0, result.output
    assert runpod.calls("POST", "/v2/pods")[0].body["env"]["HERETIC_MAX_HOURS"] == "5"


def test_the_login_token_is_sent_only_when_asked(fakes, monkeypatch, tmp_path):
    vast, _ = fakes
    monkeypatch.delenv("HF_TOKEN")
    login = "hf_loginTokenSavedByHfAuthLogin0123"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(login)
    # Where `hf auth login` saved it (huggingface_hub reads the path at call time).
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    args = ("launch", "--provider", "vast", "--model", "org/m", "--disk", "80")
    assert cli(*args).exit_code == 0
    assert "HF_TOKEN" not in vast.calls("PUT", "/api/v0/asks/")[0].body["env"]
    refused = cli(*args, "--upload", "me/out")
    assert refused.exit_code == ExitCode.TOKEN and "--hf-token-from-login" in refused.stderr
    assert cli(*args, "--hf-token-from-login").exit_code == 0
    assert vast.calls("PUT", "/api/v0/asks/")[-1].body["env"]["HF_TOKEN"] == login


def test_credentials_in_set_go_only_through_provider_secrets(fakes):
    vast, runpod = fakes
    hook = "--set=notify=https://hooks.example.org/T0/B0/secret"
    db = "--set=storage=postgresql://u:dbpassword@db.example.org/h"
    base = ("launch", "--model", "org/m", "--disk", "80")
    for extra in (hook, db):
        result = cli(*base, "--provider", "vast", extra)
        assert result.exit_code == ExitCode.CONFIG and "vastai create env-var" in result.stderr
        assert "dbpassword" not in result.output and "T0/B0" not in result.output
    assert vast.calls("PUT", "/api/v0/asks/") == []
    plain = cli(*base, "--provider", "vast", hook, "--allow-plain-secrets")
    assert plain.exit_code == 0 and "HERETIC_NOTIFY: a plain environment value" in plain.stderr
    ref = cli(*base, "--provider", "runpod", "--set", "notify={{ RUNPOD_SECRET_hook }}")
    assert ref.exit_code == 0, ref.output
    sent = runpod.calls("POST", "/v2/pods")[0].body["env"]
    assert sent["HERETIC_NOTIFY"] == "{{ RUNPOD_SECRET_hook }}"
    assert "resolved by RunPod inside the pod" in ref.stderr
