"""The preflight report: a list of checks, each OK / WARN / FAIL with measured value and need."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from heretic.jsontypes import JsonDict
from heretic.preflight.profiles_auto import ProfileChoice


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    measured: str
    need: str = ""
    detail: str = ""  # for WARN/FAIL: what to change

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "status": self.status.value,
            "measured": self.measured,
            "need": self.need,
            "detail": self.detail,
        }


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)
    profile: ProfileChoice | None = None
    estimate: JsonDict | None = None  # parameter count and memory estimate, if known

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAIL]

    def summary(self) -> str:
        """One paragraph naming every FAIL and what to change (for PreflightError)."""
        if not self.failed:
            return "All preflight checks passed."
        parts = [
            f"{c.name}: {c.measured}" + (f" ({c.detail})" if c.detail else "")
            for c in self.failures
        ]
        return "Preflight failed: " + "; ".join(parts) + "."

    def to_dict(self) -> JsonDict:
        return {
            "ok": not self.failed,
            "checks": [c.to_dict() for c in self.checks],
            "profile": self.profile.to_dict() if self.profile else None,
            "estimate": self.estimate,
        }
