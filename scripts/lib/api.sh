# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): authorised JSON calls to a provider's API
# with curl. The key and every request body (a create body holds HF_TOKEN on Vast) go to curl
# through private (0600) temporary files, never on a command line, which any local user can
# read in /proc/*/cmdline.
#
#   api_auth KEY                     once; sets $api_headers and removes the file on exit
#   api_read NAME METHOD PATH [BODY] a request that changes nothing (GET, an offer search):
#                                    retried on connection failures, 429 and 5xx
#   api_call NAME METHOD PATH [BODY] a request that may change something (create, destroy):
#                                    sent ONCE. A retry after a lost answer or a 5xx could
#                                    rent a second machine, because the provider may have
#                                    carried out the first request.
# Both print the answer. On an HTTP 4xx they print what NAME's API answered to stderr and
# return 5 (refused: nothing was done). api_call returns 6 when the outcome is unknown (no
# answer, or a 5xx): the caller says so and stops. Both use $api (set by the sourcing script).

api_auth() {
    api_headers=$(umask 077 && mktemp)
    api_body=$(umask 077 && mktemp)
    trap 'rm -f "$api_headers" "$api_body"' EXIT
    # printf is a shell builtin: the key never becomes a process argument.
    printf 'Authorization: Bearer %s\n' "$1" >"$api_headers"
}

# _api_send RETRIES METHOD PATH [BODY] -> "BODY\nSTATUS" on stdout; curl's status on failure
_api_send() {
    local retries=$1 method=$2 path=$3 body=${4:-} answer status rc=0
    local data=()
    answer=$(umask 077 && mktemp)
    if [ -n "$body" ]; then
        printf '%s' "$body" >"${api_body:?api_auth first}"
        data=(--data-binary @"$api_body")
    fi
    # curl's --retry covers timeouts, 408, 429 and 5xx; Vast's 429 has no Retry-After, so the
    # fixed delay is what spaces the attempts (Vast enforces per-endpoint minimum intervals).
    # The body goes to a file, which curl truncates before a retry (stdout would keep the
    # failed attempt's text in front of the answer).
    status=$(curl -sS --max-time 60 --retry "$retries" --retry-delay 5 -X "$method" \
        -H @"$api_headers" -H 'Content-Type: application/json' "${data[@]}" \
        -o "$answer" -w '%{http_code}' "${api:?}$path") || rc=$?
    [ "$rc" -eq 0 ] && printf '%s\n%s' "$(cat "$answer")" "$status"
    rm -f "$answer"
    return "$rc"
}

api_read() {
    local name=$1 method=$2 path=$3 out status
    out=$(_api_send 3 "$method" "$path" "${4:-}") || {
        echo "$name could not be reached for $method $path" >&2
        return 5
    }
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$status" -ge 400 ]; then
        echo "$name answered HTTP $status to $method $path: $out" >&2
        return 5
    fi
    printf '%s\n' "$out"
}

api_call() {
    local name=$1 method=$2 path=$3 out status
    out=$(_api_send 0 "$method" "$path" "${4:-}") || {
        echo "$name sent no answer to $method $path; it may or may not have carried it out." \
            "Look in the provider's console before trying again (not retried, so that a" \
            "second machine is never rented by accident)." >&2
        return 6
    }
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$status" -ge 500 ]; then
        echo "$name answered HTTP $status to $method $path: $out. It may or may not have" \
            "carried it out: look in the provider's console before trying again (not retried," \
            "so that a second machine is never rented by accident)." >&2
        return 6
    fi
    if [ "$status" -ge 400 ]; then
        echo "$name answered HTTP $status to $method $path: $out" >&2
        return 5
    fi
    printf '%s\n' "$out"
}
