"""Shared fixtures. Tests run offline on the CPU; models are built locally, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The caller's HERETIC_* variables (a setting exported in the shell, .ci/run's own switches)
# must not change what the tests see: every one is removed before any test runs, except the
# harness's own switches, which only this file and the test helpers read.
HARNESS_ENV = ("HERETIC_TEST_CACHE", "HERETIC_REQUIRE_POSTGRES")
for _name in [n for n in os.environ if n.startswith("HERETIC_") and n not in HARNESS_ENV]:
    del os.environ[_name]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def heretic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session (HERETIC_TEST_CACHE reuses a trained demo model across runs)."""
    path = Path(os.environ.get("HERETIC_TEST_CACHE") or tmp_path_factory.mktemp("heretic-cache"))
    os.environ["HERETIC_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_model_dir(heretic_cache: Path) -> Path:
    from heretic.demo.model import ensure_demo_model

    return ensure_demo_model()


@pytest.fixture
def cli_env(heretic_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")}
    env.update(
        HERETIC_CACHE=str(heretic_cache),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="2",
    )
    return env


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (see tests/postgres_server.py)."""
    from postgres_server import start_server

    server = start_server()
    if isinstance(server, str):
        if os.environ.get("HERETIC_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"HERETIC_REQUIRE_POSTGRES=1 but {server}")
        pytest.skip(server)
    yield server
    server.stop()
