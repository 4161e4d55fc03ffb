#!/usr/bin/env bash
# The image's locks, one per CUDA line: image-constraints-<line>.txt pins every package the
# image installs (torch at its exact build, cuda-*, nvidia-*, triton, pip and setuptools too),
# so two builds of one tag install the same versions. The Dockerfile installs with
# `pip -c image-constraints-${CUDA_LINE}.txt`; scripts/test_image.sh holds the built image's
# `pip freeze --all` against it; tests/test_image.py holds the lines to the Dockerfile and the
# workflow.
#
# Usage: bash scripts/lock_image.sh [--check | --complete] [LINE...]   (default: all lines)
#   (no flag)   resolve the newest versions again and rewrite the locks (after changing
#               pyproject.toml's dependencies or TORCH below); then rebuild and test.
#   --check     resolve with the lock as constraints; fail if anything comes out unpinned.
#   --complete  the same, and pin what the lock lists as unresolved here (cu126: torch's own
#               nvidia-*-cu12 and triton, from download.pytorch.org): the docker workflow runs
#               this before building cu126; anything else unpinned still fails.
#
# Resolution is `pip install --dry-run --report` (metadata only, nothing is installed) for the
# image's Python and platform (--python-version, manylinux up to bookworm's glibc 2.36), so
# this machine's own Python does not matter. Pythons: 3.12 is the published base
# (python:3.12-slim-bookworm, the Dockerfile's BASE_IMAGE); 3.11 is Debian bookworm's python3,
# the stand-in base that scripts/test_image.sh builds on. A version that differs between them
# gets a python_version marker. Each Python's resolution runs on that Python where this machine
# has it (pip evaluates markers with its own interpreter). This machine's pip settings
# (certificate, local indexes) apply.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

TORCH=2.13.0
IMAGE_PY=$(sed -n 's/^ARG BASE_IMAGE=python:\([0-9]*\.[0-9]*\)\..*/\1/p' Dockerfile)
STANDIN_PY=3.11
: "${IMAGE_PY:?no python:X.Y... BASE_IMAGE in the Dockerfile}"

mode="write"
lines=()
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --complete) mode=complete ;;
        cu126 | cu130 | cpu) lines+=("$arg") ;;
        *) echo "usage: lock_image.sh [--check | --complete] [cu126|cu130|cpu ...]" >&2; exit 2 ;;
    esac
done
[ "${#lines[@]}" -gt 0 ] || lines=(cu126 cu130 cpu)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# pip PY: a pip run by Python PY itself where this machine has it (python3.12, python3.11),
# because pip evaluates environment markers (`; python_version < "3.12"`) with the interpreter
# that runs it, whatever --python-version says; else this machine's python3, with a warning.
pip_for() {
    local py=$1 interpreter=""
    local found
    for found in $(command -v "python$py") "$(pyenv root 2>/dev/null)"/versions/"$py".*/bin/"python$py"; do
        if [ -x "$found" ] && "$found" -c 'import venv' 2>/dev/null; then
            interpreter=$found
            break
        fi
    done
    if [ -z "${interpreter:-}" ]; then
        echo "lock_image.sh: no python$py here; resolving for $py with $(python3 --version)," \
            "whose environment markers pip evaluates instead" >&2
        interpreter=python3
    fi
    if [ ! -x "$tmp/venv-$py/bin/python" ]; then
        "$interpreter" -m venv "$tmp/venv-$py"
        "$tmp/venv-$py/bin/python" -m pip install -q --upgrade pip
    fi
    pip=("$tmp/venv-$py/bin/python" -m pip)
}

platforms=()
for glibc in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
    --platform manylinux1_x86_64 --platform linux_x86_64)

# What the Dockerfile installs besides torch and the package itself: pyproject's dependencies
# and the postgres extra (heretic goes in with --no-deps), plus the venv's own pip and setuptools.
python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres'] + ['pip', 'setuptools']))" \
    >"$tmp/requirements.txt"

reachable() {  # reachable URL: a torch index answers (the cu126/cpu indexes do not here)
    [ -z "$1" ] || python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=15)' "$1" >/dev/null 2>&1
}

# resolve PY REPORT TORCH_SPEC INDEX [pip args...]: one dry-run resolution
resolve() {
    local py=$1 report=$2 spec=$3 index=$4
    shift 4
    local extra=()
    [ -z "$index" ] || extra=(--extra-index-url "$index")
    pip_for "$py"
    "${pip[@]}" install -q --dry-run --ignore-installed --report "$report" \
        --python-version "$py" --implementation cp --abi "cp${py/./}" "${platforms[@]}" \
        --only-binary=:all: "${extra[@]}" "$@" "$spec" -r "$tmp/requirements.txt" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}

for line in "${lines[@]}"; do
    out=image-constraints-$line.txt
    case "$line" in
        cu130) spec="torch===$TORCH" index="" pythons=("$IMAGE_PY" "$STANDIN_PY")
            where="PyPI (torch $TORCH for Linux x86_64 on PyPI is the CUDA 13.0 build)" ;;
        cu126) spec="torch===$TORCH+cu126" index=https://download.pytorch.org/whl/cu126
            pythons=("$IMAGE_PY") where="$index" ;;
        cpu) spec="torch===$TORCH+cpu" index=https://download.pytorch.org/whl/cpu
            pythons=("$STANDIN_PY") where="$index (never published: the local test build)" ;;
    esac
    # torch's index as pip sees it here: unreachable indexes are left out (pip would retry
    # them for minutes); a local find-links folder may still hold the wheel (cpu here).
    index_here=""
    if reachable "$index"; then index_here=$index; fi
    if [ "$mode" != write ]; then
        [ -f "$out" ] || { echo "$out is missing: bash scripts/lock_image.sh $line" >&2; exit 1; }
        if [ "$mode" = complete ] && [ "$line" = cu126 ] && [ -z "$index_here" ]; then
            echo "--complete cu126 needs $index (not reachable here)" >&2
            exit 1
        fi
        for py in "${pythons[@]}"; do
            if [ "$line" = cu126 ] && [ -z "$index_here" ]; then
                echo "$out: $index is not reachable here; torch's own packages stay unresolved" >&2
                continue
            fi
            # The lock's pins for this Python, markers evaluated here (not by pip, see pip_for).
            python3 scripts/image_lock.py pins-for "$out" "$py" >"$tmp/pins-$py.txt"
            resolve "$py" "$tmp/check.json" "$spec" "$index_here" -c "$tmp/pins-$py.txt"
            append=()
            [ "$mode" != complete ] || append=(--append-unresolved)
            python3 scripts/image_lock.py check-report "$out" "$py" "$tmp/check.json" "${append[@]}"
        done
        continue
    fi
    reports=()
    drop=()
    unresolved=""
    for py in "${pythons[@]}"; do
        if [ "$line" = cu126 ] && [ -z "$index_here" ]; then
            # Everything but torch's own CUDA packages resolves the same with PyPI's torch
            # build of the same version (same Python-level requirements); those are dropped
            # and listed as unresolved, for the workflow's --complete.
            resolve "$py" "$tmp/$line-$py.json" "torch===$TORCH" ""
            drop=(--drop-torch-build)
            unresolved="torch==$TORCH+cu126's own requirements (nvidia-*-cu12 and triton,
pinned exactly by that build) are not resolved: its index was not reachable where
this file was written. The docker workflow pins them before building cu126
(lock_image.sh --complete cu126, which fails on anything else unpinned) and prints
them in its log."
        else
            resolve "$py" "$tmp/$line-$py.json" "$spec" "$index_here"
        fi
        reports+=("$py=$tmp/$line-$py.json")
    done
    header="Exact versions for the heretic image, CUDA line $line (pip -c). Do not edit:
regenerate with bash scripts/lock_image.sh $line (then rebuild and test the image).
line: $line
torch: ${spec/===/==} from $where
python: ${pythons[*]}"
    python3 scripts/image_lock.py write "$out" --line "$line" --torch "${spec#torch===}" \
        --header "$header" --unresolved "$unresolved" "${drop[@]}" "${reports[@]}"
done
