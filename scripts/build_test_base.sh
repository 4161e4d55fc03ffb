#!/usr/bin/env bash
# Build the stand-in base image for a local build of the heretic image (scripts/test_image.sh).
#
# No registry image can be pulled on the build machines, so the Dockerfile's BASE_IMAGE is
# replaced by a Debian bookworm "minbase" made by mmdebstrap from Debian's own packages, with
# python3 + venv (what the real python:slim base provides) and ca-certificates. tini is NOT put
# here: the Dockerfile installs it with apt-get, on this base exactly as on the real one.
#
# Usage (as root): bash scripts/build_test_base.sh [IMAGE_NAME]   (default localhost/heretic-test-base)
# Needs: mmdebstrap, buildah (apt-get install -y buildah mmdebstrap). Skips the work when the
# image already exists; set REBUILD_BASE=1 to build it again. About 2 minutes.
set -euo pipefail

name=${1:-localhost/heretic-test-base:bookworm}

if [ "${REBUILD_BASE:-0}" != 1 ] && buildah inspect --type image "$name" >/dev/null 2>&1; then
    echo "base: $name already present"
    exit 0
fi

workdir=$(mktemp -d)
ctr=""
cleanup() {
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# Same mirror as this machine's apt sources (deb.debian.org), reached like apt-get reaches it.
# The hook is run by mmdebstrap, which passes the new root as "$1": single quotes on purpose.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$workdir/base.tar" >"$workdir/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$workdir/mmdebstrap.log" >&2; exit 1; }

ctr=$(buildah from scratch)
# A local tar file given to `buildah add` is unpacked into the root, like Dockerfile ADD.
buildah add --quiet "$ctr" "$workdir/base.tar" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
buildah commit --quiet "$ctr" "$name" >/dev/null
echo "base: built $name"
