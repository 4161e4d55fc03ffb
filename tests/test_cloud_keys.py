"""Keys come from the environment or the providers' key files and never show in output."""

from __future__ import annotations

import pytest

from heretic.cloud.http import PreparedRequest
from heretic.cloud.keys import load_key, require_key
from heretic.errors import CloudError
from heretic.secrets import mask, redact


def test_environment_wins_over_files(tmp_path):
    (tmp_path / ".vast_api_key").write_text("from-file-123456789\n")
    assert (
        load_key("vast", {"VAST_API_KEY": " env-key-123456789 "}, tmp_path) == "env-key-123456789"
    )
    assert load_key("vast", {}, tmp_path) == "from-file-123456789"


def test_vast_config_dir_file_first(tmp_path):
    (tmp_path / ".config" / "vastai").mkdir(parents=True)
    (tmp_path / ".config" / "vastai" / "vast_api_key").write_text("cfg-key-123456789")
    (tmp_path / ".vast_api_key").write_text("old-key-123456789")
    assert load_key("vast", {}, tmp_path) == "cfg-key-123456789"


@pytest.mark.parametrize("text", ['[default]\napi_key = "rpa_A1"\n', 'apikey = "rpa_A1"\n'])
def test_runpod_config_toml(tmp_path, text):
    (tmp_path / ".runpod").mkdir()
    (tmp_path / ".runpod" / "config.toml").write_text(text)
    assert load_key("runpod", {}, tmp_path) == "rpa_A1"


def test_missing_key_names_the_variable(tmp_path):
    with pytest.raises(CloudError) as info:
        require_key("runpod", {}, tmp_path)
    assert "RUNPOD_API_KEY" in info.value.paragraph()


def test_mask_and_redact():
    secret = "hf_abcdefghijklmnopqrstuvwxyz"
    assert mask(secret) == "hf_****" and mask("short") == "****"
    assert secret not in redact(f"token={secret}!", [secret, None])


def test_prepared_request_description_masks_body_secrets():
    req = PreparedRequest(
        "PUT", "https://x/asks/1/", {}, {"env": {"HF_TOKEN": "hf_secretvalue123"}}
    )
    shown = req.describe(("hf_secretvalue123",))
    assert shown["json"]["env"]["HF_TOKEN"] == "hf_****"
    assert shown["headers"]["Authorization"] == "Bearer ****"
