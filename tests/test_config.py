"""Settings layers: CLI > HERETIC_* env > --set > --config > profile > demo defaults > defaults."""

from __future__ import annotations

import pytest

from heretic.config.sources import env_layer, parse_value
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
