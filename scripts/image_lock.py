"""The image's locks (image-constraints-<line>.txt): write one from pip's resolution reports,
and hold an installation (a report or a `pip freeze`) against one.

Used by scripts/lock_image.sh (writing, --check, --complete) and scripts/test_image.sh (the
built image's `pip freeze --all` against its line's lock); tests/test_image_lock.py covers it.
Standard library only: it runs on the host's python3, outside any virtual environment.

A lock is a pip constraints file. A pin that differs between the Pythons the line is built
for carries a marker (`numpy==2.5.5; python_version == "3.12"`); no other markers are written.
A line whose torch index cannot be reached where the lock is written (cu126) lists what is
left for the workflow under `# --- unresolved here ---`, so nothing floats unnoticed.

Usage:
  image_lock.py write LOCK --line L --torch SPEC --header TEXT PY=REPORT... [--drop-torch-build]
  image_lock.py check-report LOCK PY REPORT [--append-unresolved]
  image_lock.py check-freeze LOCK PY FREEZE
  image_lock.py pins-for LOCK PY      (the pins for Python PY, markers resolved, on stdout)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

PINS_MARK = "# --- pins ---"
UNRESOLVED_MARK = "# --- unresolved here ---"
# What a torch CUDA build brings itself and pins exactly (its own index decides them):
# the part of a cu126 lock that can only be resolved where download.pytorch.org is reachable.
TORCH_BUILD = re.compile(r"^(nvidia-(?!ml-py$).*|cuda-.*|triton)$")
# Installed from the source tree, not from an index: never in a lock.
LOCAL = {"heretic"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_python(marker: str) -> str | None:
    found = re.fullmatch(r'\s*python_version\s*==\s*"([0-9.]+)"\s*', marker)
    if not found:
        raise ValueError(f"unsupported marker in a lock: {marker!r}")
    return found.group(1)


def read_pins(lock: Path, python: str) -> dict[str, str]:
    """name -> exact version for an image on `python` (e.g. "3.12")."""
    pins: dict[str, str] = {}
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        if marker and _marker_python(marker) != python:
            continue
        name, sep, version = requirement.strip().partition("==")
        if not sep or not version or any(c in version for c in "<>=!~*, "):
            raise ValueError(f"{lock.name}: not an exact pin: {line!r}")
        pins[norm(name)] = version
    return pins


def unresolved_note(lock: Path) -> list[str]:
    """The lines under `# --- unresolved here ---` (empty when the lock is complete)."""
    text = lock.read_text()
    if UNRESOLVED_MARK not in text:
        return []
    tail = text.split(UNRESOLVED_MARK, 1)[1].split(PINS_MARK, 1)[0]
    return [line for line in tail.splitlines() if line.strip()]


def _report_versions(report: Path) -> dict[str, str]:
    data = json.loads(report.read_text())
    return {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


def write(argv: list[str]) -> int:
    lock = Path(argv[0])
    opts: dict[str, str] = {}
    reports: dict[str, dict[str, str]] = {}
    drop_torch_build = False
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "--drop-torch-build":
            drop_torch_build = True
        elif arg.startswith("--"):
            opts[arg[2:]] = rest.pop(0)
        else:
            python, _, path = arg.partition("=")
            reports[python] = _report_versions(Path(path))
    torch_version = opts["torch"]
    by_name: dict[str, dict[str, str]] = {}
    for python, versions in reports.items():
        for name, version in versions.items():
            if name in LOCAL or (drop_torch_build and TORCH_BUILD.match(name)):
                continue
            by_name.setdefault(name, {})[python] = version
    # torch: the exact build (local label included) the Dockerfile installs for this line.
    by_name["torch"] = dict.fromkeys(reports, torch_version)
    out = [f"# {line}" if line else "#" for line in opts["header"].splitlines()]
    if drop_torch_build:
        out += [UNRESOLVED_MARK, *(f"# {line}" for line in opts["unresolved"].splitlines())]
    out.append(PINS_MARK)
    for name in sorted(by_name):
        versions = by_name[name]
        if len(set(versions.values())) == 1 and len(versions) == len(reports):
            out.append(f"{name}=={next(iter(versions.values()))}")
        else:  # differs between the Pythons, or only one of them needs it
            out += [f'{name}=={v}; python_version == "{p}"' for p, v in sorted(versions.items())]
    lock.write_text("\n".join(out) + "\n")
    print(f"wrote {lock.name}: {sum(1 for o in out if '==' in o and not o.startswith('#'))} pins")
    return 0


def differences(pins: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What `installed` (name -> version) has that the lock does not pin at that version."""
    bad = []
    for name, version in sorted(installed.items()):
        if name in LOCAL:
            continue
        want = pins.get(name)
        if want is None:
            bad.append(f"{name}=={version} is not pinned")
        elif want != version:
            bad.append(f"{name}=={version} is pinned at {want}")
    return bad


def check_report(argv: list[str]) -> int:
    """A resolution made with the lock as constraints: every package must be pinned. With
    --append-unresolved (the workflow, cu126): pins torch's own build packages that the lock
    left unresolved into it; anything else unpinned is still an error."""
    lock, python, report = Path(argv[0]), argv[1], Path(argv[2])
    append = "--append-unresolved" in argv
    installed = _report_versions(report)
    pins = read_pins(lock, python)
    missing = {n: v for n, v in installed.items() if n not in pins and n not in LOCAL}
    if append and unresolved_note(lock):
        added = {n: v for n, v in missing.items() if TORCH_BUILD.match(n)}
        if added:
            with lock.open("a") as f:
                f.writelines(f"{n}=={v}\n" for n, v in sorted(added.items()))
            print(
                f"{lock.name}: resolved here and appended: "
                + ", ".join(f"{n}=={v}" for n, v in sorted(added.items()))
            )
    bad = differences(read_pins(lock, python), installed)
    if bad:
        print(
            f"{lock.name} does not pin what Python {python} installs: " + "; ".join(bad),
            file=sys.stderr,
        )
        return 1
    print(f"{lock.name}: all {len(installed)} packages pinned (Python {python})")
    return 0


def parse_freeze(text: str) -> dict[str, str]:
    installed = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if " @ " in line:  # a direct reference (the local project): name only
            installed[norm(line.split(" @ ", 1)[0])] = "@"
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"not a `pip freeze` line: {line!r}")
        installed[norm(name)] = version
    return installed


def check_freeze(argv: list[str]) -> int:
    lock, python, freeze = Path(argv[0]), argv[1], Path(argv[2])
    installed = parse_freeze(freeze.read_text())
    bad = differences(read_pins(lock, python), installed)
    if bad:
        print(f"the image does not match {lock.name}: " + "; ".join(bad), file=sys.stderr)
        return 1
    print(
        f"ok: all {len(installed) - len(LOCAL & installed.keys())} installed packages "
        f"pinned by {lock.name}"
    )
    return 0


def pins_for(argv: list[str]) -> int:
    for name, version in sorted(read_pins(Path(argv[0]), argv[1]).items()):
        print(f"{name}=={version}")
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "write": write,
        "check-report": check_report,
        "check-freeze": check_freeze,
        "pins-for": pins_for,
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except (OSError, ValueError, KeyError, IndexError) as exc:
        print(f"image_lock.py {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
