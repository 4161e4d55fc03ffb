#!/usr/bin/env bash
# Run by the Dockerfile at the end of each pip step, in the same RUN (a file deleted in a later
# layer still ships in the earlier one): prints what the venv holds, then removes what a run
# never uses. Usage: slim_image.sh CUDA_LINE
#   - pip's cache and any other cache under /root/.cache, /tmp;
#   - test folders (`tests` directories of the installed packages: numpy, sympy, networkx,
#     pyarrow, ...; never imported by a run. `testing` modules, which some packages import, stay);
#   - bitsandbytes' libraries for other CUDA versions and other GPUs: its wheel brings one per
#     CUDA release (11.8 to 13.2), ROCm and XPU release, and loads only the one matching
#     torch.version.cuda (the CPU one on a CPU torch);
#   - static libraries (*.a), which nothing links against at run time;
#   - duplicate files: a wheel cannot hold symlinks, so a library's soname aliases arrive as
#     full copies (triton's libcupti.so, .so.12 and .so.2025.1.1); identical files in one
#     folder become symlinks to one of them.
# torch/include, the nvidia headers and triton's own CUDA tools stay: triton compiles its
# kernels' launchers at run time with them.
set -euo pipefail
line=${1:?usage: slim_image.sh CUDA_LINE}
site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

mb() {  # total MB of the paths given (0 for none)
    [ "$#" -gt 0 ] || { echo 0; return; }
    du -sm "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
say() { printf 'slim_image: %s\n' "$*"; }

say "venv before: $(mb /opt/venv) MB; largest: $(cd "$site" && du -sm -- * 2>/dev/null \
    | sort -rn | head -n 8 | awk '{printf "%s %s MB, ", $2, $1}')"

mapfile -t caches < <(find /root/.cache /tmp -mindepth 1 -maxdepth 1 2>/dev/null)
mapfile -t tests < <(find "$site" -type d -name tests -prune)
# bitsandbytes keeps the library for this line's CUDA (13.0 -> cuda130) and the CPU one.
case "$line" in
    cu126) keep=libbitsandbytes_cuda126.so ;;
    cu130) keep=libbitsandbytes_cuda130.so ;;
    *) keep=libbitsandbytes_cpu.so ;;
esac
mapfile -t bnb < <(find "$site/bitsandbytes" -maxdepth 1 -name 'libbitsandbytes_*.so' \
    ! -name "$keep" ! -name libbitsandbytes_cpu.so 2>/dev/null)
mapfile -t static < <(find /opt/venv -name '*.a' -type f)

say "removing: caches $(mb "${caches[@]}") MB, ${#tests[@]} test folders $(mb "${tests[@]}") MB," \
    "${#bnb[@]} bitsandbytes libraries for other CUDA/ROCm/XPU versions $(mb "${bnb[@]}") MB," \
    "${#static[@]} static libraries $(mb "${static[@]}") MB"
rm -rf "${caches[@]}" "${tests[@]}" "${bnb[@]}" "${static[@]}"
/opt/venv/bin/python - /opt/venv <<'PY'
import hashlib, os, sys
from collections import defaultdict

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()

same_size = defaultdict(list)
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        path = os.path.join(root, name)
        if not os.path.islink(path) and os.path.getsize(path) >= 1 << 20:
            same_size[(root, os.path.getsize(path))].append(path)
count = saved = 0
for (root, size), paths in same_size.items():
    by_digest = defaultdict(list)
    for path in paths if len(paths) > 1 else []:
        by_digest[digest(path)].append(path)
    for copies in by_digest.values():
        keep = max(copies, key=lambda p: (len(p), p))  # the fully versioned name stays a file
        for path in copies:
            if path != keep:
                os.remove(path)
                os.symlink(os.path.basename(keep), path)
                count += 1
                saved += size
print(f"slim_image: {count} duplicate files replaced by symlinks, {saved >> 20} MB")
PY
say "venv after: $(mb /opt/venv) MB"
