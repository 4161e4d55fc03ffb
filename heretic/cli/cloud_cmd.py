"""`heretic cloud ...`: offers, launch, status, logs, stop, monitor (thin: parse, call, print).

Data goes to stdout (a table, or JSON with --json); messages and warnings go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from heretic.cli.errors import guarded

cloud = typer.Typer(name="cloud", no_args_is_help=True,
                    help="Rent a GPU for a run: offers, launch, follow, stop, monitor.")

GpuOpt = Annotated[str, typer.Option("--gpu", help="GPU kind: A100-80GB, H100-80GB, H200, "
                                     "A100-40GB, L40S, RTX-4090, H100-NVL.")]
PriceOpt = Annotated[float | None, typer.Option("--max-price", min=0.0,
                                                help="Highest price in USD per hour.")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="vast or runpod.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
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


def _estimate(model: str | None, revision: str | None, profile: str, trials: int | None,
              gpu: Any) -> Any:
    if not model:
        return None
    from heretic.cloud.cost import count_model, estimate_run, shape_for_profile

    count = count_model(model, revision)
    n_params = int(count.total)
    est = estimate_run(n_params, shape_for_profile(profile, trials), gpu, count=count)
    active = getattr(count, "active", n_params)
    moe = f" ({active / 1e9:.2f}B active per token)" if active < n_params else ""
    _err(f"{model}: {n_params / 1e9:.2f}B parameters{moe}, {est.weights_gb} GB of weights. Rough "
         f"estimate on one {gpu.name}: {est.hours} h (see the Cloud section of README.md for how it is made).")
    if not est.fits:
        _err(f"WARNING: the weights do not fit one {gpu.name}; use --set quantization=bnb-4bit "
             "or a larger GPU.")
    return est


@cloud.command("offers")
def offers_cmd(
    gpu: GpuOpt = "A100-80GB",
    max_price: PriceOpt = None,
    provider: Annotated[str, typer.Option(help="vast, runpod or all.")] = "all",
    model: Annotated[str | None, typer.Option(help="Estimate hours and cost for this model.")] = None,
    revision: Annotated[str | None, typer.Option(help="Model revision.")] = None,
    profile: Annotated[str, typer.Option(help="Profile whose batch settings the estimate "
                                         "uses (auto: defaults).")] = "auto",
    trials: Annotated[int | None, typer.Option(min=1, help="Trials for the estimate.")] = None,
    disk: Annotated[int | None, typer.Option(min=20, help="Disk in GB the run needs (default: "
                                             "sized from --model, else 150); Vast prices "
                                             "include it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Current offers (Vast.ai) and availability (RunPod) with price per hour, filtered as
    `launch` filters them (GPU, disk, CUDA version, price cap)."""

    def run() -> None:
        from heretic.cloud.gpu_kinds import gpu_kind
        from heretic.cloud.offer_filter import offer_query
        from heretic.cloud.providers import make_client, provider_names
        from heretic.cloud.table_rows import OFFER_COLUMNS, offer_row
        from heretic.errors import CloudError

        kind = gpu_kind(gpu)
        names = provider_names(provider)
        est = _estimate(model, revision, profile, trials, kind)
        # The launch's filter: the disk the run needs (Vast's price then includes it), CUDA.
        query = offer_query(kind, max_price=max_price, disk_gb=disk or (est.disk_gb if est else None))
        rows: list[dict[str, Any]] = []
        failures: list[CloudError] = []
        for name in names:
            try:
                client = make_client(name)
                try:
                    found = client.search(query)
                finally:
                    client.close()
            except CloudError as exc:
                if len(names) == 1:
                    raise
                failures.append(exc)
                _err(f"WARNING: {name} skipped: {exc.paragraph()}")
                continue
            rows.extend(offer_row(o, est) for o in found)
        if failures and len(failures) == len(names):
            raise failures[0]
        rows.sort(key=lambda r: (r["usd_per_hour"] is None, r["usd_per_hour"] or 0))
        if as_json:
            _print_json(rows)
        elif rows:
            _print_table(rows, OFFER_COLUMNS)
        else:
            _err(f"No {kind.name} offers right now"
                 + (f" at or under ${max_price}/h." if max_price is not None else "."))

    guarded(run)


def _parse_sets(values: list[str]) -> dict[str, str]:
    from heretic.errors import ConfigError

    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}' is not KEY=VALUE.", "Write it as --set trials=300.")
        out[key.strip()] = value
    return out


def _launch_options(provider: str, gpu: str, model: str, upload: str | None,
                    max_price: float | None, image: str | None, offer: str | None,
                    disk: int | None, profile: str, sets: list[str], cloud_tier: str,
                    volume_id: str | None, runpod_secret: str,
                    vast_account_token: bool = False) -> Any:
    from heretic.cloud.gpu_kinds import gpu_kind
    from heretic.cloud.launch import DEFAULT_IMAGE, LaunchOptions
    from heretic.cloud.providers import provider_names

    provider_names(provider)  # validates the name
    return LaunchOptions(
        provider=provider, gpu=gpu_kind(gpu), model=model, image=image or DEFAULT_IMAGE,
        upload=upload, max_price=max_price, offer_id=offer, disk_gb=disk, profile=profile,
        settings=_parse_sets(sets), cloud=cloud_tier.upper(), volume_id=volume_id,
        runpod_secret=runpod_secret, vast_account_token=vast_account_token)


def _count_quietly(model: str, disk: int | None) -> int | None:
    if disk is not None:
        return None
    from heretic.cloud.cost import count_model_parameters
    from heretic.errors import HereticError

    try:
        return count_model_parameters(model)
    except HereticError as exc:
        _err(f"WARNING: could not size the disk from the model: {exc.message}")
        return None


@cloud.command("launch")
def launch_cmd(
    provider: ProviderOpt,
    model: Annotated[str, typer.Option(help="Hub id of the model to abliterate.")],
    gpu: GpuOpt = "A100-80GB",
    upload: Annotated[str | None, typer.Option(help="Hub repo to upload the result to.")] = None,
    max_price: PriceOpt = None,
    image: Annotated[str | None, typer.Option(help="Container image (default: heretic's).")] = None,
    offer: Annotated[str | None, typer.Option(help="Offer id (Vast) or GPU type id (RunPod) "
                                              "instead of the cheapest.")] = None,
    disk: Annotated[int | None, typer.Option(min=20, help="Disk in GB (default: sized for "
                                             "the model).")] = None,
    profile: Annotated[str, typer.Option(help="HERETIC_PROFILE for the run.")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE setting for "
                                                   "the run (repeatable).")] = None,
    cloud_tier: Annotated[str, typer.Option("--cloud", help="RunPod tier: SECURE or "
                                            "COMMUNITY.")] = "SECURE",
    volume_id: Annotated[str | None, typer.Option(help="RunPod network volume to mount at "
                                                  "/workspace.")] = None,
    runpod_secret: Annotated[str, typer.Option(help="Name of the RunPod secret holding the "
                                               "HF token.")] = "hf_token",
    vast_account_token: Annotated[bool, typer.Option(
        "--vast-account-token", help="Vast: send no HF_TOKEN; the instance takes it from your "
        "Vast account's environment variables (vastai create env-var HF_TOKEN ...).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Send nothing: print the offer "
                                          "search and the launch request.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Rent the cheapest matching offer and start the heretic image on it."""

    def run() -> None:
        from heretic.cloud.launch import (
            execute_launch,
            follow_hint,
            hf_token_from_environment,
            plan_launch,
        )
        from heretic.cloud.providers import make_client
        from heretic.cloud.table_rows import instance_row

        opts = _launch_options(provider, gpu, model, upload, max_price, image, offer, disk,
                               profile, set_ or [], cloud_tier, volume_id, runpod_secret,
                               vast_account_token)
        token = (hf_token_from_environment()
                 if provider == "vast" and not vast_account_token else None)
        client = make_client(provider, need_key=not dry_run)
        try:
            # A dry run stays offline: it sizes the disk only from a model folder on disk.
            sized = not dry_run or Path(model).is_dir()
            n_params = _count_quietly(model, disk) if sized else None
            plan = plan_launch(opts, client, n_params=n_params, hf_token=token, dry_run=dry_run)
            for warning in plan.warnings:
                _err(f"WARNING: {warning}")
            if dry_run:
                _print_json(plan.describe(client))
                return
            instance = execute_launch(plan, client)
        finally:
            client.close()
        if as_json:
            _print_json(instance_row(instance))
        else:
            typer.echo(instance.instance_id)
        price = f" at ${plan.offer.price_per_hour:.2f}/h" if plan.offer.price_per_hour else ""
        _err(f"Started {provider} {instance.instance_id} ({plan.offer.gpu_name}{price}).")
        _err(follow_hint(instance))

    guarded(run)


def _with_client(provider: str, fn: Any) -> Any:
    from heretic.cloud.providers import make_client

    client = make_client(provider)
    try:
        return fn(client)
    finally:
        client.close()


@cloud.command("status")
def status_cmd(instance_id: IdArg, provider: ProviderOpt, as_json: JsonOpt = False) -> None:
    """An instance's state (never its environment, which holds secrets)."""

    def run() -> None:
        from heretic.cloud.table_rows import instance_row

        row = instance_row(_with_client(provider, lambda c: c.status(instance_id)))
        if as_json:
            _print_json(row)
        else:
            for key, value in row.items():
                typer.echo(f"{key:13} {value if value not in (None, '') else '-'}")

    guarded(run)


@cloud.command("logs")
def logs_cmd(instance_id: IdArg, provider: ProviderOpt,
             tail: Annotated[int, typer.Option(min=1, max=5000, help="Lines.")] = 200) -> None:
    """The container's last log lines."""
    guarded(lambda: typer.echo(_with_client(provider, lambda c: c.logs(instance_id, tail))))


@cloud.command("stop")
def stop_cmd(instance_id: IdArg, provider: ProviderOpt) -> None:
    """Destroy (Vast) or terminate (RunPod) the instance: billing stops, its disk is gone."""

    def run() -> None:
        _with_client(provider, lambda c: c.terminate(instance_id))
        _err(f"{provider} instance {instance_id} destroyed.")

    guarded(run)


@cloud.command("monitor")
def monitor_cmd(
    gpu: GpuOpt = "A100-80GB",
    max_price: PriceOpt = None,
    provider: Annotated[str, typer.Option(help="vast, runpod or all.")] = "all",
    interval: Annotated[float, typer.Option(min=60.0, help="Seconds between polls (jittered; "
                                            "Vast limits how often an endpoint is called).")] = 300.0,
    notify: Annotated[str | None, typer.Option(help="Webhook URL for a JSON POST per "
                                               "alert.")] = None,
    bell: Annotated[bool, typer.Option(help="Ring the terminal bell on availability.")] = True,
    state_file: Annotated[Path | None, typer.Option(help="Where the last seen availability "
                                                    "is kept.")] = None,
    max_polls: Annotated[int | None, typer.Option(min=1, help="Stop after N polls.")] = None,
    launch: Annotated[bool, typer.Option("--launch", help="Launch the run on the first "
                                         "matching offer, then stop.")] = False,
    model: Annotated[str | None, typer.Option(help="With --launch: the model.")] = None,
    upload: Annotated[str | None, typer.Option(help="With --launch: Hub repo.")] = None,
    image: Annotated[str | None, typer.Option(help="With --launch: image.")] = None,
    disk: Annotated[int | None, typer.Option(min=20, help="With --launch: disk GB.")] = None,
    profile: Annotated[str, typer.Option(help="With --launch: HERETIC_PROFILE.")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="With --launch: KEY=VALUE "
                                                   "setting (repeatable).")] = None,
) -> None:
    """Watch for a GPU kind; alert (log line, bell, webhook) when availability changes."""

    def run() -> None:
        from heretic.cloud.watch import WatchOptions, run_watch
        from heretic.errors import ConfigError

        if launch and not model:
            raise ConfigError("--launch needs --model.", "Add --model ORG/NAME.")
        opts = WatchOptions(gpu=gpu, max_price=max_price, provider=provider,
                            interval_s=interval, notify=notify, bell=bell,
                            state_file=state_file, max_polls=max_polls, launch=launch,
                            model=model, upload=upload, image=image, disk_gb=disk,
                            profile=profile, settings=_parse_sets(set_ or []))
        try:
            result = run_watch(opts, log=_err, bell_stream=sys.stderr)
        except KeyboardInterrupt:
            _err("Monitor stopped.")
            return
        if result.launched is not None:
            from heretic.cloud.launch import follow_hint

            typer.echo(result.launched.instance_id)
            _err(follow_hint(result.launched))

    guarded(run)


def register(app: typer.Typer) -> None:
    app.add_typer(cloud)
