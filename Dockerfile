# heretic for rented GPUs. One build argument chooses the CUDA line (see heretic/image.py):
#   docker build -t heretic:0.1.0-cu126 .                              (drivers R525+, A100/H100)
#   docker build --build-arg CUDA_LINE=cu130 -t heretic:0.1.0-cu130 .  (drivers R580+, Blackwell;
#                                                                       everything from PyPI)
# First run: docker run --gpus all -e HF_TOKEN -v heretic-work:/workspace heretic:0.1.0-cu126 --profile auto
# docs/container.md has volumes, environment and restarts;
# scripts/test_image.sh builds the cpu or (--line cu130) the cu130 image here and runs it through
# tini + entrypoint.sh.
#
# Base: python slim, not nvidia/cuda. torch's CUDA wheels carry their own CUDA runtime, cuBLAS
# and cuDNN (the nvidia-* wheels), so a CUDA base image would only add a second copy of the
# same libraries (~3 GB); the driver comes from the host through `--gpus all` (NVIDIA container
# toolkit). BASE_IMAGE is an argument only so the local test can use a stand-in built from
# Debian packages (scripts/build_test_base.sh); any Debian bookworm with python3 + venv works.
ARG BASE_IMAGE=python:3.12.12-slim-bookworm
FROM ${BASE_IMAGE}

# cu126 | cu130 | cpu. The lock (image-constraints-<line>.txt: every package at its exact
# version, torch at its exact build), the torch index and the tag suffix all follow from it;
# the launchers ask providers for hosts with CUDA >= 12.6 / 13.0 to match.
ARG CUDA_LINE=cu126
# Where torch comes from. "auto": the line's own, as heretic/image.py says: cu126 and cpu
# from PyTorch's index, cu130 from PyPI (torch 2.13.0 for Linux x86_64 on PyPI is the CUDA
# 13.0 build; its CUDA libraries are PyPI wheels too). Empty: PyPI; a URL: that index (a
# mirror). Whatever the index, the build fails unless torch.version.cuda is the line's.
ARG TORCH_INDEX_URL=auto

LABEL org.opencontainers.image.title="heretic" \
      org.opencontainers.image.description="Unattended abliteration of open-weight chat models" \
      org.opencontainers.image.licenses="Apache-2.0"

# HF_HOME, the demo model's cache and the output (with its study folder) live under /workspace,
# the one volume: it survives container restarts, and on RunPod/Vast it is the disk that
# survives a stop. NVIDIA_*: what the NVIDIA container toolkit exposes (all GPUs, compute only).
# TINI_SUBREAPER: tini still reaps orphans when a runtime starts it as some other PID than 1.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HF_HOME=/workspace/hf-cache \
    HERETIC_CACHE=/workspace/heretic-cache \
    HF_XET_HIGH_PERFORMANCE=1 \
    HERETIC_OUTPUT=/workspace/output \
    HERETIC_CUDA_LINE=${CUDA_LINE} \
    TINI_SUBREAPER=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini is PID 1: it forwards `docker stop`'s SIGTERM and reaps orphaned worker processes.
RUN case "${CUDA_LINE}" in \
        cu126 | cu130 | cpu) ;; \
        *) echo "CUDA_LINE must be cu126, cu130 or cpu, not '${CUDA_LINE}'" >&2; exit 2 ;; \
    esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /opt/heretic
COPY image-constraints-${CUDA_LINE}.txt ./
COPY --chmod=0755 scripts/slim_image.sh /usr/local/bin/

# pip and setuptools at the lock's versions, then torch alone: the largest layer, rebuilt only
# when the line or the pinned build changes. `===` matches the lock's build exactly (2.13.0
# is not 2.13.0+cpu), so no other build on any index or wheel folder can slip in; hadolint
# reads only `==` as a pin, hence its DL3013 is silenced here.
# hadolint ignore=DL3013
RUN case "${TORCH_INDEX_URL}" in \
        auto) case "${CUDA_LINE}" in \
                cu126) index=https://download.pytorch.org/whl/cu126 ;; \
                cu130) index= ;; \
                cpu) index=https://download.pytorch.org/whl/cpu ;; \
            esac ;; \
        *) index=${TORCH_INDEX_URL} ;; \
    esac \
    && lock=image-constraints-${CUDA_LINE}.txt \
    && grep -E "^(pip|setuptools)==" "$lock" | pip install -r /dev/stdin \
    && version=$(sed -n 's/^torch==//p' "$lock") \
    && pip install --no-deps ${index:+--index-url "$index"} "torch===${version}" \
    && slim_image.sh "${CUDA_LINE}"

# Dependencies before source: rebuilt only when pyproject.toml or the lock change. torch's own
# requirements (cuda-*, nvidia-*, triton for the CUDA lines) come in here, at the lock's pins.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install -c "image-constraints-${CUDA_LINE}.txt" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && slim_image.sh "${CUDA_LINE}"

# The package itself: small, changes often, so last. The check imports what a run needs and
# asks torch which CUDA it was built for (torch.version.cuda: no GPU needed) against the line.
COPY README.md LICENSE ./
COPY profiles ./profiles
COPY heretic ./heretic
RUN pip install --no-deps -c "image-constraints-${CUDA_LINE}.txt" ".[postgres]" \
    && pip check \
    && heretic version --check

COPY --chmod=0755 entrypoint.sh /entrypoint.sh

# Root on purpose: provider volumes (RunPod, Vast) are root-owned and a non-root user could
# not write the study there. Nothing in the image listens on a port.
WORKDIR /workspace
VOLUME ["/workspace"]
STOPSIGNAL SIGTERM
# Unhealthy when progress.json stops moving during the trials (a hung GPU, a dead worker);
# healthy in every other phase and before the first start has written anything.
HEALTHCHECK --interval=5m --timeout=30s --start-period=10m --retries=2 \
    CMD ["heretic", "health"]
# -g: the signal goes to heretic's whole process group. Worker processes run in their own
# group and get exactly one stop request from heretic (a second one would abandon a trial).
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/entrypoint.sh"]
