"""`--max-hours` inside the container: past the deadline this machine stops billing.

At the start of `heretic run` a deadline already passed ends the rental at once (and the run
exits 75 without starting: a provider restart finds the same); during the run a watchdog
thread ends it when the time comes. The end is a stop (the GPU stops billing, the volume with
the study is kept), or a destroy with `--on-failure destroy`; `--on-failure keep` does not
soften a deadline the user set. Like every self-termination it acts only on a machine heretic
launched (HERETIC_LAUNCHED_BY); `heretic cloud watch --max-hours` enforces the same deadline
from the user's machine, for a container that hangs or never starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from heretic.errors import InterruptedRun
from heretic.lifecycle.retry import Deadline, Watchdog
from heretic.lifecycle.shutdown import ShutdownResult, end_self, provider_of
from heretic.progress import Reporter


def end_at_deadline(
    deadline: Deadline, policy: str, environ: Mapping[str, str], reporter: Reporter
) -> ShutdownResult | None:
    """Stop (or destroy) this machine because the deadline passed; None off a provider."""
    if provider_of(environ) is None:
        reporter.warn(f"{deadline.describe()} reached; not on Vast.ai or RunPod: nothing to end.")
        return None
    reporter.warn(f"{deadline.describe()} reached: ending this machine so it stops billing.")
    return end_self("destroy" if policy == "destroy" else "stop", environ, reporter=reporter)


@contextmanager
def deadline_watch(
    deadline: Deadline, policy: str, environ: Mapping[str, str], reporter: Reporter
) -> Iterator[Watchdog | None]:
    if deadline.expires_at is None:
        yield None
        return
    if deadline.expired():
        end_at_deadline(deadline, policy, environ, reporter)
        raise InterruptedRun(
            f"{deadline.describe()} had passed before the run started.",
            "Nothing was run; launch again with a larger --max-hours to go on (the study resumes).",
        )
    dog = Watchdog(deadline, lambda: end_at_deadline(deadline, policy, environ, reporter))
    dog.start()
    try:
        yield dog
    finally:
        dog.cancel()
