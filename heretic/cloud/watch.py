"""`heretic cloud monitor` assembled: clients, alert sinks, state file and optional launcher.

Kept apart from `monitor.py` (the loop) so the loop stays testable with injected pieces;
this module only wires the real ones from the command's options.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from heretic.cloud import launch as launch_module
from heretic.cloud.alerts import Sink, bell_sink, log_sink, webhook_sink
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.cloud.launch import (
    LaunchOptions,
    execute_launch,
    hf_token_from_environment,
    plan_launch,
    token_env,
    with_max_hours,
)
from heretic.cloud.monitor import Monitor, MonitorResult
from heretic.cloud.offer_filter import offer_query
from heretic.cloud.providers import make_client, provider_names
from heretic.cloud.records import Instance, Offer, Provider
from heretic.errors import CloudError, HereticError
from heretic.image import min_host_cuda


@dataclass(frozen=True)
class WatchOptions:
    gpu: str = "A100-80GB"
    max_price: float | None = None
    provider: str = "all"
    interval_s: float = 300.0
    notify: str | None = None
    bell: bool = True
    state_file: Path | None = None
    max_polls: int | None = None
    launch: bool = False
    model: str | None = None
    upload: str | None = None
    image: str | None = None
    disk_gb: int | None = None
    profile: str = "auto"
    settings: Mapping[str, str] = field(default_factory=dict)
    runpod_secret: str = "hf_token"
    vast_account_token: bool = False
    hf_token_from_login: bool = False
    allow_plain_secrets: bool = False
    max_hours: float | None = None
    max_launches: int = 1
    check_image: bool = True


def default_state_file(gpu: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "heretic" / f"monitor-{gpu}.json"


def _clients(
    choice: str, log: Callable[[str], None], sleep: Callable[[float], None]
) -> dict[str, Provider]:
    clients: dict[str, Provider] = {}
    for name in provider_names(choice):
        try:
            # Few retries: the next poll is the retry (Vast limits calls per endpoint).
            clients[name] = make_client(name, sleep=sleep, retries=2)
        except CloudError as exc:
            if choice != "all":
                raise
            log(f"{name} not watched: {exc.message}")
    if not clients:
        raise CloudError(
            "No provider can be watched: no API key was found for any.",
            "Export VAST_API_KEY and/or RUNPOD_API_KEY.",
        )
    return clients


def _model_params(opts: WatchOptions, log: Callable[[str], None]) -> int | None:
    """The model's parameter count, to size the disk the way `launch` does (None if unknown)."""
    if opts.disk_gb is not None or not opts.model:
        return None
    from heretic.cloud.cost import count_model_parameters

    try:
        return count_model_parameters(opts.model)
    except HereticError as exc:
        log(f"could not size the disk from the model: {exc.message}")
        return None


def _launcher(
    opts: WatchOptions,
    clients: Mapping[str, Provider],
    n_params: int | None,
    log: Callable[[str], None],
) -> Callable[[Offer], Instance]:
    token = hf_token_from_environment(from_login=opts.hf_token_from_login)

    def launch(offer: Offer) -> Instance:
        lopts = launch_options_for(opts, offer.provider, n_params)
        client = clients[offer.provider]
        plan = plan_launch(
            lopts,
            client,
            n_params=n_params,
            hf_token=token if offer.provider == "vast" else None,
            offer=offer,
        )
        for warning in plan.warnings:
            log(f"WARNING: {warning}")
        for route in plan.secrets:
            log(f"Secret {route.line()}")
        return execute_launch(plan, client)

    return launch


def launch_options_for(opts: WatchOptions, provider: str, n_params: int | None) -> LaunchOptions:
    """The options `heretic cloud launch` would get for this monitor's launch on `provider`."""
    lopts = LaunchOptions(
        provider=provider,
        gpu=gpu_kind(opts.gpu),
        model=opts.model or "",
        image=opts.image or launch_module.DEFAULT_IMAGE,
        upload=opts.upload,
        max_price=opts.max_price,
        disk_gb=opts.disk_gb,
        profile=opts.profile,
        settings=opts.settings,
        runpod_secret=opts.runpod_secret,
        vast_account_token=opts.vast_account_token,
        hf_token_from_login=opts.hf_token_from_login,
        allow_plain_secrets=opts.allow_plain_secrets,
        max_hours=opts.max_hours,
        launched_by="heretic-cloud-monitor",
    )
    return with_max_hours(lopts, n_params)


def check_launch(opts: WatchOptions, clients: Mapping[str, Provider], n_params: int | None) -> None:
    """Before the first poll, what would make every launch fail: the image not pullable, a
    credential refused in --set, an --upload without a token. Fails in seconds."""
    from heretic.cloud.registry import check_pullable

    if opts.check_image:
        check_pullable(opts.image or launch_module.DEFAULT_IMAGE)
    token = hf_token_from_environment(from_login=opts.hf_token_from_login)
    for name, client in clients.items():
        lopts = launch_options_for(opts, name, n_params)
        hf_token = token if name == "vast" else None
        plan_launch(lopts, client, n_params=n_params, hf_token=hf_token, dry_run=True)
        token_env(lopts, hf_token, dry_run=False)  # an --upload without a token fails now


def run_watch(
    opts: WatchOptions,
    *,
    log: Callable[[str], None],
    bell_stream: TextIO,
    sleep: Callable[[float], None] = time.sleep,
) -> MonitorResult:
    kind = gpu_kind(opts.gpu)
    clients = _clients(opts.provider, log, sleep)
    sinks: list[Sink] = [log_sink(log)]
    if opts.bell:
        sinks.append(bell_sink(bell_stream))
    if opts.notify:
        sinks.append(webhook_sink(opts.notify))
    try:
        n_params = _model_params(opts, log)
        if opts.launch:
            check_launch(opts, clients, n_params)
        launcher = _launcher(opts, clients, n_params, log) if opts.launch else None
        # The launch's own filter (disk, CUDA, price with storage): an offer seen here is one
        # the launch can use.
        query = offer_query(
            kind,
            max_price=opts.max_price,
            disk_gb=opts.disk_gb,
            n_params=n_params,
            min_cuda=min_host_cuda(opts.image or launch_module.DEFAULT_IMAGE),
        )
        monitor = Monitor(
            clients,
            query,
            sinks=sinks,
            log=log,
            state_path=opts.state_file or default_state_file(kind.name),
            interval_s=opts.interval_s,
            sleep=sleep,
            on_available=launcher,
            max_launches=opts.max_launches,
        )
        log(
            f"Watching {', '.join(clients)} for {kind.name}"
            + (f" at or under ${opts.max_price}/h" if opts.max_price is not None else "")
            + f", every ~{int(opts.interval_s)} s."
        )
        return monitor.run(opts.max_polls)
    finally:
        for client in clients.values():
            client.close()
