"""`heretic cloud watch ID`: from the user's machine, end a rental that bills for nothing.

The container ends its own rental (heretic/lifecycle/); this is the outside line for when it
cannot: a container that hangs, never starts (an image stuck at Vast's "loading"), or whose
self-termination the provider refused. Every poll reads the instance; the watch ends it
(`--action stop`, the default, keeps the disk; `destroy` deletes it) when
- `--max-hours` has passed since the launch (the launch time recorded locally by
  `heretic cloud launch`, else `--since`, else the watch's own start), or
- on Vast.ai the container has exited: Vast never restarts it and keeps billing the GPU.
It stops watching when the instance bills no GPU any more (stopped/exited on RunPod, not found).
Polls are minutes apart (Vast limits calls per endpoint); the clock and sleep are injectable.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from heretic.atomic import write_json
from heretic.cloud.records import Instance, Provider

Action = Literal["stop", "destroy"]
Log = Callable[[str], None]


def launches_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "heretic" / "launches"


def record_launch(instance: Instance, launched_at: str, max_hours: float | None) -> Path:
    """Kept on the user's machine so `cloud watch` knows when the rental began."""
    path = launches_dir() / f"{instance.provider}-{instance.instance_id}.json"
    write_json(
        path,
        {
            "provider": instance.provider,
            "instance_id": instance.instance_id,
            "launched_at": launched_at,
            "max_hours": max_hours,
        },
    )
    return path


def read_launch(provider: str, instance_id: str) -> dict[str, Any]:
    path = launches_dir() / f"{provider}-{instance_id}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _timestamp(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class WatchResult:
    polls: int
    ended: bool  # the watch asked the provider to end it
    last: Instance | None
    reason: str


def _no_gpu_billing(instance: Instance) -> bool:
    return instance.state in ("exited", "terminated", "not_found")


def _vast_exited(instance: Instance) -> bool:
    return instance.provider == "vast" and instance.status == "exited"


def watch_instance(
    client: Provider,
    instance_id: str,
    *,
    max_hours: float | None,
    since: str | None,
    action: Action,
    log: Log,
    interval_s: float = 300.0,
    max_polls: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> WatchResult:
    record = read_launch(client.name, instance_id)
    recorded = record.get("max_hours")
    hours = max_hours if max_hours is not None else (float(recorded) if recorded else None)
    start = _timestamp(since) or _timestamp(record.get("launched_at")) or clock()
    deadline = start + hours * 3600.0 if hours else None
    polls = 0
    last: Instance | None = None
    while max_polls is None or polls < max_polls:
        last = client.status(instance_id)
        polls += 1
        if _no_gpu_billing(last):
            return WatchResult(polls, False, last, f"{last.status}: no GPU billing any more")
        reason = ""
        if deadline is not None and clock() >= deadline:
            reason = f"--max-hours {hours:g} passed since the launch"
        elif _vast_exited(last):
            reason = "the container exited and Vast keeps billing its GPU (it never restarts it)"
        if reason:
            log(f"{client.name} {instance_id}: {reason}: asking to {action} it.")
            (client.stop if action == "stop" else client.terminate)(instance_id)
            return WatchResult(polls, True, last, reason)
        left = "" if deadline is None else f", {max(deadline - clock(), 0) / 3600:.1f} h left"
        log(f"{client.name} {instance_id}: {last.status}{left}.")
        if max_polls is not None and polls >= max_polls:
            break
        sleep(interval_s)
    return WatchResult(polls, False, last, "poll limit reached")
