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
    """The `case "${CUDA_LINE}"` branches of the torch step: line -> index URL."""
    return dict(re.findall(r"^\s+(\w+)\) index=(\S+) ;;", DOCKERFILE, flags=re.M))


def test_dockerfile_and_module_map_the_same_lines_to_the_same_index():
    assert dockerfile_lines() == {name: line.torch_index_url for name, line in LINES.items()}
    default = re.search(r"^ARG CUDA_LINE=(\S+)$", DOCKERFILE, flags=re.M)
    assert default and default.group(1) == DEFAULT_LINE
    # The torch pin comes from the lock file, with the line as its local version label.
    assert "torch==${version}+${CUDA_LINE}" in DOCKERFILE
    assert "sed -n 's/^torch==//p' image-constraints.txt" in DOCKERFILE
    assert re.search(
        r"^torch==\d+\.\d+\.\d+$", (ROOT / "image-constraints.txt").read_text(), flags=re.M
    )


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


def test_install_check_knows_the_line_of_this_torch():
    here = check_install({})  # outside the image: only the imports are checked
    assert here.ok, here.problems
    assert {"torch", "transformers", "accelerate", "bitsandbytes", "optuna"} <= set(here.versions)
    import torch

    label = torch.__version__.partition("+")[2]
    wrong = "cu130" if label != "cu130" else "cu126"
    report = check_install({"HERETIC_CUDA_LINE": wrong})
    assert not report.ok and any(wrong in p for p in report.problems)
    if label in LINES:  # e.g. the CPU wheel here: its own line passes the torch checks
        own = check_install({"HERETIC_CUDA_LINE": label})
        assert not [p for p in own.problems if "torch" in p], own.problems


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
