"""End billing: the instance stops or destroys itself with the scoped key the provider put in
its environment. `--shutdown-after` destroys after a confirmed upload; `--on-failure` stops or
destroys after a terminal failure (heretic/lifecycle/on_failure.py).

The requests, their endpoints and their retries are the provider clients' own
(`heretic.cloud.vast.VastClient` and `heretic.cloud.runpod.RunPodClient`: `stop` and
`terminate`); this module only finds the instance and the scoped key in the environment:
- Vast.ai: CONTAINER_ID + CONTAINER_API_KEY (HERETIC_VAST_API_URL overrides the base URL).
- RunPod: RUNPOD_POD_ID + RUNPOD_API_KEY (HERETIC_RUNPOD_API_URL overrides the base URL). A 409
  means the action is not valid for the pod's current status (REST v2 OpenAPI 2.0.0).
  RunPod documents RUNPOD_API_KEY only as a "pod-scoped API key": that it may end its own
  pod through REST v2 is unverified. When a DELETE is refused with 401/403 the documented route
  is tried instead, `runpodctl pod delete $RUNPOD_POD_ID` (RunPod's "Manage Pods" page), when
  runpodctl is on the PATH (RunPod's own images ship it; heretic's does not); otherwise the
  refusal is returned (the lifecycle logs and notifies it, once).
- Anywhere else: does nothing and says so; the machine keeps running (and billing).
- A machine heretic did not launch (no HERETIC_LAUNCHED_BY, which `heretic cloud launch` and
  scripts/launch_*.sh set): does nothing and says so, whatever provider variables it sees;
  SkyPilot owns its machines and relaunches a job whose cluster vanished.
Guaranteed: never raises, never shows a key; 429/5xx/connection failures are retried a few
times. Not guaranteed: that the machine is gone when this returns (the provider acts later).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from heretic.cloud import runpod, vast
from heretic.cloud.http import ApiStatusError
from heretic.errors import CloudError
from heretic.lifecycle.retry import LAUNCHED_BY_ENV, launched_by_heretic
from heretic.progress import NullReporter, Reporter
from heretic.secrets import redact

Action = Literal["stop", "destroy"]


@dataclass(frozen=True)
class ShutdownResult:
    provider: str | None
    ok: bool
    message: str
    status: int | None = None  # the provider's HTTP status when it refused
    not_ours: bool = False  # not launched by heretic: nothing was (or may be) attempted


@dataclass(frozen=True)
class _Target:
    provider_info: _Provider
    instance: str
    key: str
    base_url: str
    what: str

    @property
    def provider(self) -> str:
        return self.provider_info.name


@dataclass(frozen=True)
class _Provider:
    name: str
    id_env: str  # the instance's id, set by the provider in the container
    key_env: str  # the instance-scoped API key, set by the provider
    client: type[runpod.RunPodClient] | type[vast.VastClient]
    url_env: str
    default_url: str
    noun: str
    verb: str
    console: str


# RunPod first: a pod never has CONTAINER_ID, and RUNPOD_POD_ID decides.
_PROVIDERS = (
    _Provider(
        "runpod",
        "RUNPOD_POD_ID",
        "RUNPOD_API_KEY",
        runpod.RunPodClient,
        runpod.URL_ENV,
        runpod.DEFAULT_URL,
        "pod",
        "terminate",
        "RunPod",
    ),
    _Provider(
        "vast",
        "CONTAINER_ID",
        "CONTAINER_API_KEY",
        vast.VastClient,
        vast.URL_ENV,
        vast.DEFAULT_URL,
        "instance",
        "destroy",
        "Vast.ai",
    ),
)


def provider_of(environ: Mapping[str, str]) -> str | None:
    """The provider ("runpod" or "vast") whose container this process runs in, else None."""
    return next((p.name for p in _PROVIDERS if environ.get(p.id_env, "").strip()), None)


def _target(environ: Mapping[str, str]) -> _Target | ShutdownResult:
    """Which provider this process runs on, or a result explaining why we cannot shut down."""
    for p in _PROVIDERS:
        instance = environ.get(p.id_env, "").strip()
        if not instance:
            continue
        if not launched_by_heretic(environ):
            # SkyPilot (or a console template) owns this machine: stopping it behind its back
            # makes SkyPilot relaunch the job, and a deterministic failure rents again.
            return ShutdownResult(
                p.name,
                False,
                f"This {p.noun} was not launched by heretic ({LAUNCHED_BY_ENV} is not set), "
                "so heretic leaves ending it to whoever launched it (SkyPilot, a template, "
                "the console).",
                not_ours=True,
            )
        key = environ.get(p.key_env, "").strip()
        if not key:
            return ShutdownResult(
                p.name,
                False,
                f"{p.id_env} is set but {p.key_env} is not, so "
                f"this {p.noun} cannot {p.verb} itself; {p.verb} it in the "
                f"{p.console} console.",
            )
        base = environ.get(p.url_env, "").strip() or p.default_url
        return _Target(p, instance, key, base, f"{p.noun} {instance}")
    return ShutdownResult(
        None,
        False,
        "Not on Vast.ai or RunPod (no CONTAINER_ID or "
        "RUNPOD_POD_ID), so heretic cannot stop this machine; it keeps "
        "running and billing until you stop it.",
    )


def _send(
    target: _Target,
    action: Action,
    transport: httpx.BaseTransport | None,
    retries: int,
    sleep: Callable[[float], None],
) -> ShutdownResult:
    client = target.provider_info.client(
        target.key, base_url=target.base_url, sleep=sleep, retries=retries, transport=transport
    )
    verb = "stop" if action == "stop" else "end"
    try:
        (client.stop if action == "stop" else client.terminate)(target.instance)
    except CloudError as exc:
        status = exc.status if isinstance(exc, ApiStatusError) else None
        message = (
            f"{target.provider} refused to {verb} {target.what}: {exc.message.rstrip('.')}. Stop it "
            f"in the {target.provider} console, or it keeps billing."
        )
        return ShutdownResult(target.provider, False, redact(message, (target.key,)), status)
    finally:
        client.close()
    return ShutdownResult(
        target.provider, True, f"Asked {target.provider} to {verb} {target.what}."
    )


def _runpodctl_delete(environ: Mapping[str, str], refused: ShutdownResult) -> ShutdownResult:
    """RunPod's documented way for a pod to end itself, after the REST call was refused."""
    exe = shutil.which("runpodctl", path=environ.get("PATH"))
    pod_id = environ.get("RUNPOD_POD_ID", "").strip()
    if exe is None:
        return ShutdownResult(
            "runpod",
            False,
            refused.message + " (runpodctl, RunPod's "
            "documented route, is not installed in this image.)",
            refused.status,
        )
    try:
        done = subprocess.run(
            [exe, "pod", "delete", pod_id],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        said = f"{type(exc).__name__}"
    else:
        if done.returncode == 0:
            return ShutdownResult(
                "runpod",
                True,
                f"Asked runpod to end pod {pod_id} with runpodctl (the REST call was refused).",
            )
        said = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
    key = environ.get("RUNPOD_API_KEY")
    return ShutdownResult(
        "runpod",
        False,
        redact(f"{refused.message} runpodctl pod delete failed too ({said}).", (key,)),
        refused.status,
    )


def shutdown_self(
    environ: Mapping[str, str] | None = None,
    *,
    reporter: Reporter | None = None,
    transport: httpx.BaseTransport | None = None,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> ShutdownResult:
    """Destroy/terminate the machine this runs on, when the provider lets it. Never raises."""
    return end_self(
        "destroy", environ, reporter=reporter, transport=transport, retries=retries, sleep=sleep
    )


def end_self(
    action: Action,
    environ: Mapping[str, str] | None = None,
    *,
    reporter: Reporter | None = None,
    transport: httpx.BaseTransport | None = None,
    retries: int = 3,
    sleep: Callable[[float], None] = time.sleep,
) -> ShutdownResult:
    """Stop or destroy the machine this runs on, when the provider lets it. Never raises."""
    environ = os.environ if environ is None else environ
    reporter = reporter or NullReporter()
    target = _target(environ)
    if isinstance(target, ShutdownResult):
        result = target
    else:
        doing = "Stopping" if action == "stop" else "Ending"
        reporter.info(f"{doing} {target.what} on {target.provider} to stop billing.")
        try:
            result = _send(target, action, transport, retries, sleep)
            if target.provider == "runpod" and action == "destroy" and result.status in (401, 403):
                result = _runpodctl_delete(environ, result)
        except Exception as exc:  # must never turn a finished run into a failed one
            result = ShutdownResult(
                target.provider, False, f"Shutdown failed unexpectedly: {type(exc).__name__}."
            )
    (reporter.info if result.ok else reporter.warn)(result.message)
    return result


@dataclass(frozen=True)
class RouteCheck:
    """Can this machine end itself? For the preflight table (status OK, WARN)."""

    status: Literal["OK", "WARN"]
    measured: str
    detail: str = ""


def check_route(
    environ: Mapping[str, str] | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RouteCheck | None:
    """Before hours of GPU time: read this instance with the key the shutdown will use (an
    authenticated GET of its own instance), and list the fallbacks. None off a provider.
    Never raises. A read does not prove that a stop or delete will be allowed (RunPod does
    not document what its pod-scoped key may do), so a refused end is still handled later."""
    environ = os.environ if environ is None else environ
    target = _target(environ)
    if isinstance(target, ShutdownResult):
        if target.provider is None:
            return None
        if target.not_ours:
            return RouteCheck("OK", "not launched by heretic: its launcher ends it")
        return RouteCheck("WARN", "no scoped key", target.message)
    runpodctl = shutil.which("runpodctl", path=environ.get("PATH"))
    fallbacks = []
    if target.provider == "runpod":
        fallbacks.append(f"runpodctl at {runpodctl}" if runpodctl else "no runpodctl")
    fallbacks.append("`heretic cloud watch` from your machine")
    client = target.provider_info.client(
        target.key, base_url=target.base_url, sleep=sleep, retries=1, transport=transport
    )
    try:
        found = client.status(target.instance)
    except CloudError as exc:
        said = redact(exc.message, (target.key,))
        return RouteCheck(
            "WARN",
            f"{target.provider_info.key_env} cannot read {target.what}: {said[:160]}",
            "the finished run may not be able to end this machine; fallbacks: "
            + ", ".join(fallbacks),
        )
    except Exception as exc:  # noqa: BLE001 - a check must never stop the run by itself
        return RouteCheck("WARN", f"check failed: {type(exc).__name__}", ", ".join(fallbacks))
    finally:
        client.close()
    if found.state == "not_found":
        return RouteCheck(
            "WARN",
            f"{target.what} not found with {target.provider_info.key_env}",
            "fallbacks: " + ", ".join(fallbacks),
        )
    return RouteCheck(
        "OK",
        f"{target.provider_info.key_env} reads {target.what} ({found.status}); fallbacks: "
        + ", ".join(fallbacks),
    )
