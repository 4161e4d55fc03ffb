"""What an edit costs on real tasks: lm-evaluation-harness (`heretic[eval]`, lm-eval 0.4.x) on the
base model and on the selected edit, both in memory (the edit is the hooked one, switched on
around the evaluation; nothing is exported for it).

A benchmark is an lm-eval task name (`piqa`, `mmlu_abstract_algebra`, ...; its data comes from
the Hub, so a name costs a download) or the path of a task YAML file or a folder of them (a
local task: `dataset_path: json` with `data_files` reads a local file, offline).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heretic.engine.loading import LoadedModel
from heretic.errors import ConfigError

# Keys of lm-eval's results that describe the run, not the model.
_NOT_METRICS = frozenset({"alias", "sample_len", "samples"})
_INSTALL = "Install the extra: pip install 'heretic[eval]' (lm-evaluation-harness 0.4.x)."


@dataclass(frozen=True)
class Score:
    task: str
    metric: str
    value: float
    stderr: float | None


@dataclass(frozen=True)
class Comparison:
    task: str
    metric: str
    base: float
    edited: float
    base_stderr: float | None
    edited_stderr: float | None

    @property
    def difference(self) -> float:
        return self.edited - self.base


def _lm_eval() -> Any:
    try:
        import lm_eval
    except ImportError as exc:
        raise ConfigError(
            "--benchmarks needs lm-evaluation-harness, which is missing.", _INSTALL
        ) from exc
    return lm_eval


def _yaml_task_names(path: Path) -> list[str]:
    import yaml

    files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
    names = []
    for f in files:
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            names.append(data["task"])
    return names


@dataclass(frozen=True)
class TaskPlan:
    names: list[str]
    include_paths: list[str]
    defaults: bool  # a built-in task is named: lm-eval's own task index is needed


def plan_tasks(benchmarks: Sequence[str]) -> TaskPlan:
    names: list[str] = []
    paths: list[str] = []
    defaults = False
    for item in benchmarks:
        path = Path(item)
        if item.endswith((".yaml", ".yml")) or path.is_dir():
            if not path.exists():
                raise ConfigError(f"The benchmark task file {item} does not exist.", _HINT)
            found = _yaml_task_names(path)
            if not found:
                raise ConfigError(f"{item} defines no lm-eval task (no `task:` key).", _HINT)
            names += found
            paths.append(str(path.parent if path.is_file() else path))
        else:
            names.append(item)
            defaults = True
    return TaskPlan(names, sorted(set(paths)), defaults)


_HINT = (
    "Name lm-eval tasks (`lm-eval ls tasks` lists them) or task YAML files/folders, "
    "comma-separated: --benchmarks piqa,./tasks/my_task.yaml."
)


def _task_manager(plan: TaskPlan) -> Any:
    _lm_eval()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=plan.include_paths or None, include_defaults=plan.defaults)


def check_benchmarks(benchmarks: Sequence[str]) -> TaskPlan:
    """Before the search: lm-eval is installed and knows every task (seconds, no download)."""
    plan = plan_tasks(benchmarks)
    known = set(_task_manager(plan).all_tasks)
    missing = [n for n in plan.names if n not in known]
    if missing:
        raise ConfigError(f"lm-evaluation-harness knows no task {missing}.", _HINT)
    return plan


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval logs every request batch at INFO; a run's log keeps heretic's own lines."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def evaluate(
    loaded: LoadedModel,
    plan: TaskPlan,
    *,
    limit: float | None,
    batch_size: int,
    seed: int = 0,
) -> list[Score]:
    """Every metric of every task, as the model in `loaded` is now (hooks included)."""
    lm_eval = _lm_eval()
    import torch
    from lm_eval.models.huggingface import HFLM

    model = HFLM(
        pretrained=loaded.model,
        tokenizer=loaded.tokenizer,
        batch_size=batch_size,
        device=str(loaded.device),
    )
    # The loader leaves the parameters requiring grad (issue 20): autograd must be off here too,
    # whatever lm-eval does inside.
    with _quiet(), torch.no_grad():
        out = lm_eval.simple_evaluate(
            model=model,
            tasks=list(plan.names),
            limit=int(limit) if limit is not None and limit >= 1 else limit,
            task_manager=_task_manager(plan),
            log_samples=False,
            bootstrap_iters=1000,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    return _scores(out["results"])


def _scores(results: dict[str, dict[str, Any]]) -> list[Score]:
    scores = []
    for task, metrics in sorted(results.items()):
        for key, value in sorted(metrics.items()):
            name, _, _filter = key.partition(",")
            if (
                name in _NOT_METRICS
                or name.endswith("_stderr")
                or not isinstance(value, int | float)
            ):
                continue
            stderr = metrics.get(f"{name}_stderr,{_filter}")
            err = float(stderr) if isinstance(stderr, int | float) else None
            scores.append(Score(task, name, float(value), err))
    return scores


def compare(
    loaded: LoadedModel,
    plan: TaskPlan,
    edited: Callable[[], contextlib.AbstractContextManager[object]],
    *,
    limit: float | None,
    batch_size: int,
    seed: int = 0,
) -> list[Comparison]:
    """The tasks on the base model, then inside `edited()` (the edit switched on)."""
    base = evaluate(loaded, plan, limit=limit, batch_size=batch_size, seed=seed)
    with edited():
        after = evaluate(loaded, plan, limit=limit, batch_size=batch_size, seed=seed)
    by_key = {(s.task, s.metric): s for s in after}
    return [
        Comparison(b.task, b.metric, b.value, e.value, b.stderr, e.stderr)
        for b in base
        if (e := by_key.get((b.task, b.metric))) is not None
    ]
