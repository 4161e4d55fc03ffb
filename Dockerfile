# heretic for rented GPUs. Build: docker build -t heretic:latest .
# First run:  docker run --gpus all -e HF_TOKEN -v heretic-work:/workspace heretic:latest --profile auto
# See README.md ("Running heretic in a container") for volumes, environment variables and
# what happens on restart.
#
# Base: python slim, not nvidia/cuda. torch's CUDA wheels carry their own CUDA runtime, cuBLAS
# and cuDNN (the nvidia-* wheels), so a CUDA base image would only add a second copy of the
# same libraries (~3 GB); the driver comes from the host through `--gpus all` (NVIDIA container
# toolkit). Pinned to a patch release; CI may pin the digest (@sha256:...) on top.
FROM python:3.12.12-slim-bookworm

# cu128 wheels run on host drivers R570 and newer, which most rented GPUs have; CUDA 13 wheels
# need R580+. Override both to follow a newer torch: --build-arg TORCH_VERSION=...
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

LABEL org.opencontainers.image.title="heretic" \
      org.opencontainers.image.description="Unattended abliteration of open-weight chat models" \
      org.opencontainers.image.licenses="Apache-2.0"

# HF_HOME, the demo model's cache and the output (with its study folder) live under /workspace,
# the one volume: it survives container restarts, and on RunPod/Vast it is the disk that
# survives a stop.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/workspace/hf-cache \
    HERETIC_CACHE=/workspace/heretic-cache \
    HF_XET_HIGH_PERFORMANCE=1 \
    HERETIC_OUTPUT=/workspace/output

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini is PID 1: it forwards `docker stop`'s SIGTERM and reaps orphaned worker processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# torch alone first: the largest layer, rebuilt only when TORCH_VERSION changes.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && echo "torch==${TORCH_VERSION}" > /etc/pip-constraints.txt

WORKDIR /opt/heretic

# Dependencies before source: this layer is rebuilt only when pyproject.toml changes. The
# constraint keeps pip from swapping the CUDA torch for another build.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -c /etc/pip-constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The package itself: small, changes often, so last.
COPY README.md ./
COPY profiles ./profiles
COPY heretic ./heretic
RUN pip install --no-cache-dir --no-deps -c /etc/pip-constraints.txt . \
    && heretic --version

COPY --chmod=0755 entrypoint.sh /entrypoint.sh

# Root on purpose: provider volumes (RunPod, Vast) are root-owned and a non-root user could
# not write the study there. Nothing in the image listens on a port.
WORKDIR /workspace
VOLUME ["/workspace"]
STOPSIGNAL SIGTERM
# -g: the signal goes to heretic's whole process group (worker processes too).
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/entrypoint.sh"]
