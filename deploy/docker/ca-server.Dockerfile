# syntax=docker/dockerfile:1
# Trellis ca-server image. Build from the repository root:
#
#   docker build -f deploy/docker/ca-server.Dockerfile -t trellis/ca-server .                  # production
#   docker build -f deploy/docker/ca-server.Dockerfile --target dev -t trellis/ca-server:dev .  # + SoftHSM2
#
# Not built in CI here (see README.md in this directory).
#
# The production image contains NO PKCS#11 module: the vendor's module (and
# its client configuration) is mounted or layered in at deploy time, and
# [hsm] module in ca-server.toml names its path. See deploy/kubernetes/.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ca-server \
 && install -m 0755 target/release/ca-server /usr/local/bin/ca-server

# --- common runtime ----------------------------------------------------------
FROM debian:bookworm-slim AS base
# curl only for the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric id so that Kubernetes' runAsUser/fsGroup can match it.
RUN groupadd --system --gid 10001 trellis \
 && useradd --system --uid 10001 --gid trellis --home-dir /var/lib/trellis \
            --shell /usr/sbin/nologin trellis \
 && install -d -o trellis -g trellis -m 0750 /var/lib/trellis \
 && install -d -m 0755 /etc/trellis
COPY --from=build /usr/local/bin/ca-server /usr/local/bin/ca-server
EXPOSE 8443
# Docker/Podman only (Kubernetes ignores it and uses the probes in the
# manifests). -k: the server's certificate is issued for its configured
# tls_names, which need not include 127.0.0.1; liveness is all this checks.
# Assumes [server] listen covers 127.0.0.1:8443 (e.g. "0.0.0.0:8443").
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "-fsSk", "-o", "/dev/null", "https://127.0.0.1:8443/healthz"]
ENTRYPOINT ["/usr/local/bin/ca-server"]

# --- development: SoftHSM2 inside the image --------------------------------------
# `ca-server dev` creates two SoftHSM2 tokens with random PINs, the shipped
# policies, a config and every class in /var/lib/trellis/dev, then serves.
# Mount a volume there to keep the deployment across container restarts:
#   docker run --rm -p 8443:8443 -v trellis-dev:/var/lib/trellis trellis/ca-server:dev
# The dev TLS certificate names localhost, 127.0.0.1 and ::1 only.
# NEVER use this stage in production: the CA keys live in a software token in
# the container's volume.
FROM base AS dev
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 \
 && rm -rf /var/lib/apt/lists/*
USER 10001:10001
CMD ["dev", "--dir", "/var/lib/trellis/dev", "--listen", "0.0.0.0:8443"]

# --- production (the default target: last stage) -------------------------------
# Expects /etc/trellis/ca-server.toml (see deploy/config/ca-server.toml), the
# vendor PKCS#11 module at the path it names, the PIN files, auth keys and
# policies it references, and a writable state_dir. Run `ca-server init` once
# per replica (same image, command `init --config …`) before `serve`.
FROM base AS production
USER 10001:10001
CMD ["serve", "--config", "/etc/trellis/ca-server.toml", "--log-format", "json"]
