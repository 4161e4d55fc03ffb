#!/usr/bin/env bash
# Launch a heretic run on Vast.ai without the heretic CLI: only bash, curl and jq.
#
#   VAST_API_KEY=... HF_TOKEN=... scripts/launch_vast.sh --model ORG/NAME [--upload ORG/REPO]
#       [--max-price USD_PER_HOUR] [--image IMAGE] [--disk GB] [--offer ID]
#       [--max-hours H] [--dry-run]
#
# It searches for the cheapest verified single A100 80GB offer with the disk (at or under
# --max-price, storage included: the filter of scripts/lib/offers.sh) whose host CUDA
# fits the image's tag (-cu126: 12.6+, -cu130: 13.0+; default: the release's -cu126 tag),
# then creates an instance whose image runs its own entrypoint (runtype "args") with
# HERETIC_MODEL, HERETIC_UPLOAD, HERETIC_SHUTDOWN_AFTER=true, HERETIC_PROFILE=auto,
# HERETIC_MAX_HOURS (default 24) and the launch marker HERETIC_LAUNCHED_BY/_AT, and prints the
# instance id. --dry-run prints the search and the create body and sends nothing. The key
# (VAST_API_KEY or ~/.config/vastai/vast_api_key) and the body reach curl through private
# files, never argv. HF_TOKEN (only if set) is a plain env value: the Vast account and the
# host's operator can read it; use a fine-grained token.
# Exit status: 0 started, 2 bad usage, 3 no key, 4 no offer, 5 the API refused, 6 the
# create's outcome is unknown (no answer or a 5xx; never retried): look in the Vast console.
set -euo pipefail

api=${HERETIC_VAST_API_URL:-${VAST_API_URL:-https://console.vast.ai/api/v0}}
model="" upload="" max_price="" offer="" dry_run=0 disk=150 max_hours=24
# shellcheck source-path=SCRIPTDIR source=lib/image.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/image.sh"
image=$HERETIC_DEFAULT_IMAGE

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

while [ "$#" -gt 0 ]; do
    case "$1" in
        --model) model=${2:?}; shift 2 ;;
        --upload) upload=${2:?}; shift 2 ;;
        --max-price) max_price=${2:?}; shift 2 ;;
        --image) image=${2:?}; shift 2 ;;
        --disk) disk=${2:?}; shift 2 ;;
        --offer) offer=${2:?}; shift 2 ;;
        --max-hours) max_hours=${2:?}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage ;;
        *) echo "launch_vast: unknown option $1" >&2; usage ;;
    esac
done
[ -n "$model" ] || { echo "launch_vast: --model is required" >&2; exit 2; }
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "launch_vast: $tool is required" >&2; exit 2; }
done

key=${VAST_API_KEY:-}
if [ -z "$key" ] && [ -f "$HOME/.config/vastai/vast_api_key" ]; then
    key=$(tr -d '[:space:]' <"$HOME/.config/vastai/vast_api_key")
fi

# shellcheck source-path=SCRIPTDIR source=lib/offers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/offers.sh"
search=$(vast_offer_filter "$max_price" "$disk" "$(min_cuda_for_image "$image")")

launched_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# HF_TOKEN is read by jq from its environment (env.HF_TOKEN), never passed as an argument.
create=$(jq -n --arg image "$image" --argjson disk "$disk" --arg model "$model" \
    --arg upload "$upload" --arg hours "$max_hours" --arg at "$launched_at" \
    --arg lbl "heretic-${model##*/}" '{client_id: "me", image: $image, disk: $disk,
    env: ({HERETIC_MODEL: $model, HERETIC_SHUTDOWN_AFTER: "true", HERETIC_PROFILE: "auto",
           HERETIC_MAX_HOURS: $hours, HERETIC_LAUNCHED_BY: "scripts/launch_vast.sh",
           HERETIC_LAUNCHED_AT: $at}
          + (if $upload == "" then {} else {HERETIC_UPLOAD: $upload} end)
          + (if (env.HF_TOKEN // "") == "" then {} else {HF_TOKEN: env.HF_TOKEN} end)),
    runtype: "args", "label": $lbl, target_state: "running"}')

if [ "$dry_run" -eq 1 ]; then
    echo "POST $api/bundles/"
    echo "$search"
    echo "PUT $api/asks/${offer:-OFFER_ID}/"
    echo "$create" | jq '.env |= (if has("HF_TOKEN") then .HF_TOKEN = "hf_****" else . end)'
    exit 0
fi
[ -n "$key" ] || { echo "launch_vast: set VAST_API_KEY" >&2; exit 3; }
[ -n "${HF_TOKEN:-}" ] || echo "launch_vast: warning: HF_TOKEN not set (gated models and uploads fail)" >&2
[ -z "${HF_TOKEN:-}" ] || echo "launch_vast: warning: HF_TOKEN travels as a plain env value: your Vast account and the host's operator can read it" >&2

# shellcheck source-path=SCRIPTDIR source=lib/api.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/api.sh"
api_auth "$key"
if [ -z "$offer" ]; then
    found=$(api_read "launch_vast: Vast" POST /bundles/ "$search") || exit 5
    offer=$(echo "$found" | jq -r '.offers[0].id // empty')
    [ -n "$offer" ] || { echo "launch_vast: no matching offer right now" >&2; exit 4; }
fi
# The create is sent once: see api_call.
answer=$(api_call "launch_vast: Vast" PUT "/asks/$offer/" "$create") || exit $?
instance=$(echo "$answer" | jq -r '.new_contract // empty')
[ -n "$instance" ] || { echo "launch_vast: Vast did not create an instance: $answer" >&2; exit 5; }
echo "$instance"
echo "Started Vast instance $instance from offer $offer. Follow it: heretic cloud logs --provider vast $instance (or the Vast console)." >&2
