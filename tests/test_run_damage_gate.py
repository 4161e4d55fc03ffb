"""End-to-end on the demo model: an edit that changes more everyday answers than
max_changed_share is held back (report and card written, no model, exit 9 naming the export
command), and `heretic export --trial N` still writes it, its card stating the share first."""

from __future__ import annotations

import json

import pytest
from test_run_cli import run_cli

pytestmark = pytest.mark.slow


def test_the_damage_gate_keeps_a_damaging_edit_on_the_machine(tmp_path, cli_env) -> None:
    out = tmp_path / "out"
    # Edits far stronger than the search's range, over every layer: they remove the refusal
    # and change everyday answers (the demo keeps its answers under full-strength edits); the
    # caps are lifted so that selection takes one, and a limit of 0 changed answers closes
    # the gate.
    args = ["run", "--trials", "2", "--output", str(out)]
    args += ["--set", "max_weight=4,5", "--set", "min_weight_fraction=0.9,1.0"]
    args += ["--set", "kl_cap=100", "--set", "max_refusal_share=1"]
    args += ["--set", "max_changed_share=0"]
    result = run_cli(args, cli_env)
    assert result.returncode == 9, result.stderr[-3000:]
    assert "max_changed_share=0" in result.stderr
    assert f"heretic export --output {out} --trial" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    gate = report["gate"]
    assert gate["passed"] is False and gate["changed_share"] > 0
    assert gate["changed_share"] == pytest.approx(
        1 - report["verification"]["selected"]["harmless_unchanged"], abs=1e-4
    )
    assert not (out / "model").exists()  # nothing to upload
    card = (out / "README.md").read_text()
    lines = card.split("\n")
    title_on = lines.index(next(line for line in lines if line.startswith("# ")))
    head = "\n".join(lines[title_on : title_on + 6])
    assert "Everyday answers:" in head and "Held back by the damage gate" in head

    number = report["selected_trial"]
    exported = run_cli(["export", "--output", str(out), "--trial", str(number)], cli_env)
    assert exported.returncode == 0, exported.stderr[-3000:]  # an export asked for is not gated
    dest = out / f"trial-{number}"
    assert (dest / "model" / "config.json").is_file()
    first = (dest / "README.md").read_text().split("# ", 1)[1].split("\n")[2]
    unchanged = json.loads((dest / "report.json").read_text())["verification"]["selected"]
    assert first.startswith(f"**Everyday answers: {unchanged['harmless_unchanged']:.0%}")
