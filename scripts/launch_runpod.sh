#!/usr/bin/env bash
# Launch a heretic run on RunPod (REST API v2) without the heretic CLI: bash, curl and jq.
#
#   RUNPOD_API_KEY=... scripts/launch_runpod.sh --model ORG/NAME [--upload ORG/REPO]
#       [--max-price USD_PER_HOUR] [--image IMAGE] [--disk GB] [--gpu-id ID]
#       [--cloud SECURE|COMMUNITY] [--secret hf_token] [--max-hours H] [--dry-run]
#
# It reads the GPU catalog with availability, picks the cheapest A100 80GB type in stock (at
# or under --max-price) on hosts whose CUDA fits the image's tag (-cu126: 12.6+, -cu130:
# 13.0+; default image: the release's -cu126 tag), and creates a pod without a command override, so the image's own
# entrypoint runs with HERETIC_MODEL, HERETIC_UPLOAD, HERETIC_SHUTDOWN_AFTER=true and
# HERETIC_PROFILE=auto, HERETIC_MAX_HOURS (default 24) and the launch marker
# HERETIC_LAUNCHED_BY/_AT. HF_TOKEN is a reference to the RunPod secret named by --secret
# (create it once under Settings > Secrets); the token itself is never sent. The pod id is
# printed. --dry-run prints the catalog query and the create body and sends nothing.
# --disk sizes the pod volume mounted at /workspace (Hub cache, study, done marker): RunPod
# wipes the container disk on every restart, and restarts a container whose process exits.
# The key (RUNPOD_API_KEY) and the body reach curl through private files, never argv.
# Exit status: 0 started, 2 bad usage, 3 no key, 4 no GPU in stock, 5 the API refused, 6 the
# create's outcome is unknown (no answer or a 5xx; never retried): look in the RunPod console.
set -euo pipefail

api=${HERETIC_RUNPOD_API_URL:-${RUNPOD_API_URL:-https://api.runpod.io/v2}}
model="" upload="" max_price="" gpu_id="" dry_run=0 disk=150 cloud=SECURE secret=hf_token
max_hours=24
# shellcheck source-path=SCRIPTDIR source=lib/image.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/image.sh"
image=$HERETIC_DEFAULT_IMAGE

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --model) model=${2:?}; shift 2 ;;
        --upload) upload=${2:?}; shift 2 ;;
        --max-price) max_price=${2:?}; shift 2 ;;
        --image) image=${2:?}; shift 2 ;;
        --disk) disk=${2:?}; shift 2 ;;
        --gpu-id) gpu_id=${2:?}; shift 2 ;;
        --cloud) cloud=${2:?}; shift 2 ;;
        --secret) secret=${2:?}; shift 2 ;;
        --max-hours) max_hours=${2:?}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage ;;
        *) echo "launch_runpod: unknown option $1" >&2; usage ;;
    esac
done
[ -n "$model" ] || { echo "launch_runpod: --model is required" >&2; exit 2; }
case "$cloud" in SECURE | COMMUNITY) ;; *) echo "launch_runpod: --cloud is SECURE or COMMUNITY" >&2; exit 2 ;; esac
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "launch_runpod: $tool is required" >&2; exit 2; }
done

# Only hosts whose driver runs the image's CUDA line (cu126: 12.6, cu130: 13.0).
min_cuda=$(min_cuda_for_image "$image")
# shellcheck source-path=SCRIPTDIR source=lib/offers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/offers.sh"
query=$(runpod_catalog_query "$cloud" "$min_cuda")
body() { # GPU_ID -> the create body
    jq -n --arg name "heretic-${model##*/}" --arg image "$image" --arg gpu "$1" \
        --arg cloud "$cloud" --argjson disk "$disk" --arg model "$model" --arg upload "$upload" \
        --arg cuda "$min_cuda" --arg hours "$max_hours" \
        --arg at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --arg secret "{{ RUNPOD_SECRET_$secret }}" '{name: $name, image: $image,
        gpu: {id: $gpu, count: 1, minCudaVersion: $cuda}, cloud: $cloud, disk: 30,
        env: ({HERETIC_MODEL: $model, HERETIC_SHUTDOWN_AFTER: "true", HERETIC_PROFILE: "auto",
               HERETIC_MAX_HOURS: $hours, HERETIC_LAUNCHED_BY: "scripts/launch_runpod.sh",
               HERETIC_LAUNCHED_AT: $at, HF_TOKEN: $secret} + (if $upload == "" then {} else {HERETIC_UPLOAD: $upload} end)),
        mounts: {persistent: {size: $disk, path: "/workspace"}},
        startSsh: false, startJupyter: false}'
}

if [ "$dry_run" -eq 1 ]; then
    echo "GET $api/catalog/gpus?$query"
    echo "POST $api/pods"
    body "${gpu_id:-NVIDIA A100 80GB PCIe}"
    exit 0
fi
[ -n "${RUNPOD_API_KEY:-}" ] || { echo "launch_runpod: set RUNPOD_API_KEY" >&2; exit 3; }

# shellcheck source-path=SCRIPTDIR source=lib/api.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/api.sh"
api_auth "$RUNPOD_API_KEY"
if [ -z "$gpu_id" ]; then
    tier=$(echo "$cloud" | tr '[:upper:]' '[:lower:]')
    catalog=$(api_read "launch_runpod: RunPod" GET "/catalog/gpus?$query") || exit 5
    gpu_id=$(echo "$catalog" | runpod_offers "$tier" "$max_price" | jq -r '.[0].id // empty')
    [ -n "$gpu_id" ] || { echo "launch_runpod: no A100 80GB in stock right now" >&2; exit 4; }
fi
# The create is sent once: see api_call.
created=$(api_call "launch_runpod: RunPod" POST /pods "$(body "$gpu_id")") || exit $?
pod=$(echo "$created" | jq -r '.id // empty')
[ -n "$pod" ] || { echo "launch_runpod: RunPod did not return a pod id" >&2; exit 5; }
echo "$pod"
echo "Started RunPod pod $pod ($gpu_id). Follow it: heretic cloud logs --provider runpod $pod (or the RunPod console)." >&2
