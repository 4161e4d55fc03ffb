"""Settings layers: CLI > HERETIC_* env > --set > --config > profile > demo defaults > defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from heretic.config.settings import Settings
from heretic.config.sources import ENV_PREFIX, NON_SETTING_ENV, env_layer, parse_value
from heretic.errors import ConfigError
from heretic.preflight.resolve import resolve_settings


def test_precedence_of_every_layer(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("kl_cap = 0.3\ntrials = 7\nmax_response_tokens = 20\nseed = 5\n")
    env = {"HERETIC_TRIALS": "9", "HERETIC_SEED": "6"}
    s = resolve_settings(
        {"trials": 11, "profile": "gpu-24gb"},
        config_path=config,
        environ=env,
        assignments=["seed=8"],
    ).settings
    assert s.trials == 11  # CLI beats env
    assert s.seed == 8  # --set beats env
    assert s.max_response_tokens == 20  # config beats profile
    assert s.kl_cap == 0.3  # config beats defaults
    assert s.device_map == "cuda:0"  # from the profile
    demo = resolve_settings({}, environ={}).settings
    assert demo.is_demo and demo.trials == 50 and demo.device_map == "cpu"


def test_env_and_set_values_are_parsed_by_type() -> None:
    layer = env_layer(
        {
            "HERETIC_MAX_WEIGHT": "0.9,1.2",
            "HERETIC_COMPONENTS": "attention",
            "HERETIC_REFUSAL_MARKERS": '["sorry", "cannot"]',
            "PATH": "/bin",
        }
    )
    assert layer["max_weight"] == {"low": 0.9, "high": 1.2}
    assert layer["components"] == ["attention"]
    assert layer["refusal_markers"] == ["sorry", "cannot"]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"HERETIC_NO_SUCH": "1"}, "does not name a setting"),
        ({"HERETIC_MAX_WEIGHT": "1.5"}, "range"),
        ({"HERETIC_KL_CAP": "zero"}, "kl_cap"),
        ({"HERETIC_MAX_WEIGHT": "1.5,0.2"}, "above high"),
    ],
)
def test_bad_values_are_config_errors(env, needle) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, environ=env)
    assert needle in err.value.paragraph()


def test_heretics_own_variables_are_not_read_as_settings() -> None:
    # .ci/run's documented switch and the harness's own: not settings, and no error either.
    env = {"HERETIC_SKIP_IMAGE_TEST": "1", "HERETIC_REQUIRE_POSTGRES": "1", "HERETIC_TRIALS": "3"}
    assert env_layer(env) == {"trials": "3"}


REPO = Path(__file__).resolve().parents[1]
# Names that look like variables but are not read from the environment.
NOT_VARIABLES = {"HERETIC_DEMO_COMPLETE"}  # the demo model's completion marker file


def test_every_heretic_variable_the_code_and_scripts_read_is_known() -> None:
    """Each HERETIC_* name in the package, the scripts, CI and the image is a setting or one of
    NON_SETTING_ENV, so the settings loader never calls heretic's own variable unknown."""
    places = [REPO / "heretic", REPO / "scripts", REPO / ".ci", REPO / ".github", REPO / "tests"]
    files = [p for place in places for p in place.rglob("*") if p.is_file()]
    files += [REPO / "entrypoint.sh", REPO / "Dockerfile"]
    names: dict[str, Path] = {}
    for path in files:
        if path.suffix in (".pyc", ".png", ".safetensors") or path.name == "test_config.py":
            continue
        for name in re.findall(r"\bHERETIC_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")):
            names.setdefault(name, path)
    settings = {ENV_PREFIX + key.upper() for key in Settings.model_fields}
    unknown = {
        name: str(path.relative_to(REPO))
        for name, path in names.items()
        if name not in settings | NON_SETTING_ENV | NOT_VARIABLES
    }
    assert unknown == {}
    assert "HERETIC_SKIP_IMAGE_TEST" in names and "HERETIC_REQUIRE_POSTGRES" in names


def test_the_suite_does_not_depend_on_the_callers_heretic_variables(tmp_path: Path) -> None:
    # The README's test command with its documented switch, and a stray setting in the shell:
    # the tests that read the environment still pass (tests/conftest.py clears HERETIC_*).
    env = {
        **os.environ,
        "HERETIC_SKIP_IMAGE_TEST": "1",
        "HERETIC_KL_CAP": "not-a-number",
        "HERETIC_NO_SUCH_SETTING": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests" / "test_preflight_report.py"),
            "-k",
            "cli_preflight_json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout


def test_unknown_keys_in_a_config_file_are_errors(tmp_path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("trails = 3\n")
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, config_path=config, environ={})
    assert "trails" in err.value.message
    with pytest.raises(ConfigError):
        parse_value("nope", "1")


def test_secrets_are_masked_in_dumps_written_to_disk(tmp_path) -> None:
    from heretic.config.settings import Settings
    from heretic.run.worker_pool import settings_file, worker_settings

    s = Settings(
        notify="https://discord.com/api/webhooks/123/SECRET",
        storage="postgresql://heretic:pa55word@db.example:5432/study",
        workers=2,
    )
    dumped = str(s.public_dump())
    assert "SECRET" not in dumped and "pa55word" not in dumped
    assert s.public_dump()["storage"] == "postgresql://heretic:****@db.example:5432/study"
    data = worker_settings(s)
    assert "pa55word" not in str(data) and "SECRET" not in str(data)
    path = tmp_path / "w.json"
    import json

    path.write_text(json.dumps(data))
    import os

    os.environ["HERETIC_STORAGE"] = s.storage or ""
    try:
        assert settings_file(path).storage == s.storage  # the worker gets it by environment
    finally:
        del os.environ["HERETIC_STORAGE"]
