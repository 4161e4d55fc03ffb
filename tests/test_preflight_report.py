"""run_preflight and the CLI: OK on the demo, clean FAILs with what to change, JSON, exit codes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heretic.cli.app import app
from heretic.config.settings import Settings
from heretic.preflight.checklist import run_preflight
from heretic.preflight.inventory import GIB, GpuInfo, GpuInventory, read_inventory
from heretic.preflight.lock import acquire_gpu_locks, acquire_run_lock
from heretic.preflight.report import Status

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
CPU = GpuInventory([], 32 * GIB, 28 * GIB, nvml_error="NVML Shared Library Not Found")
GOOD_TOKEN = "hf_" + "a1B2" * 9


def _gpus(n: int, total_mib: int, free_mib: int) -> GpuInventory:
    gpus = [
        GpuInfo(
            i, "NVIDIA GeForce RTX 4090", total_mib * 1024**2, free_mib * 1024**2, [], f"GPU-{i}"
        )
        for i in range(n)
    ]
    return GpuInventory(gpus, 128 * GIB, 120 * GIB)


def _run(settings: Settings, tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("inventory", CPU)
    kw.setdefault("environ", {})
    return run_preflight(settings, registry=tmp_path / "reg", lock_dir=tmp_path / "locks", **kw)


def _check(report, name: str):  # type: ignore[no-untyped-def]
    return next(c for c in report.checks if c.name == name)


def test_demo_passes_quickly_on_cpu(tmp_path: Path) -> None:
    start = time.monotonic()
    report = _run(Settings(output=tmp_path / "out", profile="auto"), tmp_path)
    assert time.monotonic() - start < 5
    assert not report.failed, report.summary()
    assert report.profile is not None and report.profile.name == "cpu-demo"
    assert {c.name for c in report.checks} >= {
        "stale processes",
        "study lock",
        "GPUs",
        "GPU locks",
        "model",
        "profile",
        "disk",
        "HF token",
        "RAM (merge)",
    }


def test_real_inventory_without_driver_is_clean() -> None:
    inventory = read_inventory()  # this machine: no NVIDIA driver
    assert inventory.ram_total_bytes > 0
    if inventory.cpu_only:
        assert inventory.nvml_error


def test_missing_model_is_a_fail_not_a_traceback(tmp_path: Path) -> None:
    report = _run(Settings(model=str(tmp_path / "missing"), output=tmp_path), tmp_path)
    model = _check(report, "model")
    assert model.status is Status.FAIL and "does not exist" in model.detail
    assert report.failed and "model:" in report.summary()


def test_70b_on_one_24gb_gpu_fails_with_numbers(tmp_path: Path) -> None:
    settings = Settings(model=str(CONFIGS / "llama3-70b"), output=tmp_path, device_map="cuda:0")
    report = _run(settings, tmp_path, inventory=_gpus(1, 24564, 24080))
    mem = _check(report, "GPU memory")
    assert mem.status is Status.FAIL
    assert "GiB" in mem.need and "usable" in mem.measured
    assert report.estimate is not None
    assert report.estimate["parameters"]["total"] == 70_553_706_496


def test_auto_profile_32b_on_4x24_passes_and_auto_map_warns(tmp_path: Path) -> None:
    inventory = _gpus(4, 24564, 24080)
    settings = Settings(
        model=str(CONFIGS / "qwen2.5-32b"),
        output=tmp_path,
        profile="multi-gpu",
        device_map="balanced",
        batch_size=4,
        max_batch_size=16,
    )
    report = _run(settings, tmp_path, inventory=inventory)
    assert _check(report, "GPU memory").status is Status.OK, report.summary()
    bad = settings.model_copy(update={"device_map": "auto", "batch_size": 1})
    report = _run(bad, tmp_path, inventory=inventory)
    assert _check(report, "device map").status is Status.WARN
    assert "balanced" in _check(report, "device map").detail
    assert _check(report, "batch size").status is Status.WARN


def test_quantized_search_needs_ram_for_the_merge(tmp_path: Path) -> None:
    settings = Settings(
        model=str(CONFIGS / "llama3-70b"),
        output=tmp_path,
        quantization="bnb-4bit",
        device_map="cuda:0",
    )
    report = _run(settings, tmp_path, inventory=_gpus(1, 81920, 81050))
    merge = _check(report, "RAM (merge)")
    assert merge.status is Status.FAIL and "133.4 GiB" in merge.need  # 131 GiB bf16 + 2


@pytest.mark.parametrize(
    ("environ", "status"),
    [
        ({}, Status.FAIL),
        ({"HF_TOKEN": "hf_short"}, Status.FAIL),
        ({"HF_TOKEN": "not a token at all, hf_..."}, Status.FAIL),
        ({"HF_TOKEN": GOOD_TOKEN}, Status.OK),
    ],
)
def test_token_check_never_reveals_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], status: Status
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no token file
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    report = _run(Settings(output=tmp_path, upload="me/model"), tmp_path, environ=environ)
    assert _check(report, "HF token").status is status
    text = json.dumps(report.to_dict())
    for value in environ.values():
        assert value not in text


def test_locks_held_by_others_fail_and_ours_pass(tmp_path: Path) -> None:
    out = tmp_path / "out"
    inventory = _gpus(1, 24564, 24080)
    settings = Settings(output=out, device_map="cuda:0")
    with acquire_run_lock(out / "study"), acquire_gpu_locks(["GPU-0"], tmp_path / "locks"):
        report = _run(settings, tmp_path, inventory=inventory)
        assert _check(report, "study lock").measured == "held by this run"
        assert _check(report, "GPU locks").status is Status.OK


def test_cli_preflight_json_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["preflight", "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["checks"]
    bad = runner.invoke(
        app, ["preflight", "--model", str(tmp_path / "missing"), "--profile", "auto"]
    )
    assert bad.exit_code == 7
    assert "FAIL" in bad.stdout and "does not exist" in bad.stdout
    unknown = runner.invoke(app, ["preflight", "--profile", "nope"])
    assert unknown.exit_code == 3


def test_cli_profiles_lists_one_line_each() -> None:
    result = CliRunner().invoke(app, ["profiles"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 7
    assert any(line.startswith("multi-gpu ") and "balanced" in line for line in lines)
