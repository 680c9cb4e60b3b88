# wyoming-wsrvc: GPU-capable image that also runs on CPU-only hosts.
#   docker build -t wyoming-wsrvc .
#   docker run -d -p 10210:10210 -v wsrvc-data:/data wyoming-wsrvc              # CPU
#   docker run -d --gpus all -p 10210:10210 -v wsrvc-data:/data wyoming-wsrvc   # NVIDIA GPU
# The PyPI torch wheel for x86-64 bundles CUDA and falls back to the CPU when no GPU is visible.
# A CPU-only image (no CUDA libraries: about 4 GB smaller) takes torch from PyTorch's CPU index:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t wyoming-wsrvc:cpu .
FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX=
ARG TORCH_VERSION=2.11.0
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY wyoming_wsrvc ./wyoming_wsrvc
RUN if [ -n "${TORCH_INDEX}" ]; then \
        pip install --no-cache-dir --index-url "${TORCH_INDEX}" \
            "torch==${TORCH_VERSION}" "torchaudio==${TORCH_VERSION}"; \
    fi \
    && pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 1000 wsrvc \
    && mkdir -p /data /app && chown wsrvc /data
COPY --from=build /opt/venv /opt/venv
COPY config /app/config
ENV PATH=/opt/venv/bin:$PATH \
    HF_HOME=/data/hf \
    TORCH_HOME=/data/torch \
    PYTHONUNBUFFERED=1
USER wsrvc
WORKDIR /data
VOLUME /data
EXPOSE 10210
# No --uri: the check reads the running server's own (its flags, $WYOMING_WSRVC_ARGS), so a
# container started with another --uri is checked where it listens.
HEALTHCHECK --start-period=10m --interval=30s --timeout=15s \
    CMD ["python", "-m", "wyoming_wsrvc.server.healthcheck"]
# The entry point seeds /data/voices with the example profile on first start, then execs the
# server as PID 1, so it receives SIGTERM itself (clean shutdown, zeroconf withdrawn).
ENTRYPOINT ["/app/config/docker-entrypoint.sh"]
CMD ["--uri", "tcp://0.0.0.0:10210", "--zeroconf"]
