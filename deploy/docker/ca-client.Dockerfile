# syntax=docker/dockerfile:1
# Trellis ca-client (sidecar / init container) image. Build from the
# repository root:
#
#   docker build -f deploy/docker/ca-client.Dockerfile -t trellis/ca-client .
#
# Not built in CI here (see README.md in this directory).
#
# Usage (see deploy/kubernetes/workload-*.yaml):
#   sidecar:         ca-client --config /etc/trellis-client/ca-client.toml
#   init container:  ca-client --config /etc/trellis-client/ca-client.toml --once
# The config path may also be given as CA_CLIENT_CONFIG.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ca-client \
 && install -m 0755 target/release/ca-client /usr/local/bin/ca-client

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
# /bin/sh (for on_renew commands) comes with the base image; nothing else is
# needed: TLS roots come from the configuration, never from the system store.
RUN groupadd --system --gid 10001 trellis \
 && useradd --system --uid 10001 --gid trellis --home-dir /nonexistent \
            --shell /usr/sbin/nologin trellis
COPY --from=build /usr/local/bin/ca-client /usr/local/bin/ca-client
# No HEALTHCHECK: the same image runs `--once` (an init container that exits),
# and the daemon serves /healthz only when metrics_listen is set. Where it is,
# probe http://<metrics_listen>/healthz from the orchestrator.
# Run as the same uid as the service that reads the key (Kubernetes:
# runAsUser), so that key.pem can stay 0600 and signals can be sent.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ca-client"]
CMD ["--help"]
