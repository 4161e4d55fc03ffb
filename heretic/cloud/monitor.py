"""Watch the providers for a GPU kind and alert when its availability changes.

Guaranteed: one alert per change per provider (not-available -> available: "available";
available -> not: "gone"), never a repeat while nothing changes, also across restarts (the
last seen state is kept in a small JSON file, written atomically). A provider that fails to
answer keeps its last known state: an outage is not "gone". Failures back the polling off
exponentially (capped), every wait is jittered, and the process keeps constant memory: no
history is accumulated. The sleep function, the random source and the poll count are
injectable so tests run without waiting. With `on_available`, the first matching offer is
launched (new or already there) and the watch ends; a launch the provider refused is logged
and the watch goes on, but a launch whose outcome is unknown (`CreateUncertain`: the answer
was lost, or a 5xx) ends the watch with that error, because launching again could rent a
second machine. Every launch is recorded in the state file BEFORE its create is sent, so a
rerun of the same command (cron, a loop, systemd) does not rent again: a monitor makes at
most `max_launches` rentals (1 unless --max-launches N) over all its runs; a launch the
provider refused does not count.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heretic.atomic import write_json
from heretic.cloud.alerts import Alert, Sink
from heretic.cloud.http import CreateUncertain
from heretic.cloud.records import Instance, Offer, OfferQuery, Provider
from heretic.errors import CloudError, HereticError

Log = Callable[[str], None]
Launcher = Callable[[Offer], Instance]


@dataclass(frozen=True)
class ProviderState:
    available: bool = False
    offers: int = 0
    best_price: float | None = None
    offer_id: str | None = None


@dataclass(frozen=True)
class MonitorResult:
    polls: int
    alerts: int
    launched: Instance | None = None


def load_state(path: Path | None, gpu: str) -> dict[str, ProviderState]:
    """The state saved by an earlier watch of the same GPU kind; empty if none or unreadable."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("gpu") != gpu:
            return {}
        return {name: ProviderState(**raw) for name, raw in data.get("providers", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # a damaged state file costs at most one repeated alert


def load_launches(path: Path | None, gpu: str) -> list[dict[str, Any]]:
    """The launches an earlier run of this monitor recorded (a damaged file: none)."""
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("gpu") != gpu:
            return []
        return [dict(x) for x in data.get("launches") or [] if isinstance(x, dict)]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def counted(launches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Launches that may have rented a machine (sent, and not refused by the provider)."""
    return [x for x in launches if not x.get("refused")]


def save_state(
    path: Path,
    gpu: str,
    states: Mapping[str, ProviderState],
    launches: list[dict[str, Any]] | None = None,
) -> None:
    data = {
        "gpu": gpu,
        "updated": _now(),
        "providers": {name: asdict(s) for name, s in states.items()},
        "launches": launches or [],
    }
    write_json(path, data)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _state_of(offers: list[Offer]) -> ProviderState:
    if not offers:
        return ProviderState()
    best = min(offers, key=lambda o: o.price_per_hour if o.price_per_hour is not None else 1e9)
    return ProviderState(True, len(offers), best.price_per_hour, best.offer_id)


class Monitor:
    def __init__(
        self,
        clients: Mapping[str, Provider],
        query: OfferQuery,
        *,
        sinks: list[Sink],
        log: Log,
        state_path: Path | None = None,
        interval_s: float = 300.0,
        jitter: float = 0.1,
        max_backoff_s: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_available: Launcher | None = None,
        max_launches: int = 1,
    ) -> None:
        self.clients = dict(clients)
        self.query = query
        self.sinks = sinks
        self.log = log
        self.state_path = state_path
        self.interval_s = interval_s
        self.jitter = jitter
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.on_available = on_available
        self.states: dict[str, ProviderState] = load_state(state_path, query.gpu.name)
        self.launches = load_launches(state_path, query.gpu.name)
        self.max_launches = max_launches
        self.failures = 0  # consecutive polls with at least one provider failing

    def _search(self, name: str, client: Provider) -> list[Offer] | None:
        try:
            return client.search(self.query)
        except HereticError as exc:
            self.log(f"{name}: poll failed: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a watch that runs for days must not die here
            self.log(f"{name}: poll failed: {type(exc).__name__}: {exc}")
        return None

    def _emit(self, alert: Alert) -> None:
        for sink in self.sinks:
            try:
                sink(alert)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not mute the others
                self.log(f"alert delivery failed: {exc}")

    def poll_once(self) -> tuple[list[Alert], list[Offer]]:
        """One round over all providers: the alerts sent, and every matching offer seen now."""
        alerts: list[Alert] = []
        current: list[Offer] = []
        failed = False
        for name, client in self.clients.items():
            offers = self._search(name, client)
            if offers is None:
                failed = True
                continue
            before = self.states.get(name, ProviderState())
            now = _state_of(offers)
            self.states[name] = now
            current.extend(offers)
            if now.available != before.available:
                alert = Alert(
                    "available" if now.available else "gone",
                    name,
                    self.query.gpu.name,
                    now.offers,
                    now.best_price,
                    now.offer_id,
                    _now(),
                )
                alerts.append(alert)
                self._emit(alert)
        self.failures = self.failures + 1 if failed else 0
        if self.state_path is not None:
            try:
                self._save()
            except OSError as exc:
                self.log(f"could not save monitor state to {self.state_path}: {exc}")
        return alerts, current

    def _save(self) -> None:
        if self.state_path is not None:
            save_state(self.state_path, self.query.gpu.name, self.states, self.launches)

    def launches_left(self) -> int:
        return self.max_launches - len(counted(self.launches))

    def check_launch_budget(self) -> None:
        """Before the first poll: a monitor whose rentals are spent does not start."""
        if self.on_available is None or self.launches_left() > 0:
            return
        last = counted(self.launches)[-1]
        raise CloudError(
            f"This monitor already launched {len(counted(self.launches))} time(s) (last: "
            f"{last.get('provider')} offer {last.get('offer_id')} at {last.get('at')}, instance "
            f"{last.get('instance_id') or 'unknown'}; recorded in {self.state_path}).",
            "It does not rent again on a rerun: check that machine with `heretic cloud "
            "status`, then pass --max-launches N to allow more rentals in all.",
        )

    def next_delay(self) -> float:
        base = min(self.interval_s * 2.0 ** min(self.failures, 16), self.max_backoff_s)
        if self.failures == 0:
            base = self.interval_s
        return max(0.0, base * (1 + float(self.rng.uniform(-self.jitter, self.jitter))))

    def _try_launch(self, offers: list[Offer]) -> Instance | None:
        if self.on_available is None or not offers:
            return None
        if self.launches_left() <= 0:
            return None
        offer = min(offers, key=lambda o: o.price_per_hour if o.price_per_hour is not None else 1e9)
        record: dict[str, Any] = {
            "at": _now(),
            "provider": offer.provider,
            "offer_id": offer.offer_id,
            "instance_id": None,
        }
        self.launches.append(record)
        # On disk before the create: a crash or a rerun from here on counts this launch.
        # Without a state file there is no record across reruns, so the launch is refused.
        if self.state_path is None:
            raise CloudError(
                "monitor --launch needs a state file to record its launch.", "Pass --state-file."
            )
        self._save()
        try:
            instance = self.on_available(offer)
        except CreateUncertain:
            raise  # the machine may be rented already: never try again on our own
        except HereticError as exc:
            record["refused"] = exc.message[:300]
            self._save()
            self.log(f"launch on {offer.provider} failed: {exc.paragraph()} Still watching.")
            return None
        record["instance_id"] = instance.instance_id
        self._save()
        self.log(f"launched {instance.provider} instance {instance.instance_id}")
        return instance

    def run(self, max_polls: int | None = None) -> MonitorResult:
        """Poll until `max_polls` rounds are done (None: for ever) or a launch succeeded."""
        self.check_launch_budget()
        polls = alerts = 0
        while max_polls is None or polls < max_polls:
            sent, current = self.poll_once()
            polls += 1
            alerts += len(sent)
            # Launch on any matching offer, not only a new one: a watch restarted while
            # offers are up must still start the run.
            launched = self._try_launch(current)
            if launched is not None:
                return MonitorResult(polls, alerts, launched)
            if max_polls is not None and polls >= max_polls:
                break
            self.sleep(self.next_delay())
        return MonitorResult(polls, alerts)


def summary(states: Mapping[str, ProviderState]) -> dict[str, Any]:
    return {name: asdict(state) for name, state in states.items()}
