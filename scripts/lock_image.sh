#!/usr/bin/env bash
# Regenerate image-constraints.txt: the exact version of every package the image installs
# besides torch's own CUDA wheels (nvidia-*, triton: torch pins those exactly itself), so two
# builds of the same tag install the same versions. Run after changing pyproject.toml's
# dependencies or the torch version, then rebuild and test: bash scripts/test_image.sh
#
# Resolves with this machine's python3 (pip --dry-run --report: metadata only, nothing is
# installed) for `torch==TORCH ".[postgres]"`, TORCH read from the current file.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

out=image-constraints.txt
torch=$(sed -n 's/^torch==//p' "$out")
: "${torch:?no torch== line in $out}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --dry-run --ignore-installed \
    --report "$tmp/report.json" "torch==$torch" ".[postgres]" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
{
    sed -n '1,/^# --- pins ---$/p' "$out"
    "$tmp/venv/bin/python" - "$tmp/report.json" <<'PY'
import json, re, sys

report = json.load(open(sys.argv[1]))
pins = {}
for item in report["install"]:
    meta = item["metadata"]
    name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
    version = meta["version"].split("+")[0]  # torch's local label comes from the CUDA line
    # torch's own CUDA wheels: the torch build pins them (nvidia-ml-py is heretic's own).
    if name in ("heretic", "triton") or (name.startswith("nvidia-") and name != "nvidia-ml-py"):
        continue
    pins[name] = version
print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
PY
} >"$tmp/new.txt"
mv "$tmp/new.txt" "$out"
echo "wrote $out ($(grep -c '==' "$out") pins)"
