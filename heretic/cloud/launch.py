"""Turn `heretic cloud launch` options into one provider request, and send it (or only show it).

Guaranteed: the image is started so that its own entrypoint runs; the run is configured only
through HERETIC_* settings variables (the image reads them as its environment layer) with
HERETIC_SHUTDOWN_AFTER=true so a finished run stops paying; the Hugging Face token goes as a
RunPod secret reference where the provider has secrets, and as a plain variable on Vast.ai
(with a warning, because Vast shows env values in the instance details). A dry run makes no
network call: it returns the offer search it would make and the exact launch body, with every
secret masked. Not guaranteed: that the chosen offer is still free when the create arrives.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heretic.cloud.cost import DEFAULT_DISK_GB
from heretic.cloud.gpu_kinds import GpuKind, gpu_kind
from heretic.cloud.offer_filter import offer_query
from heretic.cloud.records import Instance, LaunchSpec, Offer, OfferQuery, Provider
from heretic.errors import CloudError, ConfigError, TokenError
from heretic.image import default_image, min_host_cuda

DEFAULT_IMAGE = default_image()  # this release's cu126 tag, never :latest
# Set by the launcher itself; --set may not override them.
_OWN_SETTINGS = ("model", "upload", "shutdown_after", "profile")


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


@dataclass(frozen=True)
class LaunchPlan:
    provider: str
    query: OfferQuery
    offer: Offer
    spec: LaunchSpec
    warnings: tuple[str, ...]
    placeholder_offer: bool = False

    def describe(self, client: Provider) -> dict[str, Any]:
        """The search and the launch request, safe to print (keys and tokens masked)."""
        return {
            "provider": self.provider,
            "offer_search": client.search_request(self.query).describe(self.spec.secrets),
            "offer": self.offer.offer_id + (" (placeholder)" if self.placeholder_offer else ""),
            "launch_request": client.launch_request(self.offer, self.spec).describe(
                self.spec.secrets
            ),
            "warnings": list(self.warnings),
        }


def _label(model: str) -> str:
    return "heretic-" + re.sub(r"[^a-zA-Z0-9-]+", "-", model.split("/")[-1]).strip("-")[:40]


def settings_env(opts: LaunchOptions) -> dict[str, str]:
    """The HERETIC_* variables that configure the run inside the image."""
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
                "Use --model, --upload or --profile instead.",
            )
        env[f"HERETIC_{name.upper()}"] = str(value)
    env["HERETIC_MODEL"] = opts.model
    if opts.upload:
        env["HERETIC_UPLOAD"] = opts.upload
    env["HERETIC_SHUTDOWN_AFTER"] = "true"
    env["HERETIC_PROFILE"] = opts.profile
    env["HF_XET_HIGH_PERFORMANCE"] = "1"
    return env


def hf_token_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """HF_TOKEN, else the token huggingface_hub saved at login (read locally, no network)."""
    environ = os.environ if environ is None else environ
    token = environ.get("HF_TOKEN", "").strip()
    if token:
        return token
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
                "--upload needs a Hugging Face token and none was found "
                "(HF_TOKEN is not set and `hf auth login` has not been run).",
                "Export HF_TOKEN with a write token, then launch again.",
            )
        return {}, (), ["No Hugging Face token found: gated models and --upload will fail."]
    return (
        {"HF_TOKEN": hf_token},
        (hf_token,),
        [
            "Vast.ai shows environment values in the instance details: HF_TOKEN is visible to "
            "anyone with access to this Vast account. Use a fine-grained token limited to the "
            "target repository and revoke it after the run, or store it as a Vast account "
            "environment variable and launch with --vast-account-token."
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
    tokens, secrets, warnings = token_env(opts, hf_token, dry_run)
    env.update(tokens)
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
        )
    if offer is None:
        offer = choose_offer(client.search(query), opts)
    return LaunchPlan(opts.provider, query, offer, spec, tuple(warnings))


def execute_launch(plan: LaunchPlan, client: Provider) -> Instance:
    return client.launch(plan.offer, plan.spec)


def follow_hint(instance: Instance) -> str:
    p, i = instance.provider, instance.instance_id
    return (
        f"Follow it with: heretic cloud status --provider {p} {i}\n"
        f"             heretic cloud logs --provider {p} {i}\n"
        f"Stop it with:   heretic cloud stop --provider {p} {i}"
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
    )


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
    from heretic.cloud.providers import make_client

    own_token = opts.provider == "vast" and not opts.vast_account_token
    token = hf_token_from_environment() if own_token else None
    client = make_client(opts.provider, need_key=not dry_run)
    try:
        sized = opts.disk_gb is None and (not dry_run or Path(opts.model).is_dir())
        n_params = count_for_disk(opts.model, warn) if sized else None
        plan = plan_launch(opts, client, n_params=n_params, hf_token=token, dry_run=dry_run)
        for warning in plan.warnings:
            warn(f"WARNING: {warning}")
        if dry_run:
            return LaunchOutcome(plan, None, plan.describe(client))
        return LaunchOutcome(plan, execute_launch(plan, client), None)
    finally:
        client.close()
