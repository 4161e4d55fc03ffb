"""Preflight knows mixture-of-experts models: memory from the total parameter count, the active
count per token, the parameters a decode step reads, the profile on a planned machine
(`--gpus`), and an edit the architecture cannot take exactly is a FAIL before any weight loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heretic.config.settings import Settings
from heretic.errors import ConfigError
from heretic.preflight.checks_model import check_model
from heretic.preflight.fit import planned_inventory
from heretic.preflight.inventory import GIB, GpuInventory
from heretic.preflight.memory import count_parameters, weight_bytes
from heretic.preflight.report import Status

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
MOE = str(CONFIGS / "qwen3-30b-a3b")


def test_qwen3_30b_a3b_counts() -> None:
    count = count_parameters(MOE)
    assert count.total == 30_532_122_624  # what transformers allocates for this config
    assert count.moe_layers == 48 and (count.num_experts, count.experts_per_token) == (128, 8)
    assert 3.3e9 < count.active < 3.4e9  # Qwen's model card: 3.3B activated
    assert count.read_per_step(1) == count.active
    # 64 tokens routed to 8 of 128 experts leave almost no expert unread
    assert count.read_per_step(64) > 0.98 * count.total
    # bitsandbytes does not quantize fused experts: "4 bit" saves ~2% of this model
    assert weight_bytes(count, "bnb-4bit") > 0.97 * weight_bytes(count)
    dense = count_parameters(str(CONFIGS / "llama3-8b"))
    assert dense.active == dense.total == dense.read_per_step(64) and dense.moe_layers == 0


def test_model_check_names_the_moe_and_fails_norm_preserving() -> None:
    check, _ = check_model(Settings(model=MOE))
    assert (
        check.status == Status.OK and "3.35B active per token (8 of 128 experts" in check.measured
    )
    check, _ = check_model(Settings(model=MOE, ablation="norm-preserving"))
    assert check.status == Status.FAIL and "--ablation standard" in check.detail
    check, _ = check_model(
        Settings(model=MOE, ablation="norm-preserving", components=["attention"])
    )
    assert check.status == Status.OK


def test_planned_machine_and_a_bad_spec() -> None:
    base = GpuInventory([], 64 * GIB, 60 * GIB)
    planned = planned_inventory("4x24", base)
    assert len(planned.gpus) == 4 and planned.ram_total_bytes == 64 * GIB
    assert planned.gpus[0].total_bytes == 24564 * 1024**2
    with pytest.raises(ConfigError) as err:
        planned_inventory("3x33", base)
    assert "1x80" in err.value.hint


@pytest.mark.parametrize(("gpus", "code", "profile"), [("1x80", 0, "gpu-80gb"), ("1x24", 7, None)])
def test_preflight_cli_plans_a_30b_a3b_model(gpus: str, code: int, profile, tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "heretic",
            "preflight",
            "--model",
            MOE,
            "--profile",
            "auto",
            "--gpus",
            gpus,
            "--json",
            "--set",
            f"output={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == code, done.stderr
    report = json.loads(done.stdout)
    assert report["profile"]["name"] == profile
    assert report["estimate"]["parameters"]["active"] == count_parameters(MOE).active
    memory = {c["name"]: c for c in report["checks"]}["GPU memory"]
    assert ("OK" if code == 0 else "FAIL") == memory["status"]
    if profile is None:
        assert "1x 80 GB" in report["profile"]["fail_message"]


def test_a_planned_machine_is_not_judged_by_this_hosts_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--gpus` plans a rental: a short disk here is a WARN naming the size to rent, never the
    FAIL (exit 7) it is for a run on this host. CI once failed on a host with 53 GiB free."""
    import shutil
    from collections import namedtuple

    from heretic.preflight import checks_resources
    from heretic.preflight.checklist import run_preflight

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        checks_resources.shutil, "disk_usage", lambda _p: usage(100 * GIB, 90 * GIB, 10 * GIB)
    )
    assert checks_resources.shutil is shutil
    settings = Settings(model=MOE, output=tmp_path / "out", device_map="cuda:0")
    base = GpuInventory([], 64 * GIB, 60 * GIB)
    kw = {"environ": {}, "registry": tmp_path / "reg", "lock_dir": tmp_path / "locks"}
    planned = run_preflight(settings, inventory=planned_inventory("1x80", base), **kw)
    disk = {c.name: c for c in planned.checks}["disk"]
    assert disk.status is Status.WARN and "rent at least 57.9 GiB" in disk.detail, disk
    assert not planned.failed, planned.summary()
    here = run_preflight(settings, inventory=base, **kw)
    assert {c.name: c for c in here.checks}["disk"].status is Status.FAIL
