#!/usr/bin/env bash
# Build the heretic image here (CPU line, stand-in base) and run it exactly as a provider starts
# it: through the image's own ENTRYPOINT (tini -> entrypoint.sh) with a host folder as the
# /workspace volume. No Docker engine is needed: Debian's buildah builds and runs it as root
# with chroot isolation. Checks, each one a real container start:
#   1. no arguments: the demo runs end to end, exit 0, report.json on the volume;
#   2. the same start again (a provider restart): exit 0 at once, no new trial;
#   3. SIGTERM during the trials: exit 75 after the current trial; the next start ends with
#      exactly the requested trials;
#   4. --workers 2 and SIGTERM: every trial in flight finishes and is kept (none FAIL);
#   5. a bad argument (exit 2) and a missing model (exit 5) print their message.
# Prints build time, image size and demo time (recorded in BENCHMARKS.md).
#
# Usage (as root): bash scripts/test_image.sh [--build-only]
# Installs buildah and mmdebstrap with apt-get when missing. The host's pip settings (index,
# certificate bundle, local wheel folders) are passed into the build, so a machine whose pip
# reaches its registry through them builds the same way. Env: TEST_IMAGE_TRIALS (default 12),
# TEST_IMAGE_KEEP_CACHE=1 keeps the layer cache (faster reruns; otherwise untagged images are
# pruned at the end, so repeated runs do not fill the disk), TEST_IMAGE_DEMO_CACHE=DIR copies
# DIR/demo-model-v2 (a HERETIC_CACHE with the trained demo model) instead of training it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

base=localhost/heretic-test-base:bookworm
image=localhost/heretic:test-cpu
trials=${TEST_IMAGE_TRIALS:-12}
work=$(mktemp -d /tmp/heretic-image-test.XXXXXX)
ctr=""
bg_pid=""

cleanup() {
    # Our own background `buildah run` and what it started, by PID: with chroot isolation the
    # processes inside outlive a killed `buildah run`, so its descendants go first.
    if [ -n "$bg_pid" ] && kill -0 "$bg_pid" 2>/dev/null; then
        local pid
        for pid in $(descendants "$bg_pid" | sort -rn); do kill -KILL "$pid" 2>/dev/null || true; done
        kill -KILL "$bg_pid" 2>/dev/null || true
        wait "$bg_pid" 2>/dev/null || true
    fi
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
    # Untagged images (earlier builds, the layer cache) would fill the disk run after run.
    if [ "${TEST_IMAGE_KEEP_CACHE:-0}" != 1 ]; then
        buildah rmi --prune >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '%s test_image: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

need_tools() {
    if command -v buildah >/dev/null && command -v mmdebstrap >/dev/null; then return; fi
    [ "$(id -u)" = 0 ] || fail "buildah and mmdebstrap are missing and this is not root"
    say "installing buildah and mmdebstrap (apt-get)"
    apt-get update -q >/dev/null
    # The keyring is already there on Debian; an Ubuntu runner needs it to verify bookworm.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah mmdebstrap \
        debian-archive-keyring >/dev/null
}

# This machine's pip settings as one pip.conf, plus every local path they name, mounted
# read-only into the build: the certificate bundle, find-links folders, file:// indexes.
pip_mounts() {
    local conf="$work/pip.conf" line key value path
    local -A seen=()
    echo "[global]" >"$conf"
    # `pip config list` shows the environment's values first; they win over the files'.
    while IFS= read -r line; do
        key=${line%%=*}; key=${key##*.}
        value=${line#*=}; value=${value#\'}; value=${value%\'}
        [ -z "${seen[$key]:-}" ] || continue
        seen[$key]=1
        echo "$key = $value" >>"$conf"
        for path in $value; do
            path=${path#file://}
            case "$path" in /*) ;; *) continue ;; esac
            path=${path%/}
            # A file:// index's pages link to files beside its simple/ folder.
            [ "${path##*/}" != simple ] || path=${path%/simple}
            [ -e "$path" ] && echo "-v=$path:$path:ro"
        done
    done < <(python3 -m pip config list 2>/dev/null | grep "^[^=]*='.*'$" || true)
    echo "-v=$conf:/etc/pip.conf:ro"
}

build() {
    bash scripts/build_test_base.sh "$base"
    local mounts start
    mapfile -t mounts < <(pip_mounts | sort -u)
    say "building $image (CUDA_LINE=cpu, BASE_IMAGE=$base)"
    start=$(date +%s)
    buildah bud --isolation chroot --format docker --layers --force-rm \
        --build-arg "BASE_IMAGE=$base" --build-arg CUDA_LINE=cpu \
        "${mounts[@]}" -t "$image" . >"$work/build.log" 2>&1 \
        || { tail -n 40 "$work/build.log"; fail "the image did not build"; }
    build_s=$(( $(date +%s) - start ))
    size=$(buildah inspect --type image --format '{{.FromImageID}}' "$image" >/dev/null \
        && buildah images --format '{{.Size}}' "$image" | head -n 1)
    say "built in ${build_s} s; image size ${size}"
    grep -A10 '^heretic [0-9]' "$work/build.log" | head -n 11 || true
}

# --- running the image as a provider does ---------------------------------------------------
# The ENTRYPOINT read back from the built image, so the checks start what a provider starts.
load_entrypoint() {
    mapfile -t entry < <(buildah inspect --type image "$image" | python3 -c '
import json, sys
config = json.load(sys.stdin)["Docker"]["config"]
print("\n".join(config["Entrypoint"]))')
    [ "${#entry[@]}" -gt 0 ] || fail "the image has no ENTRYPOINT"
    say "entrypoint: ${entry[*]}"
}

# run_entry VOLUME LOG [ARGS...]: one container start with VOLUME as /workspace. The demo
# model's cache is shared between starts (it is trained once, ~40 s) through HERETIC_CACHE.
run_entry() {
    local vol=$1 log=$2
    shift 2
    in_ctr "$vol" -e HERETIC_CACHE=/cache -e "HERETIC_TRIALS=$run_trials" "$ctr" -- "${entry[@]}" "$@" \
        >"$log" 2>&1
}

# in_ctr VOLUME [buildah run options] -- COMMAND...: VOLUME as /workspace, the demo cache as
# /cache. buildah 1.28 quirk: a lone -v on the image's VOLUME path is silently replaced by the
# container's own anonymous volume; with a second -v both bind mounts apply.
in_ctr() {
    local vol=$1
    shift
    mkdir -p "$vol" "$work/cache"
    buildah run --isolation chroot -v "$vol:/workspace" -v "$work/cache:/cache" "$@"
}

# In the background; sets bg_pid (the `buildah run` process, ours).
start_entry() {
    run_entry "$@" &
    bg_pid=$!
}

finish_bg() {
    local rc=0
    wait "$bg_pid" || rc=$?
    bg_pid=""
    return "$rc"
}

# The tini that our background `buildah run` started: found among that process's own
# descendants (by parent PID), never by a name across the machine.
descendants() {
    local child
    for child in $(pgrep -P "$1" || true); do
        echo "$child"
        descendants "$child"
    done
}
find_tini() {  # find_tini ROOT_PID: the descendant whose executable is tini (not the
    # buildah-chroot-exec above it, whose command line also names tini)
    local pid
    for pid in $(descendants "$1"); do
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = tini ]; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}
find_in_tree() {  # find_in_tree ROOT_PID PATTERN: first descendant whose command line matches
    local pid
    for pid in $(descendants "$1"); do
        # (a process may end between the listing and the read: nothing to say then)
        if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$2"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# progress.json's completed trials, read on the host (plain JSON, no heretic needed).
completed() {
    python3 -c 'import json, sys
try:
    print(int((json.load(open(sys.argv[1])).get("trials") or {}).get("completed") or 0))
except (OSError, ValueError):
    print(0)' "$1/output/study/progress.json"
}

at_least() {  # at_least VOLUME N: progress.json counts N completed trials or more
    [ "$(completed "$1")" -ge "$2" ]
}

# The study's trials by state, read inside the image with its own Optuna.
probe_study() {
    in_ctr "$1" "$ctr" -- python3 -c '
import json, optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage = JournalStorage(JournalFileBackend("/workspace/output/study/journal.log"))
trials = optuna.load_study(study_name="heretic", storage=storage).get_trials(deepcopy=False)
count = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "FAIL", "RUNNING")}
owners = {t.user_attrs.get("heretic_owner", "::").split(":")[1] for t in trials
          if t.state.name == "COMPLETE"}
print(count["COMPLETE"], count["FAIL"], count["RUNNING"], len(owners))' 2>/dev/null
}

wait_until() {  # wait_until SECONDS COMMAND...: poll a condition with a deadline
    local deadline=$(( $(date +%s) + $1 ))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        [ -z "$bg_pid" ] || kill -0 "$bg_pid" 2>/dev/null || return 1
        sleep 0.1  # the polling interval of a condition with a deadline
    done
}

expect_rc() {  # expect_rc WANT GOT LOG WHAT
    if [ "$2" != "$1" ]; then
        tail -n 30 "$3"
        fail "$4: exit $2, expected $1"
    fi
}

check_image_config() {
    buildah inspect --type image "$image" | python3 -c '
import json, sys
config = json.load(sys.stdin)["Docker"]["config"]
env = dict(e.split("=", 1) for e in config["Env"])
assert env["NVIDIA_VISIBLE_DEVICES"] == "all", env
assert "compute" in env["NVIDIA_DRIVER_CAPABILITIES"], env
assert env["HERETIC_CUDA_LINE"] == "cpu", env
assert config["Healthcheck"]["Test"] == ["CMD", "heretic", "health"], config.get("Healthcheck")
assert config["Entrypoint"][0] == "/usr/bin/tini", config["Entrypoint"]
' || fail "image config (env, HEALTHCHECK, ENTRYPOINT) is not as the Dockerfile says"
    # The lock: every installed distribution is pinned, at the version installed.
    buildah run --isolation chroot "$ctr" -- pip list --format=freeze 2>/dev/null \
        | python3 -c '
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pins = {}
for line in open(sys.argv[1]):
    if "==" in line and not line.startswith("#"):
        name, _, version = line.strip().partition("==")
        pins[norm(name)] = version
bad = []
for line in sys.stdin:
    name, _, version = line.strip().partition("==")
    name, version = norm(name), version.split("+")[0]
    if name in ("heretic", "pip", "triton") or (name.startswith("nvidia-") and name != "nvidia-ml-py"):
        continue
    if pins.get(name) != version:
        bad.append(f"{name}=={version} (lock: {pins.get(name)})")
assert not bad, "not as locked: " + ", ".join(bad)
' image-constraints.txt || fail "the image does not match image-constraints.txt"
    say "ok: image config (NVIDIA_*, HEALTHCHECK, tini) and every package as locked"
}

check_demo_and_restart() {
    local vol=$work/v1 start rc=0
    how="demo model trained in the container"
    run_trials=$trials
    # A trained demo model from the host skips the training (~40 s idle, far longer on a
    # loaded machine); everything else still runs in the container.
    if [ -f "${TEST_IMAGE_DEMO_CACHE:-/nonexistent}/demo-model-v2/HERETIC_DEMO_COMPLETE" ]; then
        mkdir -p "$work/cache"
        cp -r "$TEST_IMAGE_DEMO_CACHE/demo-model-v2" "$work/cache/"
        how="demo model copied from $TEST_IMAGE_DEMO_CACHE"
    fi
    start=$(date +%s)
    run_entry "$vol" "$work/1.log" || rc=$?
    demo_s=$(( $(date +%s) - start ))
    expect_rc 0 "$rc" "$work/1.log" "no arguments (the demo)"
    [ -f "$vol/output/report.json" ] || fail "no report.json on the volume after the demo"
    say "ok: no arguments -> demo end to end in ${demo_s} s ($how), exit 0, report.json"
    in_ctr "$vol" "$ctr" -- heretic health >"$work/health.log" 2>&1 \
        || fail "heretic health after a finished run: $(cat "$work/health.log")"
    grep -q "^healthy: phase done" "$work/health.log" \
        || fail "heretic health did not see the finished run: $(cat "$work/health.log")"
    local stamp
    stamp=$(stat -c %Y.%s "$vol/output/trials.jsonl")
    start=$(date +%s)
    rc=0
    run_entry "$vol" "$work/2.log" || rc=$?
    expect_rc 0 "$rc" "$work/2.log" "the same start again"
    grep -q "already finished" "$work/2.log" || fail "the restart did not say the run had finished"
    [ "$(stat -c %Y.%s "$vol/output/trials.jsonl")" = "$stamp" ] || fail "the restart rewrote trials"
    read -r complete _ <<<"$(probe_study "$vol")"
    [ "$complete" = "$trials" ] || fail "the restart ran trials: $complete, not $trials"
    say "ok: the same start again -> exit 0 in $(( $(date +%s) - start )) s, no new trial"
}

check_sigterm_resume() {
    local vol=$work/v3 tini rc=0 complete failed running owners
    run_trials=40
    start_entry "$vol" "$work/3.log"
    wait_until 300 at_least "$vol" 2 || { tail "$work/3.log"; fail "no trial completed"; }
    tini=$(find_tini "$bg_pid") || fail "no tini under our buildah run"
    kill -TERM "$tini"
    finish_bg || rc=$?
    expect_rc 75 "$rc" "$work/3.log" "SIGTERM during the trials"
    read -r complete failed running owners <<<"$(probe_study "$vol")"
    [ "$failed" = 0 ] && [ "$running" = 0 ] || fail "SIGTERM abandoned a trial ($failed failed, $running running)"
    [ "$complete" -lt "$run_trials" ] || fail "SIGTERM came too late: all $complete trials done"
    local kept=$complete
    rc=0
    run_entry "$vol" "$work/3b.log" || rc=$?
    expect_rc 0 "$rc" "$work/3b.log" "the start after SIGTERM"
    read -r complete _ <<<"$(probe_study "$vol")"
    [ "$complete" = "$run_trials" ] || fail "resume ended with $complete trials, not $run_trials"
    say "ok: SIGTERM -> exit 75 after the current trial ($kept kept, none failed); next start -> exactly $run_trials"
}

check_workers_sigterm() {
    local vol=$work/v4 tini rc=0 complete=0 failed running owners=0
    run_trials=200
    start_entry "$vol" "$work/4.log" --workers 2
    wait_until 300 find_in_tree "$bg_pid" "heretic.run.worker" >/dev/null \
        || { tail "$work/4.log"; fail "no worker process started"; }
    local deadline=$(( $(date +%s) + 300 ))
    while [ "$owners" -lt 2 ]; do  # both processes have completed trials: both are in the loop
        if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$bg_pid" 2>/dev/null; then
            tail "$work/4.log"
            fail "the worker completed no trial"
        fi
        read -r complete failed running owners <<<"$(probe_study "$vol" || echo 0 0 0 0)"
    done
    tini=$(find_tini "$bg_pid") || fail "no tini under our buildah run"
    kill -TERM "$tini"
    finish_bg || rc=$?
    expect_rc 75 "$rc" "$work/4.log" "--workers 2 and SIGTERM"
    ! grep -q "abandoning" "$work/4.log" || fail "a worker took the stop as a second signal"
    read -r complete failed running owners <<<"$(probe_study "$vol")"
    [ "$failed" = 0 ] && [ "$running" = 0 ] || { tail -n 30 "$work/4.log"; fail "trials in flight were lost ($failed failed, $running running)"; }
    rc=0
    run_entry "$vol" "$work/4b.log" --workers 2 || rc=$?
    expect_rc 0 "$rc" "$work/4b.log" "the start after SIGTERM with workers"
    read -r complete _ <<<"$(probe_study "$vol")"
    [ "$complete" = "$run_trials" ] || fail "resume with workers ended with $complete, not $run_trials"
    say "ok: --workers 2 + SIGTERM -> exit 75, no trial lost; next start -> exactly $run_trials"
}

check_bad_input() {
    local rc=0
    run_trials=$trials
    run_entry "$work/v5" "$work/5.log" --no-such-option || rc=$?
    expect_rc 2 "$rc" "$work/5.log" "a bad argument"
    grep -q "No such option: --no-such-option" "$work/5.log" || fail "no message for a bad argument"
    rc=0
    run_entry "$work/v5" "$work/6.log" --model /workspace/no-such-model || rc=$?
    expect_rc 5 "$rc" "$work/6.log" "a missing model"
    grep -q "^error: .*does not exist" "$work/6.log" || fail "no one-paragraph message for a missing model"
    ! grep -q Traceback "$work/5.log" "$work/6.log" || fail "a traceback reached the output"
    say "ok: bad argument -> exit 2 + message; missing model -> exit 5 + one-paragraph message"
}

need_tools
build
[ "${1:-}" = --build-only ] && exit 0
ctr=$(buildah from --pull-never "$image")
load_entrypoint
check_image_config
check_demo_and_restart
check_sigterm_resume
check_workers_sigterm
check_bad_input
say "all checks passed"
say "summary: build ${build_s} s, image ${size}, demo in the container ${demo_s} s (${trials} trials, $how)"
