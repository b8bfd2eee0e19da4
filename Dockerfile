# syntax=docker/dockerfile:1
#
# entra-redis-proxy container image.
#   docker build -t entra-redis-proxy:0.1.0 .
# Runs as an unprivileged user (uid 10001); the admin endpoint listens on 0.0.0.0:9464 so
# that kubelet probes and Prometheus reach it; client connections stay on 127.0.0.1:6379
# (the app shares the network namespace: a Kubernetes pod, or compose's network_mode).
# Give it at least `--shutdown-grace` + 5 s to stop (docker stop -t 30; Kubernetes'
# terminationGracePeriodSeconds: 30).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target caches survive between builds (BuildKit); --locked builds exactly
# the committed Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin entra-redis-proxy \
 && install -m 0755 target/release/entra-redis-proxy /entra-redis-proxy

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# CA certificates: the cache's and Entra ID's certificates are verified against them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin proxy
COPY --from=build /entra-redis-proxy /usr/local/bin/entra-redis-proxy
USER 10001:10001
EXPOSE 6379 9464
# No curl in the image: bash's /dev/tcp speaks the one HTTP request the check needs.
# It uses 127.0.0.1, which reaches the admin endpoint whether it binds 127.0.0.1 or 0.0.0.0;
# with --admin-listen "" (admin disabled) remove this check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/entra-redis-proxy"]
CMD ["--admin-listen=0.0.0.0:9464"]
