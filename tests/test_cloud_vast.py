"""The Vast.ai client against a loopback server that answers like the Vast REST API."""

from __future__ import annotations

import httpx
import pytest
from fakes.fake_vast import VAST_KEY, FakeVast, Reply, vast_offer

from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.http import CreateUncertain
from heretic.cloud.records import LaunchSpec, Offer, OfferQuery
from heretic.cloud.vast import VastClient
from heretic.errors import CloudError

A100 = gpu_kind("A100-80GB")


@pytest.fixture()
def fake():
    with FakeVast() as server:
        yield server


def client(fake: FakeVast, key: str = VAST_KEY, sleeps: list[float] | None = None) -> VastClient:
    sleeps = [] if sleeps is None else sleeps
    return VastClient(key, base_url=fake.base, sleep=sleeps.append)


def test_search_sends_the_documented_filter_and_parses_offers(fake):
    offers = client(fake).search(OfferQuery(gpu=A100, max_price=1.5, min_disk_gb=100))
    body = fake.calls("POST", "/api/v0/bundles/")[0].body
    assert body["gpu_name"] == {"in": ["A100 SXM4", "A100 PCIE", "A100X"]}
    assert body["gpu_ram"] == {"gte": 79000}
    assert body["dph_total"] == {"lte": 1.5}
    assert body["disk_space"] == {"gte": 100}
    assert body["rentable"] == {"eq": True} and body["verified"] == {"eq": True}
    assert body["order"] == [["dph_total", "asc"]]
    assert [o.offer_id for o in offers] == ["102", "101"]
    assert offers[0].price_per_hour == 1.10 and offers[0].gpu_ram_gb == 80.0
    assert offers[0].location == "Sweden, SE"


def test_search_drops_offers_over_the_cap_even_if_the_server_sends_them(fake):
    fake.offers = [vast_offer(1, 0.9), vast_offer(2, 3.0)]
    offers = client(fake).search(OfferQuery(gpu=A100, max_price=1.0))
    assert [o.offer_id for o in offers] == ["1"]


def test_launch_body_runs_the_image_entrypoint(fake):
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    spec = LaunchSpec(
        image="ghcr.io/x/heretic:1", env={"HERETIC_MODEL": "org/m"}, disk_gb=80, label="heretic-m"
    )
    instance = c.launch(offer, spec)
    put = fake.calls("PUT", "/api/v0/asks/")[0]
    assert put.path == "/api/v0/asks/102/"
    assert put.body == {
        "client_id": "me",
        "image": "ghcr.io/x/heretic:1",
        "disk": 80,
        "env": {"HERETIC_MODEL": "org/m"},
        "runtype": "args",
        "label": "heretic-m",
        "target_state": "running",
    }
    assert instance.instance_id == "7777" and instance.state == "pending"


def test_status_maps_state_and_never_exposes_env(fake):
    inst = client(fake).status("555")
    assert (inst.status, inst.state, inst.price_per_hour) == ("running", "running", 1.12)
    assert "hf_s" not in repr(inst)
    fake.instance.update(
        actual_status="loading", status_msg="Error response from daemon: manifest unknown"
    )
    assert client(fake).status("555").state == "failed"


def test_logs_fetch_the_link_without_the_key(fake):
    sleeps: list[float] = []
    text = client(fake, sleeps=sleeps).logs("555", tail=50)
    assert text == "heretic: trial 3/200\n"
    assert fake.calls("PUT", "/api/v0/instances/request_logs/555/")[0].body == {"tail": "50"}
    log_gets = fake.calls("GET", "/logs/")
    assert len(log_gets) == 2 and all("authorization" not in r.headers for r in log_gets)
    assert len(sleeps) == 1  # one wait after the first 404


def test_terminate_deletes_the_instance(fake):
    client(fake).terminate("555")
    assert fake.calls("DELETE", "/api/v0/instances/555/")


def test_429_is_retried_with_retry_after(fake):
    fake.fail_queue = [
        Reply(429, {"error": "too_many_requests"}, {"Retry-After": "7"}),
        Reply(503, {"msg": "busy"}),
    ]
    sleeps: list[float] = []
    offers = client(fake, sleeps=sleeps).search(OfferQuery(gpu=A100))
    assert len(offers) == 2
    assert sleeps == [7.0, 4.0]  # Retry-After honoured, then exponential back-off
    assert len(fake.calls("POST", "/api/v0/bundles/")) == 3


def test_401_is_a_clear_error_without_the_key(fake):
    bad = "wrong-key-abcdefghijklmnop"
    with pytest.raises(CloudError) as info:
        client(fake, key=bad).search(OfferQuery(gpu=A100))
    text = info.value.paragraph()
    assert "HTTP 401" in text and "Invalid user key" in text and "VAST_API_KEY" in text
    assert bad not in text
    assert len(fake.requests) == 1  # not retried


def test_a_create_is_not_retried_on_a_server_error(fake):
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    fake.fail_queue = [Reply(500, {"msg": "internal"})]
    with pytest.raises(CloudError, match="HTTP 500"):
        c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l"))
    assert len(fake.calls("PUT", "/api/v0/asks/")) == 1


def test_unreachable_server_is_a_cloud_error():
    sleeps: list[float] = []
    c = VastClient(VAST_KEY, base_url="http://127.0.0.1:9/api/v0", sleep=sleeps.append, retries=2)
    with pytest.raises(CloudError, match="Could not reach vast"):
        c.search(OfferQuery(gpu=A100))
    assert len(sleeps) == 2


def test_base_url_from_environment(fake, monkeypatch):
    monkeypatch.setenv("HERETIC_VAST_API_URL", fake.base)
    VastClient(VAST_KEY).terminate("555")
    assert fake.calls("DELETE", "/api/v0/instances/555/")


def test_status_while_provisioning_is_pending_not_the_contract_state(fake):
    # actual_status is null until the container exists; cur_state already says "running".
    fake.instance.update(actual_status=None, cur_state="running")
    inst = client(fake).status("555")
    assert (inst.status, inst.state) == ("provisioning", "pending")
    # frozen: paused with the GPU still billed; not "exited" (which bills only storage).
    fake.instance.update(actual_status="frozen")
    assert client(fake).status("555").state == "paused"


def test_an_exited_instance_still_bills_its_gpu(fake):
    # docs.vast.ai: an exited container is not restarted and keeps its contract (cur_state
    # "running"), GPU included, until stopped or destroyed; only "stopped" bills storage only.
    fake.instance.update(actual_status="exited", cur_state="running")
    assert client(fake).status("555").state == "paused"
    fake.instance.update(actual_status="stopped", cur_state="stopped")
    assert client(fake).status("555").state == "exited"


def test_status_asks_for_own_instances_and_an_unknown_id_is_not_found(fake):
    inst = client(fake).status("999")
    assert (inst.state, inst.status) == ("not_found", "not found") and "wrong id" in inst.message
    assert fake.calls("GET", "/api/v0/instances/999/")[0].query == {"owner": ["me"]}


def test_offer_search_sends_vast_cli_defaults(fake):
    client(fake).search(OfferQuery(gpu_kind("A100-80GB")))
    body = fake.calls("POST", "/api/v0/bundles/")[0].body
    assert body["external"] == {"eq": False} and body["rented"] == {"eq": False}


def test_a_create_answered_with_a_5xx_is_uncertain(fake):
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    fake.fail_queue = [Reply(502, {"msg": "bad gateway"})]
    with pytest.raises(CreateUncertain) as info:
        c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l"))
    assert "HTTP 502" in info.value.message and "rented twice" in info.value.hint


def test_a_create_whose_answer_is_lost_is_uncertain_and_not_retried():
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        raise httpx.ReadTimeout("timed out", request=request)

    c = VastClient(
        VAST_KEY,
        base_url="https://vast.invalid/api/v0",
        sleep=lambda s: None,
        transport=httpx.MockTransport(handler),
    )
    offer = Offer("vast", "102", "A100 SXM4", 1, 80, 1.1, "rentable")
    with pytest.raises(CreateUncertain, match="may or may not have acted"):
        c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l"))
    assert sent == ["PUT /api/v0/asks/102/"]


def test_plain_text_429_without_retry_after_is_retried_with_back_off(fake):
    """Vast's documented rate limit: a per-endpoint minimum interval, answered with a
    plain-text 429 and no Retry-After."""
    fake.fail_queue = [
        Reply(
            429,
            raw=b"API requests too frequent endpoint threshold=1.2",
            headers={"Content-Type": "text/plain"},
        )
    ] * 2
    sleeps: list[float] = []
    assert len(client(fake, sleeps=sleeps).search(OfferQuery(gpu=A100))) == 2
    assert sleeps == [2.0, 4.0]


def test_a_create_answered_429_is_retried_because_it_was_not_carried_out(fake):
    fake.fail_queue = [
        Reply(429, raw=b"API requests too frequent", headers={"Content-Type": "text/plain"})
    ]
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    inst = c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l"))
    assert inst.instance_id == "7777" and len(fake.created) == 1


def test_a_request_vast_would_refuse_is_refused_by_the_fake(fake):
    """The fake holds requests to Vast's documented fields and units."""
    fake.allow_violations = True
    c = client(fake)
    for bad in (
        {"gpu_ram": {"gte": 80}},  # GB where Vast wants MB
        {"gpu_name": {"eq": "A100"}, "gpu_memory": {"gte": 79000}},  # not a field
        {"order": [["dph_total", "cheapest"]]},
    ):
        with pytest.raises(CloudError, match="HTTP 400"):
            c.api.call("POST", "/bundles/", body=bad)
    with pytest.raises(CloudError, match="HTTP 400"):
        c.api.call(
            "PUT", "/asks/102/", body={"image": "i", "runtype": "entrypoint"}, idempotent=False
        )
    assert len(fake.violations) == 4 and not fake.created
