# shellcheck shell=bash
# The heretic image the launcher scripts start by default, and the host CUDA version an image
# needs, from its tag's CUDA line. heretic/image.py is the source of truth (the Python
# launchers use it); tests/test_image.py checks that this file says the same.
# shellcheck disable=SC2034  # read by the scripts that source this file
HERETIC_DEFAULT_IMAGE=ghcr.io/heretic-llm/heretic:0.1.0-cu126

# min_cuda_for_image IMAGE -> 12.6 or 13.0 (a tag naming no line is built like cu126)
min_cuda_for_image() {
    local tag=${1##*/}
    tag=${tag%%@*}
    case "$tag" in
        *:cu130 | *-cu130) echo 13.0 ;;
        *) echo 12.6 ;;
    esac
}
