"""The availability monitor against scripted provider answers on loopback servers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.fake_registry import FakeRegistry
from fakes.fake_runpod import RUNPOD_KEY, FakeRunPod, catalog_gpu
from fakes.fake_vast import VAST_KEY, FakeVast, Reply, vast_offer

from heretic.cloud.alerts import Alert, webhook_sink
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.http import CreateUncertain
from heretic.cloud.monitor import Monitor
from heretic.cloud.records import Instance, Offer, OfferQuery
from heretic.cloud.runpod import RunPodClient
from heretic.cloud.vast import VastClient
from heretic.errors import CloudError

A100 = gpu_kind("A100-80GB")
NONE: list = []
SOME = [vast_offer(201, 1.30), vast_offer(202, 1.25)]


@pytest.fixture()
def vast():
    with FakeVast() as server:
        yield server


def make_monitor(clients, tmp_path, sleeps, alerts, logs, **kw) -> Monitor:
    return Monitor(
        clients,
        OfferQuery(gpu=A100, max_price=2.0),
        sinks=[alerts.append],
        log=logs.append,
        state_path=tmp_path / "state.json",
        interval_s=300,
        sleep=sleeps.append,
        rng=random.Random(0),
        **kw,
    )


def vast_client(server, sleeps):
    return VastClient(VAST_KEY, base_url=server.base, sleep=sleeps.append, retries=0)


def test_alerts_exactly_on_changes(vast, tmp_path):
    vast.search_script = [NONE, NONE, SOME, SOME, NONE, SOME]
    sleeps: list[float] = []
    alerts: list[Alert] = []
    logs: list[str] = []
    mon = make_monitor({"vast": vast_client(vast, sleeps)}, tmp_path, sleeps, alerts, logs)
    result = mon.run(max_polls=6)
    assert [(a.event, a.provider, a.offers, a.best_price, a.offer_id) for a in alerts] == [
        ("available", "vast", 2, 1.25, "202"),
        ("gone", "vast", 0, None, None),
        ("available", "vast", 2, 1.25, "202"),
    ]
    assert result.polls == 6 and result.alerts == 3 and result.launched is None
    assert len(sleeps) == 5 and all(270 <= s <= 330 for s in sleeps)  # jittered, no backoff
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["gpu"] == "A100-80GB" and saved["providers"]["vast"]["available"] is True


def test_state_survives_a_restart(vast, tmp_path):
    vast.search_script = [SOME, SOME]
    alerts: list[Alert] = []
    make_monitor({"vast": vast_client(vast, [])}, tmp_path, [], alerts, []).run(max_polls=1)
    make_monitor({"vast": vast_client(vast, [])}, tmp_path, [], alerts, []).run(max_polls=1)
    assert [a.event for a in alerts] == ["available"]  # the second watch saw no change


def test_network_errors_keep_state_and_back_off(vast, tmp_path):
    vast.search_script = [SOME, SOME, SOME]
    sleeps: list[float] = []
    alerts: list[Alert] = []
    logs: list[str] = []
    mon = make_monitor({"vast": vast_client(vast, sleeps)}, tmp_path, sleeps, alerts, logs)
    mon.poll_once()
    vast.fail_queue = [Reply(502, {"msg": "bad gateway"}), Reply(502, {"msg": "bad gateway"})]
    mon.run(max_polls=3)  # fail, fail, ok
    assert [a.event for a in alerts] == ["available"]  # an outage is not "gone"
    assert sum("poll failed" in line and "HTTP 502" in line for line in logs) == 2
    assert 540 <= sleeps[0] <= 660 and 1080 <= sleeps[1] <= 1320  # doubled, then doubled


def test_a_crashing_provider_does_not_stop_the_others(vast, tmp_path):
    class Broken:
        name = "runpod"

        def search(self, query):
            raise httpx.ReadError("connection reset")

        def close(self):
            pass

    vast.search_script = [SOME]
    alerts: list[Alert] = []
    logs: list[str] = []
    mon = make_monitor(
        {"runpod": Broken(), "vast": vast_client(vast, [])}, tmp_path, [], alerts, logs
    )
    mon.run(max_polls=1)
    assert [a.provider for a in alerts] == ["vast"]
    assert any("runpod: poll failed: ReadError" in line for line in logs)


def test_both_providers_alert_independently(vast, tmp_path):
    with FakeRunPod() as runpod:
        runpod.search_script = [
            [catalog_gpu("NVIDIA A100 80GB PCIe", "NONE", 1.64)],
            [catalog_gpu("NVIDIA A100 80GB PCIe", "LOW", 1.64)],
        ]
        vast.search_script = [SOME, SOME]
        rp = RunPodClient(RUNPOD_KEY, base_url=runpod.base, retries=0)
        alerts: list[Alert] = []
        mon = make_monitor({"vast": vast_client(vast, []), "runpod": rp}, tmp_path, [], alerts, [])
        mon.run(max_polls=2)
    assert [(a.provider, a.event) for a in alerts] == [
        ("vast", "available"),
        ("runpod", "available"),
    ]


def test_launch_on_first_offer_and_stop(vast, tmp_path):
    vast.search_script = [NONE, SOME, SOME]
    launched: list[Offer] = []
    attempts = iter([CloudError("offer taken"), None])

    def launcher(offer: Offer) -> Instance:
        outcome = next(attempts)
        if outcome is not None:
            raise outcome
        launched.append(offer)
        return Instance("vast", "9001", "created", "pending")

    logs: list[str] = []
    mon = make_monitor(
        {"vast": vast_client(vast, [])}, tmp_path, [], [], logs, on_available=launcher
    )
    result = mon.run(max_polls=10)
    assert result.launched is not None and result.launched.instance_id == "9001"
    assert result.polls == 3  # failed launch on poll 2 was logged; poll 3 launched
    assert [o.offer_id for o in launched] == ["202"]  # the cheapest
    assert any("launch on vast failed" in line for line in logs)


def test_webhook_receives_json_and_failures_are_logged(vast, tmp_path):
    posted: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(500 if len(posted) > 1 else 200)

    sink = webhook_sink("https://hooks.example/T0KEN", transport=httpx.MockTransport(handler))
    vast.search_script = [SOME, NONE]
    logs: list[str] = []
    mon = Monitor(
        {"vast": vast_client(vast, [])},
        OfferQuery(gpu=A100),
        sinks=[sink],
        log=logs.append,
        state_path=None,
        sleep=lambda s: None,
    )
    mon.run(max_polls=2)
    assert [p["event"] for p in posted] == ["available", "gone"]
    assert posted[0]["text"].startswith("heretic: A100-80GB AVAILABLE on vast")
    assert any("webhook answered HTTP 500" in line for line in logs)
    assert not any("T0KEN" in line for line in logs)


class Flapping:
    """An in-process provider whose offers come and go on every poll (no network)."""

    name = "vast"

    def __init__(self) -> None:
        self.n = 0

    def search(self, query: OfferQuery) -> list[Offer]:
        self.n += 1
        return [Offer("vast", str(self.n), "A100 SXM4", 1, 80, 1.0, "rentable")] * (self.n % 2)

    def close(self) -> None:
        pass


def test_memory_stays_flat_over_thousands_of_polls(tmp_path):
    import gc
    import tracemalloc

    counted = [0]

    def sink(alert: Alert) -> None:
        counted[0] += 1

    mon = Monitor(
        {"vast": Flapping()},
        OfferQuery(gpu=A100),
        sinks=[sink],
        log=lambda line: None,
        state_path=tmp_path / "s.json",
        sleep=lambda s: None,
        rng=random.Random(0),
    )
    tracemalloc.start()
    try:
        mon.run(max_polls=200)  # warm up caches and interned strings
        gc.collect()  # json.dump leaves short-lived reference cycles: not growth
        before = tracemalloc.get_traced_memory()[0]
        mon.run(max_polls=1500)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert counted[0] == 1700  # every poll flips availability: one alert each
    assert grown < 48_000, f"monitor memory grew by {grown} bytes over 1500 polls"


def test_state_file_is_replaced_atomically_and_a_bad_folder_does_not_stop_the_watch(vast, tmp_path):
    vast.search_script = [SOME, NONE]
    state = tmp_path / "state.json"
    logs: list[str] = []
    mon = make_monitor({"vast": vast_client(vast, [])}, tmp_path, [], [], logs)
    mon.run(max_polls=1)
    first = state.stat().st_ino
    mon.run(max_polls=1)
    assert state.stat().st_ino != first  # a new file renamed over the old one, not rewritten
    assert json.loads(state.read_text())["providers"]["vast"]["available"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp leftovers
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    mon.state_path = blocked / "state.json"
    vast.search_script = [SOME]
    alerts_before = len(logs)
    mon.run(max_polls=1)
    assert any("could not save monitor state" in line for line in logs[alerts_before:])


def test_a_launch_that_may_have_happened_ends_the_watch(vast, tmp_path):
    vast.search_script = [SOME, SOME, SOME]
    calls: list[Offer] = []

    def launcher(offer: Offer) -> Instance:
        calls.append(offer)
        raise CreateUncertain("vast may or may not have acted on PUT .../asks/202/", "check")

    mon = make_monitor({"vast": vast_client(vast, [])}, tmp_path, [], [], [], on_available=launcher)
    with pytest.raises(CreateUncertain):
        mon.run(max_polls=3)
    assert len(calls) == 1  # never a second try that could rent a second machine


def test_monitor_launch_watches_with_the_launch_filter(vast, tmp_path, monkeypatch):
    """The monitor asks for what the launch needs (disk, CUDA, price with storage), so the
    offer it launches on is one the launch can use: same disk in the search and the create."""
    import io

    from heretic.cloud.watch import WatchOptions, run_watch

    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    monkeypatch.setenv("HERETIC_VAST_API_URL", vast.base)
    monkeypatch.setenv("HF_TOKEN", "hf_monitorLaunchToken0123456789")
    with FakeRegistry() as registry:
        opts = WatchOptions(
            provider="vast",
            max_price=2.0,
            state_file=tmp_path / "s.json",
            max_polls=1,
            launch=True,
            model="org/m",
            upload="me/m",
            disk_gb=240,
            bell=False,
            image=registry.image(),
        )
        result = run_watch(
            opts, log=lambda line: None, bell_stream=io.StringIO(), sleep=lambda s: None
        )
    assert result.launched is not None
    search = vast.calls("POST", "/api/v0/bundles/")[0].body
    assert search["disk_space"] == {"gte": 240} and search["allocated_storage"] == 240
    assert search["cuda_max_good"] == {"gte": 12.6} and search["dph_total"] == {"lte": 2.0}
    assert vast.calls("PUT", "/api/v0/asks/")[0].body["disk"] == 240


def _launch_watch(registry: FakeRegistry, state: Path, **extra: Any) -> Any:
    from heretic.cloud.watch import WatchOptions

    base: dict[str, Any] = {
        "provider": "vast",
        "state_file": state,
        "max_polls": 1,
        "launch": True,
        "model": "org/m",
        "disk_gb": 100,
        "bell": False,
        "image": registry.image(),
    }
    return WatchOptions(**{**base, **extra})


def test_a_rerun_monitor_does_not_rent_twice(vast, tmp_path, monkeypatch):
    """cron/systemd run `monitor --launch` again: the launch recorded before the first create
    stops the second rental; --max-launches 2 allows exactly one more."""
    import io

    from heretic.cloud.watch import run_watch

    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    monkeypatch.setenv("HERETIC_VAST_API_URL", vast.base)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    state = tmp_path / "s.json"

    def watch(**extra: Any) -> Any:
        return run_watch(
            _launch_watch(registry, state, **extra),
            log=lambda line: None,
            bell_stream=io.StringIO(),
            sleep=lambda s: None,
        )

    with FakeRegistry() as registry:
        assert watch().launched is not None
        recorded = json.loads(state.read_text())["launches"]
        assert [(x["provider"], x["instance_id"]) for x in recorded] == [("vast", "7777")]
        with pytest.raises(CloudError, match="already launched 1 time"):
            watch()
        assert len(vast.calls("PUT", "/api/v0/asks/")) == 1
        assert watch(max_launches=2).launched is not None
        with pytest.raises(CloudError, match="already launched 2 time"):
            watch(max_launches=2)
    assert len(vast.calls("PUT", "/api/v0/asks/")) == 2


def test_the_launch_is_on_disk_before_the_create_is_sent(vast, tmp_path):
    """A create whose answer is lost still counts: the record was written before it."""
    state = tmp_path / "s.json"
    seen: list[list[dict[str, Any]]] = []

    def launcher(offer: Offer) -> Instance:
        seen.append(json.loads(state.read_text())["launches"])
        raise CreateUncertain("no answer to the create", "look in the console")

    mon = Monitor(
        {"vast": VastClient(VAST_KEY, base_url=vast.base)},
        OfferQuery(gpu_kind("A100-80GB")),
        sinks=[],
        log=lambda line: None,
        state_path=state,
        on_available=launcher,
    )
    with pytest.raises(CreateUncertain):
        mon.run(max_polls=1)
    assert seen and seen[0][0]["provider"] == "vast" and seen[0][0]["instance_id"] is None
    again = Monitor(
        {"vast": VastClient(VAST_KEY, base_url=vast.base)},
        OfferQuery(gpu_kind("A100-80GB")),
        sinks=[],
        log=lambda line: None,
        state_path=state,
        on_available=launcher,
    )
    with pytest.raises(CloudError, match="already launched"):
        again.run(max_polls=1)


def test_monitor_launch_with_a_missing_image_fails_before_polling(vast, tmp_path, monkeypatch):
    import io

    from heretic.cloud.watch import run_watch

    monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
    monkeypatch.setenv("HERETIC_VAST_API_URL", vast.base)
    with FakeRegistry() as registry:
        opts = _launch_watch(registry, tmp_path / "s.json", image=registry.image("9.9.9-cu126"))
        with pytest.raises(CloudError, match="does not exist"):
            run_watch(opts, log=lambda line: None, bell_stream=io.StringIO(), sleep=lambda s: None)
    assert vast.requests == []
