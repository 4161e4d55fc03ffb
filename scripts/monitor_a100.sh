#!/usr/bin/env bash
# Watch Vast.ai and RunPod for A100 80GB capacity without the heretic CLI: bash, curl, jq.
#
#   VAST_API_KEY=... RUNPOD_API_KEY=... scripts/monitor_a100.sh [--max-price USD_PER_HOUR]
#       [--disk GB] [--interval SECONDS] [--notify WEBHOOK_URL]
#       [--state FILE] [--max-polls N] [--image IMAGE]
#
# Offers are filtered as `heretic cloud launch` filters them (scripts/lib/offers.sh): the
# disk (default 150 GB; Vast's price then includes its storage), the host CUDA version
# that IMAGE's tag needs (-cu126: 12.6, -cu130: 13.0; default: the release's -cu126
# image), the cap.
# Each provider whose key is set is polled every --interval seconds (default 300, at least
# 60: Vast limits how often each endpoint may be called), with +-10% jitter and doubled
# waits after failures.
# An alert (a log line on stderr, the terminal bell, and a JSON POST to --notify) is sent
# only when a provider's availability changes; the last state is kept in --state (default
# ~/.cache/heretic/monitor_a100.state) so a restart does not repeat alerts. A failed poll
# keeps the last known state. `heretic cloud monitor` does the same with more options.
# MONITOR_NOTIFY_URL may hold the webhook instead of --notify (this script's own argv is
# readable by local users); curl gets it from a private file either way.
set -uo pipefail

vast_api=${HERETIC_VAST_API_URL:-${VAST_API_URL:-https://console.vast.ai/api/v0}}
runpod_api=${HERETIC_RUNPOD_API_URL:-${RUNPOD_API_URL:-https://api.runpod.io/v2}}
max_price="" interval=300 notify=${MONITOR_NOTIFY_URL:-} max_polls=0 disk=150
# shellcheck source-path=SCRIPTDIR source=lib/image.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/image.sh"
image=$HERETIC_DEFAULT_IMAGE
state=${XDG_CACHE_HOME:-$HOME/.cache}/heretic/monitor_a100.state

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --max-price) max_price=${2:?}; shift 2 ;;
        --interval) interval=${2:?}; shift 2 ;;
        --disk) disk=${2:?}; shift 2 ;;
        --notify) notify=${2:?}; shift 2 ;;
        --state) state=${2:?}; shift 2 ;;
        --max-polls) max_polls=${2:?}; shift 2 ;;
        --image) image=${2:?}; shift 2 ;;
        -h | --help) usage ;;
        *) echo "monitor_a100: unknown option $1" >&2; usage ;;
    esac
done
min_cuda=$(min_cuda_for_image "$image")
[ "$interval" -ge 60 ] 2>/dev/null || { echo "monitor_a100: --interval must be >= 60" >&2; exit 2; }
for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "monitor_a100: $tool is required" >&2; exit 2; }
done
providers=()
[ -n "${VAST_API_KEY:-}" ] && providers+=(vast)
[ -n "${RUNPOD_API_KEY:-}" ] && providers+=(runpod)
[ "${#providers[@]}" -gt 0 ] || { echo "monitor_a100: set VAST_API_KEY and/or RUNPOD_API_KEY" >&2; exit 3; }

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
chmod 700 "$workdir"
printf 'Authorization: Bearer %s\n' "${VAST_API_KEY:-}" >"$workdir/vast.h"
printf 'Authorization: Bearer %s\n' "${RUNPOD_API_KEY:-}" >"$workdir/runpod.h"
# The webhook URL is a credential: curl reads it from a private config file, not argv.
printf 'url = "%s"\n' "$notify" >"$workdir/notify.cfg"
mkdir -p "$(dirname "$state")"
touch "$state"

# shellcheck source-path=SCRIPTDIR source=lib/offers.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/offers.sh"

log() { printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

poll() { # PROVIDER -> prints "COUNT PRICE" (PRICE "-" when none); fails on any error
    local answer
    if [ "$1" = vast ]; then
        answer=$(vast_offer_filter "$max_price" "$disk" "$min_cuda" |
            curl -sf --max-time 60 -X POST -H @"$workdir/vast.h" -H 'Content-Type: application/json' \
                --data @- "$vast_api/bundles/") || return 1
        echo "$answer" | jq -r '[.offers[]?.dph_total] | "\(length) \(min // "-")"'
    else
        answer=$(curl -sf --max-time 60 -H @"$workdir/runpod.h" \
            "$runpod_api/catalog/gpus?$(runpod_catalog_query SECURE "$min_cuda")") || return 1
        echo "$answer" | runpod_offers secure "$max_price" | jq -r '[.[].price] | "\(length) \(min // "-")"'
    fi
}

alert() { # PROVIDER EVENT COUNT PRICE
    local text
    if [ "$2" = available ]; then
        text="A100-80GB AVAILABLE on $1: $3 offer(s) from \$$4/h"
        printf '\a' >&2
    else
        text="A100-80GB no longer available on $1"
    fi
    log "$text"
    if [ -n "$notify" ]; then
        jq -n --arg e "$2" --arg p "$1" --arg t "heretic: $text" '{event: $e, provider: $p,
            gpu: "A100-80GB", text: $t}' |
            curl -sf --max-time 20 -H 'Content-Type: application/json' --data @- \
                -K "$workdir/notify.cfg" >/dev/null || log "webhook delivery failed"
    fi
}

polls=0 failures=0
log "watching ${providers[*]} for A100-80GB every ~${interval}s"
while :; do
    failed=0
    for p in "${providers[@]}"; do
        if ! result=$(poll "$p"); then
            log "$p: poll failed; keeping the last known state"
            failed=1
            continue
        fi
        read -r count price <<<"$result"
        now=0
        [ "$count" -gt 0 ] && now=1
        before=$(grep -E "^$p=" "$state" | cut -d= -f2)
        if [ "$now" != "${before:-0}" ]; then
            if [ "$now" = 1 ]; then alert "$p" available "$count" "$price"; else alert "$p" gone 0 -; fi
        fi
        { grep -vE "^$p=" "$state"; echo "$p=$now"; } >"$state.tmp" && mv "$state.tmp" "$state"
    done
    polls=$((polls + 1))
    [ "$max_polls" -gt 0 ] && [ "$polls" -ge "$max_polls" ] && break
    if [ "$failed" = 1 ]; then failures=$((failures + 1)); else failures=0; fi
    wait_s=$((interval << (failures < 4 ? failures : 4)))
    wait_s=$((wait_s + (RANDOM % (wait_s / 5 + 1)) - wait_s / 10))
    sleep "$wait_s"
done
