"""How each secret of a launch travels to the machine, per provider, and who can read it there.

Secrets only go where the user chose to send them: the Hugging Face token only when HF_TOKEN
is set (or with --hf-token-from-login), and a storage URL with a password or a notify URL
(a webhook URL is itself a credential) only through the provider's secret mechanism: a RunPod
secret reference (`{{ RUNPOD_SECRET_name }}`, resolved inside the pod), or on Vast.ai an
account environment variable (set once with `vastai create env-var`, so nothing is sent with
the launch). A plain value is refused unless --allow-plain-secrets. Readers (what the
providers publish): a Vast host's operator can read a container's environment, whatever the
account settings; RunPod resolves a secret reference only in the pod, and a plain env value
shows in the pod's details to anyone with access to the account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from heretic.errors import ConfigError
from heretic.secrets import url_password

RUNPOD_REF = re.compile(r"^\{\{\s*RUNPOD_SECRET_[A-Za-z0-9_.-]+\s*\}\}$")
# Settings whose values are credentials, with the variable that carries them.
SECRET_SETTINGS = {"storage": "HERETIC_STORAGE", "notify": "HERETIC_NOTIFY"}

VAST_PLAIN = (
    "anyone with access to your Vast account (instance details) and the host's operator (a "
    "third party on most hosts), who can read the container's environment"
)
VAST_ACCOUNT = (
    "stored in your Vast account and put in the container's environment at start: the host's "
    "operator can read it there"
)
RUNPOD_PLAIN = (
    "anyone with access to your RunPod account (pod details) and, on --cloud COMMUNITY, the "
    "host's operator"
)
RUNPOD_SECRET = (
    "resolved by RunPod inside the pod only (the pod's details show the reference): processes "
    "in the pod and, on --cloud COMMUNITY, the host's operator"
)


@dataclass(frozen=True)
class SecretRoute:
    name: str  # the variable in the container
    travels: str
    readable_by: str

    def line(self) -> str:
        return f"{self.name}: {self.travels}; readable by {self.readable_by}."

    def as_dict(self) -> dict[str, str]:
        return {"secret": self.name, "travels": self.travels, "readable_by": self.readable_by}


def is_credential(setting: str, value: str) -> bool:
    if setting == "notify":
        return bool(value.strip())
    if setting == "storage":
        return bool(url_password(value))
    return False


def setting_routes(
    provider: str, env: Mapping[str, str], *, allow_plain: bool
) -> list[SecretRoute]:
    """The routes of the credential settings in `env` (HERETIC_* values about to be sent);
    raises ConfigError for a plain credential without `allow_plain`."""
    routes: list[SecretRoute] = []
    for setting, var in SECRET_SETTINGS.items():
        value = env.get(var)
        if value is None or not is_credential(setting, value):
            continue
        if provider == "runpod" and RUNPOD_REF.match(value.strip()):
            routes.append(SecretRoute(var, "a RunPod secret reference", RUNPOD_SECRET))
            continue
        if not allow_plain:
            raise ConfigError(_refusal(provider, setting, var))
        readers = VAST_PLAIN if provider == "vast" else RUNPOD_PLAIN
        routes.append(
            SecretRoute(var, "a plain environment value (--allow-plain-secrets)", readers)
        )
    return routes


def _refusal(provider: str, setting: str, var: str) -> str:
    what = "a storage URL with a password" if setting == "storage" else "a notify (webhook) URL"
    if provider == "runpod":
        how = (
            f"store it as a RunPod secret (Settings > Secrets) and pass "
            f"--set {setting}='{{{{ RUNPOD_SECRET_name }}}}'"
        )
    else:
        how = (
            f"store it as a Vast account environment variable (`vastai create env-var {var} "
            f"VALUE`, which every instance of the account receives) and launch without "
            f"--set {setting}"
        )
    return (
        f"--set {setting}: {what} would travel as a plain environment value, readable on "
        f"{provider} by {VAST_PLAIN if provider == 'vast' else RUNPOD_PLAIN}. Instead, {how}; "
        "or pass --allow-plain-secrets to send it as it is."
    )


def hf_token_route(provider: str, *, sent: bool, account: bool, secret: str) -> SecretRoute:
    if provider == "runpod":
        return SecretRoute("HF_TOKEN", f"the RunPod secret '{secret}' (a reference)", RUNPOD_SECRET)
    if account:
        return SecretRoute("HF_TOKEN", "your Vast account's environment variable", VAST_ACCOUNT)
    if sent:
        return SecretRoute("HF_TOKEN", "a plain environment value", VAST_PLAIN)
    return SecretRoute("HF_TOKEN", "not sent", "nobody")
