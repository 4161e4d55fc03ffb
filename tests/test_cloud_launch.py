"""Launch planning: the environment the image gets, secrets, disk, offer choice."""

from __future__ import annotations

import pytest

from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.launch import LaunchOptions, choose_offer, plan_launch, settings_env
from heretic.cloud.records import Offer
from heretic.cloud.runpod import RunPodClient
from heretic.cloud.vast import VastClient
from heretic.errors import CloudError, ConfigError, TokenError

A100 = gpu_kind("A100-80GB")
TOKEN = "hf_abcdefghijklmnopqrstuvwx"


def opts(provider: str = "vast", **kw) -> LaunchOptions:
    return LaunchOptions(
        provider=provider, gpu=A100, model="meta-llama/Llama-3.1-8B-Instruct", **kw
    )


def test_settings_env():
    env = settings_env(opts(upload="me/out", settings={"trials": "300", "kl-cap": "0.4"}))
    assert env["HERETIC_MODEL"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert env["HERETIC_UPLOAD"] == "me/out" and env["HERETIC_SHUTDOWN_AFTER"] == "true"
    assert env["HERETIC_PROFILE"] == "auto" and env["HERETIC_TRIALS"] == "300"
    assert env["HERETIC_KL_CAP"] == "0.4"
    with pytest.raises(ConfigError, match="not a setting"):
        settings_env(opts(settings={"bogus": "1"}))
    with pytest.raises(ConfigError, match="own launch option"):
        settings_env(opts(settings={"shutdown_after": "false"}))


def test_vast_dry_run_masks_the_token_and_sends_nothing():
    client = VastClient(None, base_url="http://127.0.0.1:9/api/v0")
    plan = plan_launch(opts(upload="me/out"), client, n_params=None, hf_token=TOKEN, dry_run=True)
    shown = plan.describe(client)
    body = shown["launch_request"]["json"]
    assert body["env"]["HF_TOKEN"] == "hf_****" and TOKEN not in str(shown)
    assert body["runtype"] == "args" and body["disk"] == 150
    assert shown["launch_request"]["url"].endswith("/asks/OFFER_ID/")
    assert any("host's operator" in w for w in plan.warnings)
    assert [r.name for r in plan.secrets] == ["HF_TOKEN"]


def test_runpod_uses_the_secret_reference_not_the_token():
    client = RunPodClient(None, base_url="http://127.0.0.1:9/v2")
    plan = plan_launch(
        opts("runpod", offer_id="NVIDIA A100-SXM4-80GB"),
        client,
        n_params=8_000_000_000,
        hf_token=TOKEN,
        dry_run=True,
    )
    body = plan.describe(client)["launch_request"]["json"]
    assert body["env"]["HF_TOKEN"] == "{{ RUNPOD_SECRET_hf_token }}"
    assert body["gpu"]["id"] == "NVIDIA A100-SXM4-80GB" and body["disk"] == 30
    assert body["mounts"] == {"persistent": {"size": 70, "path": "/workspace"}}
    assert "args" not in body


def test_vast_upload_without_a_token_is_refused():
    client = VastClient(None, base_url="http://127.0.0.1:9/api/v0")
    with pytest.raises(TokenError):
        plan_launch(opts(upload="me/out"), client, n_params=None, hf_token=None)


def offer(i: str, price: float) -> Offer:
    return Offer("vast", i, "A100 SXM4", 1, 80, price, "rentable")


def test_choose_offer():
    offers = [offer("1", 1.0), offer("2", 1.5)]
    assert choose_offer(offers, opts()).offer_id == "1"
    assert choose_offer(offers, opts(offer_id="2")).offer_id == "2"
    with pytest.raises(CloudError, match="not among"):
        choose_offer(offers, opts(offer_id="3"))
    with pytest.raises(CloudError, match="No vast offer"):
        choose_offer([], opts(max_price=0.5))


def test_without_upload_the_launch_warns_that_the_machine_keeps_billing():
    client = VastClient(None, base_url="http://127.0.0.1:9/api/v0")
    plan = plan_launch(opts(), client, n_params=None, hf_token=TOKEN, dry_run=True)
    assert any("No --upload" in w and "heretic cloud stop" in w for w in plan.warnings)
    uploaded = plan_launch(
        opts(upload="me/out"), client, n_params=None, hf_token=TOKEN, dry_run=True
    )
    assert not any("No --upload" in w for w in uploaded.warnings)


def test_vast_account_token_sends_no_token():
    """Vast has account-level environment variables (POST /api/v0/secrets/): with
    --vast-account-token the launch sends no HF_TOKEN and needs none locally."""
    client = VastClient(None, base_url="http://127.0.0.1:9/api/v0")
    plan = plan_launch(
        opts(upload="me/out", vast_account_token=True),
        client,
        n_params=None,
        hf_token=None,
        offer=offer("1", 1.0),
    )  # no local token: still planned
    assert "HF_TOKEN" not in plan.spec.env and plan.spec.secrets == ()
    assert any("account's environment variables" in w for w in plan.warnings)
