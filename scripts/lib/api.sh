# shellcheck shell=bash
# Shared by the launch scripts (sourced, not run): authorised JSON calls to a provider's API
# with curl. The key goes to curl through a private temporary file, never on a command line.
#
#   api_auth KEY                     once; sets $api_headers and removes the file on exit
#   api_call NAME METHOD PATH [BODY] prints the answer; on an HTTP error prints what NAME's
#                                    API answered to stderr and returns 5. Uses $api (the base
#                                    URL, set by the sourcing script).

api_auth() {
    api_headers=$(mktemp)
    trap 'rm -f "$api_headers"' EXIT
    chmod 600 "$api_headers"
    printf 'Authorization: Bearer %s\n' "$1" >"$api_headers"
}

api_call() {
    local name=$1 method=$2 path=$3 body=${4:-} out status
    out=$(curl -sS --max-time 60 --retry 3 --retry-delay 5 -X "$method" -H @"$api_headers" \
        -H 'Content-Type: application/json' ${body:+--data "$body"} -w '\n%{http_code}' \
        "${api:?}$path") || return 5
    status=${out##*$'\n'}
    out=${out%$'\n'*}
    if [ "$status" -ge 400 ]; then
        echo "$name answered HTTP $status to $method $path: $out" >&2
        return 5
    fi
    printf '%s\n' "$out"
}
