"""Benchmark: what the judge and the benchmarks cost, per trial and per run, on the demo model.

    python benchmarks/bench_judge.py [--trials 6]

Runs the real `heretic run` on the built-in demo model four ways and prints, from each run's
report.json, the median trial time, the judge's time on the verification answers, the
one-request check and the lm-eval time:

1. markers (the default; the baseline), with --benchmarks over a local lm-eval task;
2. --judge chat:MODEL (a local chat judge), in the search too;
3. --judge classifier:MODEL (a local sequence-classification judge), in the search too;
4. --judge endpoint:URL against `transformers serve` on loopback, in the search too.

The judge models are the tests' tiny ones (tests/tiny_judges.py: a 2-layer Llama of the demo
model's size), so the figures are the overhead of heretic's judging path (prompting, batching,
parsing, the verdict cache, HTTP) and not what a real 1-8B judge costs: that scales with the
judge's forward passes, roughly its size times the number of answers read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_judges import build_chat_judge, build_classifier_judge  # noqa: E402

HERETIC = [sys.executable, "-m", "heretic"]
TASK = """task: bench_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
VERBS = [
    ("bake", "steal"),
    ("paint", "hack"),
    ("clean", "rob"),
    ("fix", "burn"),
    ("plant", "poison"),
]


def _task(root: Path) -> Path:
    rows = [
        {"question": f"how do i {good} it", "choices": [good, bad], "answer": 0}
        for good, bad in VERBS * 4
    ]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = root / "bench_choice.yaml"
    path.write_text(TASK.format(data=root / "data.jsonl"))
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [
        str(exe),
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"transformers serve did not start: {log.read_text()[-1000:]}")


def _run(name: str, args: list[str], out: Path, env: dict[str, str]) -> dict[str, object]:
    t = time.perf_counter()
    result = subprocess.run(
        HERETIC + ["run", "--output", str(out), *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    probe = re.search(r"to a test pair in ([0-9.]+) s", result.stderr)
    judge = report.get("judge") or {}
    bench = report.get("benchmarks") or {}
    return {
        "run": name,
        "wall_s": round(wall, 1),
        "trial_median_s": report["timings_s"]["trial_median"],
        "trials_total_s": report["timings_s"]["trials_total"],
        "judge_check_s": float(probe.group(1)) if probe else None,
        "verification_judge_s": judge.get("seconds"),
        "verification_verdicts_asked": judge.get("asked"),
        "benchmarks_s": bench.get("seconds"),
        "benchmark_examples": len(VERBS) * 4 if bench else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    if os.environ.get("HERETIC_CACHE"):
        env["HERETIC_CACHE"] = os.environ["HERETIC_CACHE"]
    common = ["--trials", str(args.trials), "--set", "kl_cap=100", "--set", "max_refusal_share=1"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chat = build_chat_judge(root / "chat", "complied")
        classifier = build_classifier_judge(root / "classifier", pick=0)
        task = _task(root)
        rows = [
            _run("markers + benchmarks", [*common, "--benchmarks", str(task)], root / "o1", env)
        ]
        search = ["--judge-in-search"]
        rows.append(
            _run("chat judge", [*common, "--judge", f"chat:{chat}", *search], root / "o2", env)
        )
        rows.append(
            _run(
                "classifier judge",
                [*common, "--judge", f"classifier:{classifier}", *search],
                root / "o3",
                env,
            )
        )
        proc, base = _serve(chat, root / "serve.log")
        try:
            endpoint = ["--judge", f"endpoint:{base}", "--judge-model", str(chat), *search]
            rows.append(
                _run("endpoint judge (transformers serve)", [*common, *endpoint], root / "o4", env)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
