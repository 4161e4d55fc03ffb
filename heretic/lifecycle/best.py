"""The "best so far" of progress.json, by the run's own selection policy.

The engine reports each completed trial's score; the status must show the trial the run would
pick if it stopped now, not the latest one. This mirrors `heretic.engine.selection.select` on
plain dicts ({"trial", "refusals", "kl_divergence"}), so it works across restarts and across
worker processes that share one progress.json: the best of the recorded best and the new
score always wins. Trials outside the policy's cap rank after every acceptable one.
"""

from __future__ import annotations

from typing import Any


def _kl(score: dict[str, Any]) -> float | None:
    value = score.get("kl_divergence", score.get("kl"))
    return None if value is None else float(value)


def _rank(score: dict[str, Any], settings: Any) -> tuple[Any, ...] | None:
    refusals, kl = score.get("refusals"), _kl(score)
    if refusals is None or kl is None:
        return None
    trial = score.get("trial", 0)
    if getattr(settings, "selection", "fewest-refusals") == "lowest-kl":
        outside = refusals > getattr(settings, "refusal_cap", 5)
        return (outside, kl, refusals, trial)
    outside = kl > getattr(settings, "kl_cap", 0.5)
    return (outside, refusals, kl, trial)


def better(previous: dict[str, Any] | None, new: dict[str, Any] | None,
           settings: Any) -> dict[str, Any] | None:
    """The better of two trial scores under `settings`' policy (new wins when incomparable)."""
    if not previous or not new:
        return new or previous
    old_rank, new_rank = _rank(previous, settings), _rank(new, settings)
    if old_rank is None or new_rank is None:
        return new
    return previous if old_rank <= new_rank else new
