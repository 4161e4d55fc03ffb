"""The RunPod client against a loopback server that answers like RunPod's REST API v2."""

from __future__ import annotations

import pytest
from fakes.fake_runpod import RUNPOD_KEY, FakeRunPod, catalog_gpu
from fakes.fake_vast import Reply

from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.records import LaunchSpec, Offer, OfferQuery
from heretic.cloud.runpod import RunPodClient
from heretic.errors import CloudError

A100 = gpu_kind("A100-80GB")


@pytest.fixture()
def fake():
    with FakeRunPod() as server:
        yield server


def client(
    fake: FakeRunPod, key: str = RUNPOD_KEY, sleeps: list[float] | None = None
) -> RunPodClient:
    sleeps = [] if sleeps is None else sleeps
    return RunPodClient(key, base_url=fake.base, sleep=sleeps.append, log_idle_s=2.0)


def test_availability_query_and_parsing(fake):
    offers = client(fake).search(OfferQuery(gpu=A100))
    q = fake.calls("GET", "/v2/catalog/gpus")[0].query
    assert q["include"] == ["AVAILABILITY"] and q["product"] == ["POD"]
    assert q["cloud"] == ["SECURE"] and q["minCudaVersion"] == ["12.6"]
    assert [(o.offer_id, o.price_per_hour, o.availability) for o in offers] == [
        ("NVIDIA A100 80GB PCIe", 1.64, "HIGH"),
        ("NVIDIA A100-SXM4-80GB", 1.89, "LOW"),  # from the best data center
    ]


def test_none_stock_and_price_cap_filter_offers(fake):
    fake.gpus = [
        catalog_gpu("NVIDIA A100 80GB PCIe", "NONE", 1.64),
        catalog_gpu("NVIDIA A100-SXM4-80GB", "HIGH", 1.89),
    ]
    assert client(fake).search(OfferQuery(gpu=A100, max_price=1.8)) == []
    # No community price means the type is not offered in that tier at all.
    assert client(fake).search(OfferQuery(gpu=A100, cloud="COMMUNITY")) == []


def test_launch_body_keeps_the_entrypoint_and_uses_the_secret(fake):
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    env = {"HERETIC_MODEL": "org/m", "HF_TOKEN": "{{ RUNPOD_SECRET_hf_token }}"}
    spec = LaunchSpec(
        image="ghcr.io/x/heretic:1", env=env, disk_gb=90, label="heretic-m", volume_id="vol1"
    )
    pod = c.launch(offer, spec)
    body = fake.calls("POST", "/v2/pods")[0].body
    assert "args" not in body and "command" not in body
    assert body["image"] == "ghcr.io/x/heretic:1" and body["disk"] == 30
    assert body["gpu"] == {"id": "NVIDIA A100 80GB PCIe", "count": 1, "minCudaVersion": "12.6"}
    assert body["env"] == env and body["cloud"] == "SECURE"
    assert body["startSsh"] is False and body["startJupyter"] is False
    assert body["mounts"] == {"network": [{"volumeId": "vol1", "path": "/workspace"}]}
    # A network volume mounts only in its own data center: the create names it.
    assert body["dataCenterIds"] == ["EU-RO-1"]
    assert fake.calls("GET", "/v2/network-volumes/vol1")
    assert (pod.instance_id, pod.state) == ("pod_abc123", "running")


def test_status_logs_terminate(fake):
    c = client(fake)
    fake.pod_status = "EXITED"
    assert c.status("pod_abc123").state == "exited"
    assert c.logs("pod_abc123", tail=20) == "loading model\ntrial 1/200"
    assert fake.calls("GET", "/v2/pods/pod_abc123/logs")[0].query["tail"] == ["20"]
    c.terminate("pod_abc123")
    assert fake.calls("DELETE", "/v2/pods/pod_abc123")


def test_404_names_the_problem(fake):
    with pytest.raises(CloudError) as info:
        client(fake).terminate("pod_gone")
    assert "HTTP 404" in info.value.message and "pod pod_gone not found" in info.value.message


def test_an_unknown_pod_is_not_found_not_terminated(fake):
    # v2 deletes a terminated pod: GET /v2/pods/{id} answers 404 (RunPod REST v2 OpenAPI), as
    # for an id that never was; a typo must not read as "billing stopped".
    inst = client(fake).status("pod_gone")
    assert (inst.status, inst.state) == ("NOT FOUND", "not_found")
    assert "wrong id" in inst.message


def test_a_409_on_stop_means_not_valid_for_the_status(fake):
    from fakes.fake_runpod import problem
    from fakes.fake_vast import Reply

    fake.fail_queue.append(Reply(409, problem(409, "Conflict", "pod is not running")))
    with pytest.raises(CloudError) as info:
        client(fake).stop("pod_abc123")
    assert "not valid for the pod's current status" in info.value.message
    assert "network volume" not in info.value.paragraph()


def test_status_message_comes_from_v2_fields(fake):
    fake.pod_extra = {
        "dataCenterId": "US-TX-3",
        "cudaVersion": "12.8",
        "statusMessage": "not a v2 field",
    }
    inst = client(fake).status("pod_abc123")
    assert inst.message == "dataCenterId US-TX-3, cudaVersion 12.8"


def test_gpu_ids_are_runpods_published_ones():
    """RunPod's published GPU types (runpod/docs references/gpu-types.mdx, 2026-08-18): no
    A100 40GB; the H200 NVL exists."""
    assert gpu_kind("A100-40GB").runpod_ids == ()
    assert "NVIDIA H200 NVL" in gpu_kind("H200").runpod_ids
    assert "NVIDIA A100-SXM4-40GB" not in {
        i
        for k in ("A100-80GB", "A100-40GB", "H100-80GB", "H100-NVL", "H200", "L40S", "RTX-4090")
        for i in gpu_kind(k).runpod_ids
    }


def test_a_request_runpod_would_refuse_is_refused_by_the_fake(fake):
    """The fake holds requests to RunPod's published schema: an unknown field is a 422."""
    fake.allow_violations = True
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    with pytest.raises(CloudError, match="HTTP 422"):
        c.api.call(
            "POST",
            "/pods",
            body={"name": "x", "image": "i", "statusMessage": "x"},
            idempotent=False,
        )
    with pytest.raises(CloudError, match="HTTP 422"):
        # gpu.minCudaVersion must be major.minor on create (a bare major is refused).
        c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l", min_cuda="12"))
    assert len(fake.violations) == 2


def test_429_is_retried(fake):
    fake.fail_queue = [Reply(429, {"title": "Too Many Requests", "status": 429})]
    sleeps: list[float] = []
    assert client(fake, sleeps=sleeps).search(OfferQuery(gpu=A100))
    assert sleeps == [2.0]


def test_401_is_a_clear_error_without_the_key(fake):
    bad = "rpa_WRONGKEY0000000000000"
    with pytest.raises(CloudError) as info:
        client(fake, key=bad).terminate("pod_abc123")
    text = info.value.paragraph()
    assert "HTTP 401" in text and "The API key is invalid" in text and "RUNPOD_API_KEY" in text
    assert bad not in text


def test_422_quotes_each_validation_error(fake):
    # RFC 9457 document with the v2 API's list of validation strings.
    fake.fail_queue = [
        Reply(
            422,
            {
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "Request validation failed.",
                "errors": ["gpu.minCudaVersion: does not match pattern"],
            },
            headers={"Content-Type": "application/problem+json"},
        )
    ]
    c = client(fake)
    offer = Offer("runpod", "NVIDIA A100 80GB PCIe", "A100 80GB PCIe", 1, 80, 1.64, "HIGH")
    with pytest.raises(CloudError) as info:
        c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=50, label="l"))
    assert "HTTP 422" in info.value.message
    assert "gpu.minCudaVersion: does not match pattern" in info.value.message
    assert len(fake.calls("POST", "/v2/pods")) == 1


def test_workspace_survives_container_restarts_without_a_network_volume(fake):
    # RunPod wipes the container disk on every restart; the study and the done marker live
    # in /workspace, so it must be a pod volume sized for the run.
    c = client(fake)
    offer = c.search(OfferQuery(gpu=A100))[0]
    c.launch(offer, LaunchSpec(image="i", env={}, disk_gb=120, label="l"))
    body = fake.calls("POST", "/v2/pods")[0].body
    assert body["mounts"] == {"persistent": {"size": 120, "path": "/workspace"}}
    assert body["disk"] == 30


def test_a_kind_runpod_does_not_rent_is_refused_before_any_request():
    from heretic.cloud.launch import LaunchOptions, plan_launch

    opts = LaunchOptions(provider="runpod", gpu=gpu_kind("A100-40GB"), model="org/m")
    with pytest.raises(CloudError, match="RunPod does not rent A100-40GB"):
        plan_launch(
            opts,
            RunPodClient("k", base_url="http://127.0.0.1:9"),
            n_params=None,
            hf_token=None,
            dry_run=True,
        )
