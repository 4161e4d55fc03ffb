"""The image's locks held against what is installed (scripts/image_lock.py, the checker that
scripts/test_image.sh and scripts/lock_image.sh run): the cu130 image's own `pip freeze --all`,
written by `scripts/test_image.sh --line cu130` and kept in tests/data, has nothing unpinned;
a lock broken on purpose (a pin removed, a version changed) is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "scripts" / "image_lock.py"
FREEZE = ROOT / "tests" / "data" / "image-freeze-cu130.txt"
LOCK = ROOT / "image-constraints-cu130.txt"
STANDIN_PY = "3.11"  # the stand-in base the freeze was taken on (Debian bookworm's python3)


def checker(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECKER), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def freeze_names() -> set[str]:
    return {
        line.split("==")[0].split(" @ ")[0].lower()
        for line in FREEZE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def test_the_cu130_image_has_nothing_unpinned():
    names = freeze_names()
    # The CUDA packages that used to float are in the image, and pinned.
    assert {"torch", "triton", "cuda-bindings", "cuda-pathfinder", "nvidia-nvjitlink"} <= names
    assert {"pip", "setuptools"} <= names  # --all: the venv's own tools too
    result = checker("check-freeze", LOCK, STANDIN_PY, FREEZE)
    assert result.returncode == 0, result.stderr
    assert "installed packages pinned by image-constraints-cu130.txt" in result.stdout


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda text: text.replace("cuda-bindings==", "# cuda-bindings=="), "cuda-bindings=="),
        (lambda text: text.replace("\ntriton==", "\ntriton==0.0.1\n# "), "is pinned at 0.0.1"),
    ],
)
def test_a_broken_lock_is_caught(tmp_path: Path, edit, says):
    broken = tmp_path / "image-constraints-cu130.txt"
    broken.write_text(edit(LOCK.read_text()))
    result = checker("check-freeze", broken, STANDIN_PY, FREEZE)
    assert result.returncode == 1
    assert "the image does not match image-constraints-cu130.txt" in result.stderr
    assert says in result.stderr


def test_an_unpinned_package_in_the_image_is_caught(tmp_path: Path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text(FREEZE.read_text() + "nvidia-cuda-nvcc==13.0.88\n")
    result = checker("check-freeze", LOCK, STANDIN_PY, freeze)
    assert result.returncode == 1 and "nvidia-cuda-nvcc==13.0.88 is not pinned" in result.stderr


def test_markers_choose_the_pin_for_the_images_python(tmp_path: Path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# --- pins ---\n"
        'numpy==2.4.6; python_version == "3.11"\n'
        'numpy==2.5.5; python_version == "3.12"\n'
        "torch==2.13.0\n"
    )
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("numpy==2.5.5\ntorch==2.13.0\nheretic @ file:///opt/heretic\n")
    assert checker("check-freeze", lock, "3.12", freeze).returncode == 0
    wrong = checker("check-freeze", lock, "3.11", freeze)
    assert wrong.returncode == 1 and "numpy==2.5.5 is pinned at 2.4.6" in wrong.stderr


def test_a_lock_with_a_range_is_refused(tmp_path: Path):
    lock = tmp_path / "lock.txt"
    lock.write_text("numpy>=2\n")
    result = checker("check-freeze", lock, "3.12", FREEZE)
    assert result.returncode == 2 and "not an exact pin" in result.stderr


def _report(tmp_path: Path, packages: dict[str, str]) -> Path:
    """A resolution report in pip's documented `--report` format (the fields read here)."""
    path = tmp_path / "report.json"
    path.write_text(
        json.dumps(
            {
                "version": "1",
                "install": [{"metadata": {"name": n, "version": v}} for n, v in packages.items()],
            }
        )
    )
    return path


def test_complete_pins_only_what_torchs_build_decides(tmp_path: Path):
    lock = tmp_path / "image-constraints-cu126.txt"
    lock.write_text((ROOT / "image-constraints-cu126.txt").read_text())
    resolved = {"torch": "2.13.0+cu126", "numpy": "2.5.5", "nvidia-cublas-cu12": "12.6.4.1"}
    resolved["triton"] = "3.7.1"
    done = checker("check-report", lock, "3.12", _report(tmp_path, resolved), "--append-unresolved")
    assert done.returncode == 0, done.stderr
    assert "nvidia-cublas-cu12==12.6.4.1\ntriton==3.7.1\n" in lock.read_text()
    # Anything else unpinned means the lock is stale: never filled in silently.
    stale = checker(
        "check-report",
        lock,
        "3.12",
        _report(tmp_path, {**resolved, "rich": "99.0"}),
        "--append-unresolved",
    )
    assert stale.returncode == 1 and "rich==99.0 is pinned at" in stale.stderr
    extra = checker(
        "check-report",
        lock,
        "3.12",
        _report(tmp_path, {**resolved, "left-pad": "1.0"}),
        "--append-unresolved",
    )
    assert extra.returncode == 1 and "left-pad==1.0 is not pinned" in extra.stderr
    # Without --append-unresolved (--check), torch's own packages must already be pinned.
    fresh = tmp_path / "fresh.txt"
    fresh.write_text((ROOT / "image-constraints-cu126.txt").read_text())
    check = checker("check-report", fresh, "3.12", _report(tmp_path, resolved))
    assert check.returncode == 1 and "nvidia-cublas-cu12==12.6.4.1 is not pinned" in check.stderr
