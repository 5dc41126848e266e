# The image the chart runs: the operator, and the scrub Jobs it creates,
# are the one `lethe` binary. Build with `make image`.
#
# Build stage: the release binary, against the committed Cargo.lock.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin lethe \
 && strip target/release/lethe

# Runtime: distroless with glibc and libgcc only (what `ldd lethe` needs;
# a test keeps it so), no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/lethe /lethe
USER 65532:65532
ENTRYPOINT ["/lethe"]
CMD ["operator"]
