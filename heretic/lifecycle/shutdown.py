"""End billing after a confirmed upload: the instance destroys (Vast.ai) or terminates (RunPod)
itself with the scoped key the provider put in its environment.

- Vast.ai: CONTAINER_ID + CONTAINER_API_KEY; DELETE {base}/instances/{id}/ (Bearer key);
  base https://console.vast.ai/api/v0, overridable with HERETIC_VAST_API_URL.
- RunPod: RUNPOD_POD_ID + RUNPOD_API_KEY; DELETE {base}/pods/{id} (REST v2, Bearer key);
  base https://api.runpod.io/v2, overridable with HERETIC_RUNPOD_API_URL.
  RunPod documents RUNPOD_API_KEY only as a "pod-scoped API key": that it may delete its own
  pod through REST v2 is unverified. On 401/403 the documented route is tried instead,
  `runpodctl pod delete $RUNPOD_POD_ID` (RunPod's "Manage Pods" page), when runpodctl is on
  the PATH (RunPod's own images ship it; heretic's does not); otherwise the refusal is
  returned (the lifecycle logs and notifies it, once).
- Anywhere else: does nothing and says so; the machine keeps running (and billing).
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

import httpx

from heretic.lifecycle.secrets import redact
from heretic.progress import NullReporter, Reporter

VAST_DEFAULT = "https://console.vast.ai/api/v0"
RUNPOD_DEFAULT = "https://api.runpod.io/v2"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ShutdownResult:
    provider: str | None
    ok: bool
    message: str
    status: int | None = None  # the provider's HTTP status when it refused


@dataclass(frozen=True)
class _Target:
    provider: str
    url: str
    key: str
    what: str


def _target(environ: Mapping[str, str]) -> _Target | ShutdownResult:
    """Which provider this process runs on, or a result explaining why we cannot shut down."""
    vast_id = environ.get("CONTAINER_ID", "").strip()
    pod_id = environ.get("RUNPOD_POD_ID", "").strip()
    if pod_id:
        key = environ.get("RUNPOD_API_KEY", "").strip()
        if not key:
            return ShutdownResult("runpod", False, "RUNPOD_POD_ID is set but RUNPOD_API_KEY is "
                                  "not, so this pod cannot terminate itself; terminate it in "
                                  "the RunPod console.")
        base = environ.get("HERETIC_RUNPOD_API_URL", "").strip() or RUNPOD_DEFAULT
        return _Target("runpod", f"{base.rstrip('/')}/pods/{pod_id}", key, f"pod {pod_id}")
    if vast_id:
        key = environ.get("CONTAINER_API_KEY", "").strip()
        if not key:
            return ShutdownResult("vast", False, "CONTAINER_ID is set but CONTAINER_API_KEY is "
                                  "not, so this instance cannot destroy itself; destroy it in "
                                  "the Vast.ai console.")
        base = environ.get("HERETIC_VAST_API_URL", "").strip() or VAST_DEFAULT
        return _Target("vast", f"{base.rstrip('/')}/instances/{vast_id}/", key,
                       f"instance {vast_id}")
    return ShutdownResult(None, False, "Not on Vast.ai or RunPod (no CONTAINER_ID or "
                          "RUNPOD_POD_ID), so heretic cannot stop this machine; it keeps "
                          "running and billing until you stop it.")


def _delete(target: _Target, transport: httpx.BaseTransport | None, retries: int,
            sleep: Callable[[float], None]) -> ShutdownResult:
    headers = {"Authorization": f"Bearer {target.key}", "Accept": "application/json"}
    detail, status = "", None
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), transport=transport) as client:
        for attempt in range(retries + 1):
            try:
                response = client.delete(target.url, headers=headers)
            except httpx.HTTPError as exc:
                detail = f"could not reach the API ({type(exc).__name__})"
            else:
                if response.status_code < 300:
                    return ShutdownResult(target.provider, True,
                                          f"Asked {target.provider} to end {target.what}.")
                detail = f"HTTP {response.status_code}: {response.text.strip()[:200]}"
                status = response.status_code
                if response.status_code not in RETRY_STATUSES:
                    break
            if attempt < retries:
                sleep(min(2.0 * 2**attempt, 30.0))
    message = (f"{target.provider} refused to end {target.what}: {detail}. Stop it in the "
               f"{target.provider} console, or it keeps billing.")
    return ShutdownResult(target.provider, False, redact(message, (target.key,)), status)


def _runpodctl_delete(environ: Mapping[str, str], refused: ShutdownResult) -> ShutdownResult:
    """RunPod's documented way for a pod to end itself, after the REST call was refused."""
    exe = shutil.which("runpodctl", path=environ.get("PATH"))
    pod_id = environ.get("RUNPOD_POD_ID", "").strip()
    if exe is None:
        return ShutdownResult("runpod", False, refused.message + " (runpodctl, RunPod's "
                              "documented route, is not installed in this image.)",
                              refused.status)
    try:
        done = subprocess.run([exe, "pod", "delete", pod_id], env=dict(environ),
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        said = f"{type(exc).__name__}"
    else:
        if done.returncode == 0:
            return ShutdownResult("runpod", True, f"Asked runpod to end pod {pod_id} with "
                                  "runpodctl (the REST call was refused).")
        said = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[:200]}"
    key = environ.get("RUNPOD_API_KEY")
    return ShutdownResult("runpod", False, redact(
        f"{refused.message} runpodctl pod delete failed too ({said}).", (key,)), refused.status)


def shutdown_self(environ: Mapping[str, str] | None = None, *, reporter: Reporter | None = None,
                  transport: httpx.BaseTransport | None = None, retries: int = 3,
                  sleep: Callable[[float], None] = time.sleep) -> ShutdownResult:
    """Destroy/terminate the machine this runs on, when the provider lets it. Never raises."""
    environ = os.environ if environ is None else environ
    reporter = reporter or NullReporter()
    target = _target(environ)
    if isinstance(target, ShutdownResult):
        result = target
    else:
        reporter.info(f"Ending {target.what} on {target.provider} to stop billing.")
        try:
            result = _delete(target, transport, retries, sleep)
            if target.provider == "runpod" and result.status in (401, 403):
                result = _runpodctl_delete(environ, result)
        except Exception as exc:  # must never turn a finished run into a failed one
            result = ShutdownResult(target.provider, False,
                                    f"Shutdown failed unexpectedly: {type(exc).__name__}.")
    (reporter.info if result.ok else reporter.warn)(result.message)
    return result
