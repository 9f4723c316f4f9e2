# syntax=docker/dockerfile:1
# One image with the three binaries; each Kubernetes workload names its own command
# (k8s/base/*/): /usr/local/bin/adapter, /usr/local/bin/meeting-service,
# /usr/local/bin/migration. The `calendly` CLI (package calendly-cli: webhook subscriptions,
# back-fill) comes along for one-off pods.
#
#   docker build -t registry.example.com/calendly-meetings:0.1.0 .
#
# The build needs no system protoc (the proto crate compiles with protox) and no OpenSSL
# (rustls).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p adapter -p meeting-service -p migration -p calendly-cli \
    && mkdir -p /out \
    && cp target/release/adapter target/release/calendly target/release/meeting-service \
          target/release/migration /out/

# glibc, libgcc and CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/ /usr/local/bin/
# The distroless "nonroot" user, numerically, so runAsNonRoot can verify it.
USER 65532:65532
# adapter HTTP and metrics, meeting-service gRPC and metrics.
EXPOSE 3001 9464 50051 9465
ENTRYPOINT ["/usr/local/bin/meeting-service"]
