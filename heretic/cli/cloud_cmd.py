"""`heretic cloud ...`: offers, launch, status, logs, stop, watch, monitor (thin: parse, call,
print).

Data goes to stdout (a table, or JSON with --json); messages and warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from heretic.cli.errors import command
from heretic.cli.options import JsonOpt

if TYPE_CHECKING:
    from heretic.cloud.records import Provider

T = TypeVar("T")

cloud = typer.Typer(
    name="cloud",
    no_args_is_help=True,
    help="Rent a GPU for a run: offers, launch, follow, stop, monitor.",
)

GpuOpt = Annotated[
    str,
    typer.Option(
        "--gpu", help="GPU kind: A100-80GB, H100-80GB, H200, A100-40GB, L40S, RTX-4090, H100-NVL."
    ),
]
PriceOpt = Annotated[
    float | None, typer.Option("--max-price", min=0.0, help="Highest price in USD per hour.")
]
ProviderOpt = Annotated[str, typer.Option("--provider", help="vast or runpod.")]
RunpodSecretOpt = Annotated[
    str, typer.Option(help="Name of the RunPod secret holding the HF token.")
]
VastAccountTokenOpt = Annotated[
    bool,
    typer.Option(
        "--vast-account-token",
        help="Vast: send no HF_TOKEN; the instance takes it from your "
        "Vast account's environment variables (vastai create env-var HF_TOKEN ...).",
    ),
]
TokenFromLoginOpt = Annotated[
    bool,
    typer.Option(
        "--hf-token-from-login",
        help="Vast: with HF_TOKEN unset, send the token `hf auth login` saved (as a plain "
        "env value the host's operator can read); without it that token is never sent.",
    ),
]
PlainSecretsOpt = Annotated[
    bool,
    typer.Option(
        "--allow-plain-secrets",
        help="Send a storage URL with a password or a notify URL from --set as a plain env "
        "value (refused otherwise: use a RunPod secret or a Vast account env var).",
    ),
]
MaxHoursOpt = Annotated[
    float | None,
    typer.Option(
        "--max-hours",
        min=0.01,
        help="Hard deadline: the machine is stopped after H hours (default: twice the cost "
        "estimate plus one hour; 24 when the model cannot be counted).",
    ),
]
IdArg = Annotated[str, typer.Argument(help="Instance (Vast) or pod (RunPod) id.")]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _print_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    from heretic.cloud.table_rows import cell

    table = Table(*columns, show_lines=False)
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    Console(file=sys.stdout, width=160).print(table)


@command(cloud, "offers")
def offers_cmd(
    gpu: GpuOpt = "A100-80GB",
    max_price: PriceOpt = None,
    provider: Annotated[str, typer.Option(help="vast, runpod or all.")] = "all",
    model: Annotated[
        str | None, typer.Option(help="Estimate hours and cost for this model.")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Model revision.")] = None,
    profile: Annotated[
        str, typer.Option(help="Profile whose batch settings the estimate uses (auto: defaults).")
    ] = "auto",
    trials: Annotated[int | None, typer.Option(min=1, help="Trials for the estimate.")] = None,
    disk: Annotated[
        int | None,
        typer.Option(
            min=20,
            help="Disk in GB the run needs (default: "
            "sized from --model, else 150); Vast prices "
            "include it.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Current offers (Vast.ai) and availability (RunPod) with price per hour, filtered as
    `launch` filters them (GPU, disk, CUDA version, price cap)."""

    from heretic.cloud.cost import estimate_for_model
    from heretic.cloud.gpu_kinds import gpu_kind
    from heretic.cloud.offer_filter import offer_query
    from heretic.cloud.providers import provider_names, search_offers
    from heretic.cloud.table_rows import OFFER_COLUMNS, offer_row

    kind = gpu_kind(gpu)
    names = provider_names(provider)
    est = None
    if model:
        est, lines = estimate_for_model(model, revision, profile, trials, kind)
        for line in lines:
            _err(line)
    # The launch's filter: the disk the run needs (Vast's price then includes it), CUDA.
    query = offer_query(kind, max_price=max_price, disk_gb=disk or (est.disk_gb if est else None))
    rows = [offer_row(o, est) for o in search_offers(names, query, _err)]
    if as_json:
        _print_json(rows)
    elif rows:
        _print_table(rows, OFFER_COLUMNS)
    else:
        _err(
            f"No {kind.name} offers right now"
            + (f" at or under ${max_price}/h." if max_price is not None else ".")
        )


@command(cloud, "launch")
def launch_cmd(
    provider: ProviderOpt,
    model: Annotated[str, typer.Option(help="Hub id of the model to abliterate.")],
    gpu: GpuOpt = "A100-80GB",
    upload: Annotated[str | None, typer.Option(help="Hub repo to upload the result to.")] = None,
    max_price: PriceOpt = None,
    image: Annotated[str | None, typer.Option(help="Container image (default: heretic's).")] = None,
    offer: Annotated[
        str | None,
        typer.Option(help="Offer id (Vast) or GPU type id (RunPod) instead of the cheapest."),
    ] = None,
    disk: Annotated[
        int | None, typer.Option(min=20, help="Disk in GB (default: sized for the model).")
    ] = None,
    profile: Annotated[str, typer.Option(help="HERETIC_PROFILE for the run.")] = "auto",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE setting for the run (repeatable).")
    ] = None,
    cloud_tier: Annotated[
        str, typer.Option("--cloud", help="RunPod tier: SECURE or COMMUNITY.")
    ] = "SECURE",
    volume_id: Annotated[
        str | None, typer.Option(help="RunPod network volume to mount at /workspace.")
    ] = None,
    runpod_secret: RunpodSecretOpt = "hf_token",
    vast_account_token: VastAccountTokenOpt = False,
    hf_token_from_login: TokenFromLoginOpt = False,
    allow_plain_secrets: PlainSecretsOpt = False,
    max_hours: MaxHoursOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Send nothing: print the offer search and the launch request."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rent the cheapest matching offer and start the heretic image on it."""

    from heretic.cloud.launch import follow_hint, launch, launch_options
    from heretic.cloud.table_rows import instance_row

    opts = launch_options(
        provider,
        gpu,
        model,
        assignments=set_ or [],
        image=image,
        upload=upload,
        max_price=max_price,
        offer_id=offer,
        disk_gb=disk,
        profile=profile,
        cloud=cloud_tier,
        volume_id=volume_id,
        runpod_secret=runpod_secret,
        vast_account_token=vast_account_token,
        hf_token_from_login=hf_token_from_login,
        allow_plain_secrets=allow_plain_secrets,
        max_hours=max_hours,
    )
    outcome = launch(opts, dry_run=dry_run, warn=_err)
    if outcome.instance is None:
        _print_json(outcome.description)
        return
    if as_json:
        _print_json(instance_row(outcome.instance))
    else:
        typer.echo(outcome.instance.instance_id)
    _err(outcome.started_line())
    _err(follow_hint(outcome.instance))


def _with_client(provider: str, fn: Callable[[Provider], T]) -> T:
    from heretic.cloud.providers import make_client

    client = make_client(provider)
    try:
        return fn(client)
    finally:
        client.close()


@command(cloud, "status")
def status_cmd(instance_id: IdArg, provider: ProviderOpt, as_json: JsonOpt = False) -> None:
    """An instance's state (never its environment, which holds secrets)."""

    from heretic.cloud.table_rows import instance_row

    instance = _with_client(provider, lambda c: c.status(instance_id))
    row = instance_row(instance)
    if instance.state == "paused":
        _err(
            f"WARNING: {provider} {instance_id} is not running but still bills its GPU"
            + (" (Vast never restarts an exited container)" if instance.status == "exited" else "")
            + f": end it with `heretic cloud stop --provider {provider} {instance_id}`."
        )
    if as_json:
        _print_json(row)
    else:
        for key, value in row.items():
            typer.echo(f"{key:13} {value if value not in (None, '') else '-'}")


@command(cloud, "logs")
def logs_cmd(
    instance_id: IdArg,
    provider: ProviderOpt,
    tail: Annotated[int, typer.Option(min=1, max=5000, help="Lines.")] = 200,
) -> None:
    """The container's last log lines."""
    typer.echo(_with_client(provider, lambda c: c.logs(instance_id, tail)))


@command(cloud, "stop")
def stop_cmd(instance_id: IdArg, provider: ProviderOpt) -> None:
    """Destroy (Vast) or terminate (RunPod) the instance: billing stops, its disk is gone."""

    _with_client(provider, lambda c: c.terminate(instance_id))
    _err(f"{provider} instance {instance_id} destroyed.")


@command(cloud, "watch")
def watch_cmd(
    instance_id: IdArg,
    provider: ProviderOpt,
    max_hours: Annotated[
        float | None,
        typer.Option(
            "--max-hours",
            min=0.01,
            help="End it this many hours after the launch (default: the launch's own "
            "--max-hours, recorded locally by `heretic cloud launch`).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="When the rental began (ISO 8601), if it was not launched here."),
    ] = None,
    action: Annotated[
        str, typer.Option(help="stop (keeps the disk) or destroy (deletes it).")
    ] = "stop",
    interval: Annotated[float, typer.Option(min=30.0, help="Seconds between polls.")] = 300.0,
    max_polls: Annotated[int | None, typer.Option(min=1, help="Stop after N polls.")] = None,
) -> None:
    """Watch a rented instance from here and end it past --max-hours (or, on Vast, once its
    container has exited: Vast keeps billing the GPU of an exited container)."""

    from heretic.cloud.instance_watch import watch_instance
    from heretic.errors import ConfigError

    if action not in ("stop", "destroy"):
        raise ConfigError(f"--action {action}: not an action.", "Use stop or destroy.")
    result = _with_client(
        provider,
        lambda c: watch_instance(
            c,
            instance_id,
            max_hours=max_hours,
            since=since,
            action="stop" if action == "stop" else "destroy",
            log=_err,
            interval_s=interval,
            max_polls=max_polls,
        ),
    )
    _err(f"{provider} {instance_id}: {result.reason}.")


@command(cloud, "monitor")
def monitor_cmd(
    gpu: GpuOpt = "A100-80GB",
    max_price: PriceOpt = None,
    provider: Annotated[str, typer.Option(help="vast, runpod or all.")] = "all",
    interval: Annotated[
        float,
        typer.Option(
            min=60.0,
            help="Seconds between polls (jittered; Vast limits how often an endpoint is called).",
        ),
    ] = 300.0,
    notify: Annotated[
        str | None, typer.Option(help="Webhook URL for a JSON POST per alert.")
    ] = None,
    bell: Annotated[bool, typer.Option(help="Ring the terminal bell on availability.")] = True,
    state_file: Annotated[
        Path | None, typer.Option(help="Where the last seen availability is kept.")
    ] = None,
    max_polls: Annotated[int | None, typer.Option(min=1, help="Stop after N polls.")] = None,
    launch: Annotated[
        bool,
        typer.Option("--launch", help="Launch the run on the first matching offer, then stop."),
    ] = False,
    model: Annotated[str | None, typer.Option(help="With --launch: the model.")] = None,
    upload: Annotated[str | None, typer.Option(help="With --launch: Hub repo.")] = None,
    image: Annotated[str | None, typer.Option(help="With --launch: image.")] = None,
    disk: Annotated[int | None, typer.Option(min=20, help="With --launch: disk GB.")] = None,
    profile: Annotated[str, typer.Option(help="With --launch: HERETIC_PROFILE.")] = "auto",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="With --launch: KEY=VALUE setting (repeatable)."),
    ] = None,
    runpod_secret: RunpodSecretOpt = "hf_token",
    vast_account_token: VastAccountTokenOpt = False,
    hf_token_from_login: TokenFromLoginOpt = False,
    allow_plain_secrets: PlainSecretsOpt = False,
    max_hours: MaxHoursOpt = None,
    max_launches: Annotated[
        int,
        typer.Option(
            "--max-launches",
            min=1,
            help="With --launch: rentals this monitor may make in all, across reruns (kept "
            "in the state file, recorded before each create).",
        ),
    ] = 1,
) -> None:
    """Watch for a GPU kind; alert (log line, bell, webhook) when availability changes."""

    from heretic.cloud.launch import follow_hint
    from heretic.cloud.watch import WatchOptions, run_watch
    from heretic.config.sources import split_assignments
    from heretic.errors import ConfigError

    if launch and not model:
        raise ConfigError("--launch needs --model.", "Add --model ORG/NAME.")
    opts = WatchOptions(
        gpu=gpu,
        max_price=max_price,
        provider=provider,
        interval_s=interval,
        notify=notify,
        bell=bell,
        state_file=state_file,
        max_polls=max_polls,
        launch=launch,
        model=model,
        upload=upload,
        image=image,
        disk_gb=disk,
        profile=profile,
        settings=split_assignments(set_ or []),
        runpod_secret=runpod_secret,
        vast_account_token=vast_account_token,
        hf_token_from_login=hf_token_from_login,
        allow_plain_secrets=allow_plain_secrets,
        max_hours=max_hours,
        max_launches=max_launches,
    )
    try:
        result = run_watch(opts, log=_err, bell_stream=sys.stderr)
    except KeyboardInterrupt:
        _err("Monitor stopped.")
        return
    if result.launched is not None:
        typer.echo(result.launched.instance_id)
        _err(follow_hint(result.launched))


def register(app: typer.Typer) -> None:
    app.add_typer(cloud)
