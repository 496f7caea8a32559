# syntax=docker/dockerfile:1
# The ml_platform code location. One image serves the code server (`dagster api grpc`, the
# default command), the run worker pods, every step pod, CPU or GPU, and the prediction
# services (`ml-platform serve MODEL`, deploy/k8s/serving.yaml).
#
#   docker build -t ghcr.io/your-org/ml-platform:0.1.0 .
#   docker run --rm -p 3030:3030 ghcr.io/your-org/ml-platform:0.1.0
#   docker run --rm -p 8080:8080 ghcr.io/your-org/ml-platform:0.1.0 \
#     ml-platform serve fraud_detection --host 0.0.0.0 --port 8080
#
# Base: plain Python rather than nvidia/cuda or pytorch/pytorch. The CUDA wheels of torch carry
# their own CUDA runtime, cuDNN and NCCL (the nvidia-* wheels), so a CUDA base image would ship
# those libraries twice; the node's NVIDIA driver is all a GPU pod needs from outside the image.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# torch from the PyTorch CUDA index, before everything else. requirements.lock pins
# torch==2.13.0+cpu, the CPU build used on dev machines and in CI; PyPI has no "+cpu" or "+cuXXX"
# builds, and which CUDA a build targets is chosen by the index it comes from. The lock's torch
# line is therefore dropped from the constraints, and the project's own pin (torch==2.13.0)
# accepts the installed 2.13.0+cuXXX. Pick TORCH_CUDA for the nodes' driver (cu128 needs
# driver >= 525 through CUDA minor-version compatibility; see docs/kubernetes.md).
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}"

# Everything else at the versions of requirements.lock (a pip freeze of a working install).
COPY requirements.lock ./
RUN grep -v '^torch==' requirements.lock > /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY ml_platform ml_platform
COPY assets assets
COPY resources resources
COPY sensors sensors
# The example's data generator, named by assets/fraud_detection/features.yaml.
COPY examples examples
# dagster-postgres: the Helm chart's instance (dagster.yaml) stores runs and events in Postgres,
# and the run and step pods load that instance from this image.
RUN pip install -c /tmp/constraints.txt . "dagster-postgres==0.29.27" \
    && python -c "import torch, ml_platform.definitions; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM python:${PYTHON_VERSION}-slim-bookworm
# tini as PID 1: forwards SIGTERM (run termination, pod deletion) to dagster and reaps the
# DataLoader worker processes of training steps.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# A numeric non-root user, so that runAsNonRoot can verify it.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app app \
    && mkdir -p /opt/dagster/dagster_home \
    && chown app:app /opt/dagster/dagster_home
COPY --from=build /opt/venv /opt/venv
# The specs travel as package data (site-packages/assets). The code location finds them next to
# its package; the `ml-platform` commands (serve, run, status) look under ./assets and
# ML_PLATFORM_SPEC_PATH, and the working directory here has none: name them at a fixed path.
RUN ln -s "$(/opt/venv/bin/python -c 'import importlib.util, pathlib; \
print(pathlib.Path(importlib.util.find_spec("assets").origin).parent)')" /opt/ml-platform-specs \
    && test -f /opt/ml-platform-specs/fraud_detection/model.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    ML_PLATFORM_HOME=/home/app/.ml_platform \
    ML_PLATFORM_SPEC_PATH=/opt/ml-platform-specs \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/app
# 3030: the code server's gRPC; 8080: the prediction service's HTTP (`ml-platform serve`).
EXPOSE 3030 8080
# No `dagster` ENTRYPOINT: the Helm chart starts the code server, and dagster-k8s the run and step
# workers, by passing the whole command line as the container's args
# (`/opt/venv/bin/python -m dagster api execute_step`), which an ENTRYPOINT would prefix. The
# prediction service is started the same way (args `ml-platform serve MODEL ...`), so tini
# forwards the pod's SIGTERM to uvicorn, which drains requests and flushes the call journal.
# No HEALTHCHECK: Kubernetes probes the service's /healthz and /readyz itself.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dagster", "api", "grpc", "-m", "ml_platform.definitions", "-h", "0.0.0.0", "-p", "3030"]
