"""The image's one setting, the CUDA line: the Dockerfile, heretic/image.py, the launchers'
CUDA filter (Python and shell) and the tags must all say the same; and the small commands the
image relies on (`heretic version --check`, the entrypoint's routing)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heretic import __version__
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.launch import DEFAULT_IMAGE, LaunchOptions, plan_launch
from heretic.cloud.runpod import RunPodClient
from heretic.cloud.vast import VastClient
from heretic.image import (
    DEFAULT_LINE,
    DEFAULT_MIN_CUDA,
    LINES,
    LOCK_FILE,
    REPOSITORY,
    cuda_line,
    default_image,
    image_tag,
    line_of_image,
    min_host_cuda,
)
from heretic.install_check import check_install

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_lines() -> dict[str, str]:
    """The `case "${CUDA_LINE}"` branches of the torch step: line -> index URL ("" = PyPI)."""
    return dict(re.findall(r"^\s+(\w+)\) index=(\S*) ;;", DOCKERFILE, flags=re.M))


def lock(line: str) -> str:
    return (ROOT / LOCK_FILE.format(line=line)).read_text()


def lock_header(line: str) -> dict[str, str]:
    return dict(re.findall(r"^# (line|torch|python): (.*)$", lock(line), flags=re.M))


def torch_pin(line: str) -> str:
    found = re.findall(r"^torch==(\S+)$", lock(line), flags=re.M)
    assert len(found) == 1, f"{line}: one unmarked torch pin expected, got {found}"
    return found[0]


def test_dockerfile_and_module_map_the_same_lines_to_the_same_index():
    assert dockerfile_lines() == {name: line.torch_index_url for name, line in LINES.items()}
    assert dockerfile_lines()["cu130"] == ""  # PyPI: its torch 2.13.0 is the CUDA 13.0 build
    default = re.search(r"^ARG CUDA_LINE=(\S+)$", DOCKERFILE, flags=re.M)
    assert default and default.group(1) == DEFAULT_LINE
    # The index is an argument; "auto" is the line's own, anything else (empty: PyPI) wins.
    assert re.search(r"^ARG TORCH_INDEX_URL=auto$", DOCKERFILE, flags=re.M)
    assert 'pip install --no-deps ${index:+--index-url "$index"} "torch===${version}"' in DOCKERFILE
    # Every pip step installs with the line's lock; torch at the lock's exact build.
    assert "COPY image-constraints-${CUDA_LINE}.txt ./" in DOCKERFILE
    assert "version=$(sed -n 's/^torch==//p' \"$lock\")" in DOCKERFILE
    assert len(re.findall(r'-c "image-constraints-\$\{CUDA_LINE\}.txt"', DOCKERFILE)) == 2


def test_each_line_has_its_lock_with_its_torch_build():
    base_python = re.search(r"^ARG BASE_IMAGE=python:(\d+\.\d+)\.", DOCKERFILE, flags=re.M)
    assert base_python
    versions = set()
    for name, line in LINES.items():
        header = lock_header(name)
        assert header["line"] == name
        pin = torch_pin(name)
        version, _, label = pin.partition("+")
        versions.add(version)
        # The index lines' builds carry the line as their label; PyPI's CUDA 13.0 build none.
        assert label == ("" if line.torch_index_url == "" else name), pin
        if line.published:  # built on the published base: locked for its Python
            assert base_python.group(1) in header["python"].split(), header
    assert len(versions) == 1, f"the locks disagree on torch: {versions}"
    # cu130 is resolved here in full: torch's CUDA packages pinned, nothing left to float.
    cu130 = lock("cu130")
    for name in ("cuda-bindings", "cuda-pathfinder", "cuda-toolkit", "nvidia-nvjitlink", "triton"):
        assert re.search(rf"^{name}==\S+", cu130, flags=re.M), name
    assert "--- unresolved here ---" not in cu130 and "--- unresolved here ---" not in lock("cpu")
    assert not re.search(r"^(nvidia-(?!ml-py)|cuda-|triton)", lock("cpu"), flags=re.M)
    # cu126's torch index is not reachable here: what it decides is listed as unresolved
    # (for the workflow's --complete), not silently left out.
    cu126 = lock("cu126")
    assert "--- unresolved here ---" in cu126 and "nvidia-*-cu12 and triton" in cu126


def test_workflow_builds_the_published_lines_with_their_locks():
    workflow = (ROOT / ".github/workflows/docker.yml").read_text()
    matrix = re.search(r"^\s+line: \[(.*)\]$", workflow, flags=re.M)
    assert matrix
    published = [name for name, line in LINES.items() if line.published]
    assert [x.strip() for x in matrix.group(1).split(",")] == published
    # Changing the Dockerfile, a lock or the dependencies runs the image jobs.
    for path in (
        "Dockerfile",
        "image-constraints-*.txt",
        "pyproject.toml",
        "scripts/lock_image.sh",
    ):
        assert f"      - {path}\n" in workflow, path
    # The locks resolve in full (cu126 completed where its index is reachable), and the cu130
    # image is built and checked like here.
    assert "bash scripts/lock_image.sh --check cu130 cpu" in workflow
    assert "bash scripts/lock_image.sh --complete cu126" in workflow
    assert "sudo bash scripts/test_image.sh --line cu130" in workflow
    assert "build-args: CUDA_LINE=${{ matrix.line }}" in workflow


def test_lines_tags_and_host_cuda():
    assert LINES["cu126"].min_host_cuda == "12.6" == DEFAULT_MIN_CUDA
    assert LINES["cu130"].min_host_cuda == "13.0"
    assert image_tag("cu130", "0.2.0") == "0.2.0-cu130"
    assert default_image() == f"{REPOSITORY}:{__version__}-cu126" == DEFAULT_IMAGE
    assert line_of_image("ghcr.io/o/heretic:0.2.0-cu130").name == "cu130"
    assert line_of_image("ghcr.io/o/heretic:cu126").name == "cu126"
    assert line_of_image("localhost:5000/heretic:mine") is None
    assert min_host_cuda("ghcr.io/o/heretic:0.2.0-cu130@sha256:abc") == "13.0"
    assert min_host_cuda("my/custom:latest") == "12.6"  # built like the default line
    with pytest.raises(ValueError, match="cu126, cu130, cpu"):
        cuda_line("cu128")  # PyTorch publishes no cu128 wheels for 2.12/2.13


@pytest.mark.parametrize("image", [None, "ghcr.io/heretic-llm/heretic:0.1.0-cu130"])
@pytest.mark.parametrize("provider", ["vast", "runpod"])
def test_launchers_ask_for_the_cuda_the_image_needs(provider, image):
    want = "13.0" if image else "12.6"
    opts = LaunchOptions(
        provider=provider,
        gpu=gpu_kind("A100-80GB"),
        model="m/x",
        **({"image": image} if image else {}),
    )
    client = (
        VastClient(None, base_url="http://127.0.0.1:9/api/v0")
        if provider == "vast"
        else RunPodClient(None, base_url="http://127.0.0.1:9/v2")
    )
    plan = plan_launch(opts, client, n_params=None, hf_token=None, dry_run=True)
    shown = plan.describe(client)
    body = shown["launch_request"]["json"]
    assert body["image"] == (image or default_image())
    if provider == "vast":
        assert shown["offer_search"]["json"]["cuda_max_good"] == {"gte": float(want)}
    else:
        assert body["gpu"]["minCudaVersion"] == want
        assert shown["offer_search"]["params"]["minCudaVersion"] == want


def _shell(snippet: str) -> str:
    lib = ROOT / "scripts" / "lib" / "image.sh"
    out = subprocess.run(
        ["bash", "-c", f". {lib}; {snippet}"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_shell_launchers_agree_with_the_module():
    assert _shell('echo "$HERETIC_DEFAULT_IMAGE"') == default_image()
    for image in (
        "ghcr.io/heretic-llm/heretic:0.1.0-cu126",
        "ghcr.io/x/heretic:0.3.1-cu130",
        "ghcr.io/x/heretic:cu130",
        "docker.io/me/custom:latest",
        "ghcr.io/x/heretic:0.1.0-cu130@sha256:0123",
    ):
        assert _shell(f"min_cuda_for_image {image}") == min_host_cuda(image), image
    vast = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts/launch_vast.sh"),
            "--dry-run",
            "--model",
            "m/x",
            "--image",
            "ghcr.io/x/heretic:0.1.0-cu130",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r'"cuda_max_good": \{\s*"gte": 13', vast)
    runpod = subprocess.run(
        ["bash", str(ROOT / "scripts/launch_runpod.sh"), "--dry-run", "--model", "m/x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "minCudaVersion=12.6" in runpod and '"minCudaVersion": "12.6"' in runpod
    assert f'"image": "{default_image()}"' in runpod


def test_templates_use_the_release_tag_not_latest():
    runpod = json.loads((ROOT / "scripts/templates/runpod-template.json").read_text())
    vast = json.loads((ROOT / "scripts/templates/vast-template.json").read_text())
    assert runpod["image"] == default_image()
    assert f"{vast['image']}:{vast['tag']}" == default_image()
    assert f"docker:{default_image()}" in (ROOT / "scripts/skypilot-workers.yaml").read_text()


def test_install_check_asks_torch_for_its_cuda_line():
    here = check_install({})  # outside the image: only the imports are checked
    assert here.ok, here.problems
    assert {"torch", "transformers", "accelerate", "bitsandbytes", "optuna"} <= set(here.versions)
    import torch

    built = torch.version.cuda  # None for the CPU build CI and this machine use
    own = next(
        (n for n, line in LINES.items() if (line.min_host_cuda or None) == (built and built[:4])),
        None,
    )
    for name, line in LINES.items():
        report = check_install({"HERETIC_CUDA_LINE": name})
        torch_problems = [p for p in report.problems if "torch" in p]
        if name == own:
            assert not torch_problems, report.problems
        else:  # asked by torch.version.cuda, whatever the local label says
            want = line.min_host_cuda or "none"
            assert torch_problems and want.split(".")[0] in torch_problems[0], report.problems
    if built is None:
        cu130 = check_install({"HERETIC_CUDA_LINE": "cu130"})
        assert "torch was built for CUDA none (a CPU build), not 13.0" in cu130.problems[0]


def test_version_check_fails_with_exit_7_and_says_why():
    bad = subprocess.run(
        [sys.executable, "-m", "heretic", "version", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_base_env(), "HERETIC_CUDA_LINE": "cu128"},
    )
    assert bad.returncode == 7, bad.stderr
    assert bad.stdout.startswith(f"heretic {__version__}") and "torch:" in bad.stdout
    assert "error: this installation cannot run heretic" in bad.stderr
    assert "unknown CUDA line 'cu128'" in bad.stderr


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")}


@pytest.mark.parametrize(
    ("args", "runs"),
    [
        ([], "heretic run"),
        (["--trials", "3"], "heretic run --trials 3"),
        (["version"], "heretic version"),
        (["health"], "heretic health"),
        (["status", "/w"], "heretic status /w"),
        (["echo", "hi"], "hi"),
    ],
)
def test_entrypoint_routes_arguments(tmp_path, args, runs):
    fake = tmp_path / "heretic"
    fake.write_text('#!/bin/sh\necho heretic "$@"\n')
    fake.chmod(0o755)
    out = subprocess.run(
        ["sh", str(ROOT / "entrypoint.sh"), *args],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout.strip() == runs


def test_readme_table_of_lines_matches_the_module():
    readme = (ROOT / "README.md").read_text()
    for line in LINES.values():
        if not line.published:
            continue
        row = next(r for r in readme.splitlines() if r.startswith(f"| `{line.name}`"))
        assert f"CUDA {line.min_host_cuda}" in row and f"`{default_image(line.name)}`" in row
