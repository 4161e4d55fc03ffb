"""Turn `heretic cloud launch` options into one provider request, and send it (or only show it).

Guaranteed: the image is started so that its own entrypoint runs; the run is configured only
through HERETIC_* settings variables (the image reads them as its environment layer) with
HERETIC_SHUTDOWN_AFTER=true so a finished run stops paying, HERETIC_MAX_HOURS (a hard deadline,
by default twice the cost estimate plus an hour) and the launch marker HERETIC_LAUNCHED_BY /
HERETIC_LAUNCHED_AT (heretic ends only machines it launched). Secrets go only where the user
chose (heretic/cloud/secret_routes.py): the Hugging Face token as a RunPod secret reference, or
on Vast.ai as a plain variable only when HF_TOKEN is set (or --hf-token-from-login), never
silently from the login; credentials in --set only through the provider's secrets. Before any
create the image's manifest is checked anonymously (heretic/cloud/registry.py). A dry run makes
no network call: it returns the offer search it would make, the exact launch body with every
secret masked, and who can read each secret. Not guaranteed: that the chosen offer is still
free when the create arrives.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heretic.cloud.cost import DEFAULT_DISK_GB
from heretic.cloud.gpu_kinds import GpuKind, gpu_kind
from heretic.cloud.offer_filter import offer_query
from heretic.cloud.records import (
    LAUNCHED_AT_ENV,
    LAUNCHED_BY_ENV,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Provider,
)
from heretic.cloud.secret_routes import SecretRoute, hf_token_route, setting_routes
from heretic.errors import CloudError, ConfigError, HereticError, TokenError
from heretic.image import default_image, min_host_cuda

DEFAULT_IMAGE = default_image()  # this release's cu126 tag, never :latest
# Set by the launcher itself; --set may not override them.
_OWN_SETTINGS = ("model", "upload", "shutdown_after", "profile", "max_hours")
DEFAULT_MAX_HOURS = 24.0  # when the model cannot be counted for an estimate


@dataclass(frozen=True)
class LaunchOptions:
    provider: str
    gpu: GpuKind
    model: str
    image: str = DEFAULT_IMAGE
    upload: str | None = None
    max_price: float | None = None
    offer_id: str | None = None
    disk_gb: int | None = None
    profile: str = "auto"
    settings: Mapping[str, str] = field(default_factory=dict)  # --set KEY=VALUE
    cloud: str = "SECURE"
    volume_id: str | None = None
    runpod_secret: str = "hf_token"
    min_cuda: str | None = None  # None: the one the image's CUDA line needs (heretic/image.py)
    vast_account_token: bool = False  # Vast: HF_TOKEN from the account's env vars, not sent
    hf_token_from_login: bool = False  # Vast: send the `hf auth login` token when HF_TOKEN is unset
    allow_plain_secrets: bool = False  # send credentials in --set as plain env values
    max_hours: float | None = None  # None: from the cost estimate
    check_image: bool = True  # the anonymous manifest check before the create
    launched_by: str = "heretic-cloud-launch"


@dataclass(frozen=True)
class LaunchPlan:
    provider: str
    query: OfferQuery
    offer: Offer
    spec: LaunchSpec
    warnings: tuple[str, ...]
    placeholder_offer: bool = False
    secrets: tuple[SecretRoute, ...] = ()

    def describe(self, client: Provider) -> dict[str, Any]:
        """The search and the launch request, safe to print (keys and tokens masked)."""
        return {
            "provider": self.provider,
            "offer_search": client.search_request(self.query).describe(self.spec.secrets),
            "offer": self.offer.offer_id + (" (placeholder)" if self.placeholder_offer else ""),
            "launch_request": client.launch_request(self.offer, self.spec).describe(
                self.spec.secrets
            ),
            "secrets": [route.as_dict() for route in self.secrets],
            "warnings": list(self.warnings),
        }


def _label(model: str) -> str:
    return "heretic-" + re.sub(r"[^a-zA-Z0-9-]+", "-", model.split("/")[-1]).strip("-")[:40]


def settings_env(opts: LaunchOptions, launched_at: str | None = None) -> dict[str, str]:
    """The HERETIC_* variables that configure the run inside the image, and the marker."""
    from heretic.config.settings import Settings

    env: dict[str, str] = {}
    for key, value in opts.settings.items():
        name = key.strip().lower().replace("-", "_")
        if name not in Settings.model_fields:
            raise ConfigError(
                f"--set {key}: '{name}' is not a setting.",
                "`heretic run --help` lists every setting.",
            )
        if name in _OWN_SETTINGS:
            raise ConfigError(
                f"--set {key}: this setting has its own launch option.",
                "Use --model, --upload, --profile or --max-hours instead.",
            )
        env[f"HERETIC_{name.upper()}"] = str(value)
    env["HERETIC_MODEL"] = opts.model
    if opts.upload:
        env["HERETIC_UPLOAD"] = opts.upload
    env["HERETIC_SHUTDOWN_AFTER"] = "true"
    env["HERETIC_PROFILE"] = opts.profile
    if opts.max_hours:
        env["HERETIC_MAX_HOURS"] = f"{opts.max_hours:g}"
    env["HF_XET_HIGH_PERFORMANCE"] = "1"
    env[LAUNCHED_BY_ENV] = opts.launched_by
    env[LAUNCHED_AT_ENV] = launched_at or datetime.now(UTC).isoformat(timespec="seconds")
    return env


def hf_token_from_environment(
    environ: Mapping[str, str] | None = None, *, from_login: bool = False
) -> str | None:
    """HF_TOKEN; with `from_login`, else the token huggingface_hub saved at login (read
    locally, no network). Never the login token by default: it is often a broad write token,
    and on Vast it would travel as a plain value to a stranger's host."""
    environ = os.environ if environ is None else environ
    token = environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    if not from_login:
        return None
    try:
        from huggingface_hub import get_token

        return get_token() or None
    except Exception:  # an unreadable token file is the same as none here
        return None


def token_env(
    opts: LaunchOptions, hf_token: str | None, dry_run: bool
) -> tuple[dict[str, str], tuple[str, ...], list[str]]:
    """HF_TOKEN for the container: (env, secret values to mask, warnings)."""
    if opts.provider == "runpod":
        # A reference RunPod resolves in the pod; the token itself never leaves this machine.
        return (
            {"HF_TOKEN": f"{{{{ RUNPOD_SECRET_{opts.runpod_secret} }}}}"},
            (),
            [
                f"The pod reads HF_TOKEN from the RunPod secret '{opts.runpod_secret}': create it "
                "under Settings > Secrets in the RunPod console if it does not exist."
            ],
        )
    if opts.vast_account_token:
        # Vast injects an account's environment variables (POST /api/v0/secrets/, stored
        # encrypted) into its instances: the token never travels with the launch.
        return (
            {},
            (),
            [
                "HF_TOKEN is not sent: the instance takes it from your Vast account's environment "
                "variables (set it once with `vastai create env-var HF_TOKEN hf_...`, or under "
                "Account > Environment Variables); without it there, gated models and --upload fail."
            ],
        )
    if hf_token is None:
        if opts.upload and not dry_run:
            raise TokenError(
                "--upload needs a Hugging Face token and none was given (HF_TOKEN is not set; "
                "the `hf auth login` token is sent only with --hf-token-from-login).",
                "Export HF_TOKEN with a fine-grained write token for the target repository, "
                "or keep it in your Vast account and pass --vast-account-token.",
            )
        return (
            {},
            (),
            [
                "No Hugging Face token is sent (HF_TOKEN is not set; the `hf auth login` token "
                "is used only with --hf-token-from-login): gated models and --upload will fail."
            ],
        )
    return (
        {"HF_TOKEN": hf_token},
        (hf_token,),
        [
            "HF_TOKEN travels as a plain environment value: on Vast.ai anyone with access to "
            "this account and the host's operator (a third party) can read it. Use a "
            "fine-grained token limited to the target repository and revoke it after the run."
        ],
    )


def check_provider_rents(opts: LaunchOptions) -> None:
    if opts.provider == "runpod" and not opts.gpu.runpod_ids:
        raise CloudError(
            f"RunPod does not rent {opts.gpu.name} (it is not among RunPod's published GPU types).",
            "Use --provider vast, or another --gpu.",
        )


def placeholder_offer(opts: LaunchOptions) -> Offer:
    if opts.provider == "runpod":
        gpu_id = opts.offer_id or opts.gpu.runpod_ids[0]
        return Offer(
            "runpod", gpu_id, gpu_id, 1, opts.gpu.memory_gb, None, "unknown", cloud=opts.cloud
        )
    return Offer(
        "vast",
        opts.offer_id or "OFFER_ID",
        opts.gpu.vast_names[0],
        1,
        opts.gpu.memory_gb,
        None,
        "unknown",
    )


def choose_offer(offers: list[Offer], opts: LaunchOptions) -> Offer:
    """The offer given with --offer, or the cheapest one (offers come sorted by price)."""
    if opts.offer_id is not None:
        for offer in offers:
            if offer.offer_id == opts.offer_id:
                return offer
        raise CloudError(
            f"Offer {opts.offer_id} is not among the current {opts.provider} "
            f"offers for {opts.gpu.name}"
            + (f" at or under ${opts.max_price}/h." if opts.max_price else "."),
            "Run `heretic cloud offers` to see what is available now.",
        )
    if not offers:
        raise CloudError(
            f"No {opts.provider} offer for {opts.gpu.name}"
            + (f" at or under ${opts.max_price}/h" if opts.max_price else "")
            + " right now.",
            "Raise --max-price, try the other provider, or wait for one with "
            "`heretic cloud monitor --launch`.",
        )
    return offers[0]


def plan_launch(
    opts: LaunchOptions,
    client: Provider,
    *,
    n_params: int | None,
    hf_token: str | None,
    dry_run: bool = False,
    offer: Offer | None = None,
) -> LaunchPlan:
    """Everything the launch will send. Searches offers unless `dry_run` or an `offer` seen
    moments ago (by the monitor) is given."""
    check_provider_rents(opts)
    query = offer_query(
        opts.gpu,
        max_price=opts.max_price,
        disk_gb=opts.disk_gb,
        n_params=n_params,
        min_cuda=opts.min_cuda or min_host_cuda(opts.image),
        cloud=opts.cloud,
    )
    disk = query.min_disk_gb
    env = settings_env(opts)
    routes = setting_routes(opts.provider, env, allow_plain=opts.allow_plain_secrets)
    tokens, secrets, warnings = token_env(opts, hf_token, dry_run)
    env.update(tokens)
    routes.insert(
        0,
        hf_token_route(
            opts.provider,
            sent="HF_TOKEN" in tokens,
            account=opts.vast_account_token,
            secret=opts.runpod_secret,
        ),
    )
    secrets = (*secrets, *(env[r.name] for r in routes if r.name != "HF_TOKEN"))
    if env.get("HERETIC_NOTIFY"):  # a webhook URL carries its key: masked wherever printed
        secrets = (*secrets, env["HERETIC_NOTIFY"])
    if not opts.upload:
        # The image ends the machine only after a confirmed upload (see `heretic run`).
        warnings.append(
            "No --upload: the finished model stays on the machine, which keeps "
            "running and billing until you copy the output and run `heretic "
            "cloud stop`."
        )
    if opts.disk_gb is None and n_params is None:
        warnings.append(
            f"Disk sized at the default {DEFAULT_DISK_GB} GB (the model's size "
            "is unknown); pass --disk GB for large models."
        )
    spec = LaunchSpec(
        image=opts.image,
        env=env,
        disk_gb=disk,
        label=_label(opts.model),
        min_cuda=query.min_cuda,
        cloud=query.cloud,
        volume_id=opts.volume_id,
        secrets=secrets,
    )
    if dry_run:
        return LaunchPlan(
            opts.provider,
            query,
            placeholder_offer(opts),
            spec,
            tuple(warnings),
            placeholder_offer=opts.offer_id is None,
            secrets=tuple(routes),
        )
    if offer is None:
        offer = choose_offer(client.search(query), opts)
    return LaunchPlan(opts.provider, query, offer, spec, tuple(warnings), secrets=tuple(routes))


def execute_launch(plan: LaunchPlan, client: Provider) -> Instance:
    return client.launch(plan.offer, plan.spec)


def follow_hint(instance: Instance) -> str:
    p, i = instance.provider, instance.instance_id
    return (
        f"Follow it with: heretic cloud status --provider {p} {i}\n"
        f"             heretic cloud logs --provider {p} {i}\n"
        f"Stop it with:   heretic cloud stop --provider {p} {i}\n"
        f"Guard it with:  heretic cloud watch --provider {p} {i}  (ends it after --max-hours)"
    )


def launch_options(
    provider: str,
    gpu: str,
    model: str,
    *,
    assignments: list[str],
    image: str | None = None,
    upload: str | None = None,
    max_price: float | None = None,
    offer_id: str | None = None,
    disk_gb: int | None = None,
    profile: str = "auto",
    cloud: str = "SECURE",
    volume_id: str | None = None,
    runpod_secret: str = "hf_token",
    vast_account_token: bool = False,
    hf_token_from_login: bool = False,
    allow_plain_secrets: bool = False,
    max_hours: float | None = None,
) -> LaunchOptions:
    """LaunchOptions from command-line values: the provider and GPU names validated, the
    --set assignments split, the RunPod tier upper-cased."""
    from heretic.cloud.providers import provider_names
    from heretic.config.sources import split_assignments

    provider_names(provider)  # validates the name
    return LaunchOptions(
        provider=provider,
        gpu=gpu_kind(gpu),
        model=model,
        image=image or DEFAULT_IMAGE,
        upload=upload,
        max_price=max_price,
        offer_id=offer_id,
        disk_gb=disk_gb,
        profile=profile,
        settings=split_assignments(assignments),
        cloud=cloud.upper(),
        volume_id=volume_id,
        runpod_secret=runpod_secret,
        vast_account_token=vast_account_token,
        hf_token_from_login=hf_token_from_login,
        allow_plain_secrets=allow_plain_secrets,
        max_hours=max_hours,
    )


def default_max_hours(opts: LaunchOptions, n_params: int | None) -> float:
    """Twice the cost estimate plus an hour (the estimate already errs long), whole hours;
    DEFAULT_MAX_HOURS when the model cannot be counted."""
    import math

    from heretic.cloud.cost import estimate_run, shape_for_profile

    if not n_params:
        return DEFAULT_MAX_HOURS
    try:
        profile = None if opts.profile == "auto" else opts.profile
        hours = estimate_run(n_params, shape_for_profile(profile), opts.gpu).hours
    except (HereticError, ValueError):
        return DEFAULT_MAX_HOURS
    return float(math.ceil(2 * hours + 1))


def with_max_hours(opts: LaunchOptions, n_params: int | None) -> LaunchOptions:
    if opts.max_hours:
        return opts
    return replace(opts, max_hours=default_max_hours(opts, n_params))


@dataclass(frozen=True)
class LaunchOutcome:
    plan: LaunchPlan
    instance: Instance | None  # None for a dry run
    description: dict[str, Any] | None  # the dry run's requests, safe to print

    def started_line(self) -> str:
        price = self.plan.offer.price_per_hour
        shown = f" at ${price:.2f}/h" if price else ""
        instance_id = self.instance.instance_id if self.instance else "(dry run)"
        return f"Started {self.plan.provider} {instance_id} ({self.plan.offer.gpu_name}{shown})."


def launch(opts: LaunchOptions, *, dry_run: bool, warn: Callable[[str], None]) -> LaunchOutcome:
    """`heretic cloud launch`: size the disk from the model, plan, and rent (or, with dry_run,
    only describe the requests; a dry run stays offline and sizes the disk only from a model
    folder on disk). Warnings go to `warn` as they arise."""
    from heretic.cloud.cost import count_for_disk
    from heretic.cloud.instance_watch import record_launch
    from heretic.cloud.providers import make_client
    from heretic.cloud.registry import check_pullable

    own_token = opts.provider == "vast" and not opts.vast_account_token
    token = hf_token_from_environment(from_login=opts.hf_token_from_login) if own_token else None
    if not dry_run and opts.check_image:
        check_pullable(opts.image)  # before any create: a missing image bills at "loading"
    client = make_client(opts.provider, need_key=not dry_run)
    try:
        sized = opts.disk_gb is None and (not dry_run or Path(opts.model).is_dir())
        n_params = count_for_disk(opts.model, warn) if sized else None
        opts = with_max_hours(opts, n_params)
        plan = plan_launch(opts, client, n_params=n_params, hf_token=token, dry_run=dry_run)
        for warning in plan.warnings:
            warn(f"WARNING: {warning}")
        for route in plan.secrets:
            warn(f"Secret {route.line()}")
        if dry_run:
            return LaunchOutcome(plan, None, plan.describe(client))
        instance = execute_launch(plan, client)
        try:
            record_launch(instance, plan.spec.env[LAUNCHED_AT_ENV], opts.max_hours)
        except OSError as exc:  # the rental exists; only `cloud watch` loses its start time
            warn(f"WARNING: could not record the launch locally: {exc}")
        return LaunchOutcome(plan, instance, None)
    finally:
        client.close()
