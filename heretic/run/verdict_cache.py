"""The study's verdict cache: every verdict a paid judge (a model or an endpoint) returned,
keyed by judge name, request and answer (`heretic.engine.judge.cache_key`), so a resumed or
re-run study asks the judge only about answers it has not read yet.

One JSON line per verdict, appended under a lock (workers of one study share the file); a
torn last line from a killed process is skipped on reading, which costs one verdict again.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

from heretic.engine.judge import VERDICTS, Verdict

FILENAME = "verdicts.jsonl"


class VerdictCache:
    def __init__(self, study_dir: Path) -> None:
        self.path = study_dir / FILENAME
        self._known: dict[str, Verdict] = {}
        self._read()

    def _read(self) -> None:
        if not self.path.is_file():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            verdict = row.get("verdict") if isinstance(row, dict) else None
            if isinstance(row, dict) and isinstance(row.get("key"), str) and verdict in VERDICTS:
                self._known[row["key"]] = verdict

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str) -> Verdict | None:
        return self._known.get(key)

    def put(self, items: dict[str, Verdict]) -> None:
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({"key": k, "verdict": v}) + "\n" for k, v in items.items())
        with open(self.path, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(text)
            f.flush()
        self._known |= items
