"""`heretic cloud watch`: the user's machine ends a rental past --max-hours, or a Vast
instance whose container exited (Vast keeps its GPU billed and never restarts it), against
the loopback fakes (stop: RunPod REST v2 POST /v2/pods/{id}/action {"action": "stop"}; Vast
PUT /api/v0/instances/{id}/ {"state": "stopped"}, as vast-cli sends it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fakes.fake_runpod import RUNPOD_KEY
from fakes.fake_vast import VAST_KEY
from test_lifecycle_failure import POD, STOP, RunPodWithActions, VastWithStop, provider_calls
from typer.testing import CliRunner

from heretic.cli.app import app
from heretic.cloud.instance_watch import record_launch, watch_instance
from heretic.cloud.records import Instance
from heretic.cloud.runpod import RunPodClient
from heretic.cloud.vast import VastClient


def test_max_hours_ends_the_rental_from_cloud_watch(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    now = [datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp()]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with RunPodWithActions() as fake:
        client = RunPodClient(RUNPOD_KEY, base_url=fake.base)
        # The launch recorded here: 2 h deadline; polls every 30 min.
        record_launch(Instance("runpod", POD, "RUNNING", "running"), "2026-12-02T01:00:00Z", 2.0)
        result = watch_instance(
            client,
            POD,
            max_hours=None,
            since=None,
            action="stop",
            log=lambda line: None,
            interval_s=1800,
            sleep=sleep,
            clock=lambda: now[0],
        )
        assert result.ended and "--max-hours 2" in result.reason
        assert waits == [1800.0] * 4  # polls at 0, 0.5, 1, 1.5 and 2 h: ended at the fifth
        calls = provider_calls(fake)
        assert calls[-1] == STOP["runpod"] and len(calls) == 6
        # The next poll sees it EXITED (storage only): nothing more to do.
        again = watch_instance(
            client, POD, max_hours=2, since=None, action="stop", log=print, max_polls=1
        )
        assert not again.ended and "no GPU billing" in again.reason


def test_cloud_watch_stops_an_exited_vast_instance(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with VastWithStop() as fake:
        monkeypatch.setenv("HERETIC_VAST_API_URL", fake.base)
        monkeypatch.setenv("VAST_API_KEY", VAST_KEY)
        fake.instance.update(actual_status="exited", cur_state="running")
        status = CliRunner().invoke(app, ["cloud", "status", "--provider", "vast", "555"])
        assert status.exit_code == 0 and "still bills its GPU" in status.stderr
        result = CliRunner().invoke(
            app, ["cloud", "watch", "--provider", "vast", "555", "--max-polls", "1"]
        )
        assert result.exit_code == 0, result.output
        assert provider_calls(fake)[-1] == STOP["vast"]
        assert "exited and Vast keeps billing" in result.stderr


def test_cloud_watch_since_a_past_launch_ends_it_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    since = (datetime.now(UTC) - timedelta(hours=3)).isoformat()
    with VastWithStop() as fake:
        client = VastClient(VAST_KEY, base_url=fake.base)
        result = watch_instance(
            client, "555", max_hours=2, since=since, action="destroy", log=print, max_polls=1
        )
    assert result.ended and provider_calls(fake)[-1][0] == "DELETE"
