"""The run's phases by name: the recipe enters them, progress.json records them, the signal
handler says what a stop does in each, and the health check reads them back.

A `StrEnum`, so progress.json keeps the plain names it always had and a phase read back from
the file compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    STARTING = "starting"  # progress.json before the lifecycle has entered a phase
    START = "start"  # the signal handler's phase before the run's first
    PROMPTS = "prompts"
    LOAD = "load"
    RESIDUALS = "residuals"
    BASE_EVALUATION = "base evaluation"
    SEARCH = "search"
    SELECT = "select"
    VERIFY = "verify"
    BENCHMARKS = "benchmarks"
    EXPORT = "export"
    UPLOAD = "upload"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
