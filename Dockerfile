# snapkeep container image: a release binary on a distroless base, running as a non-root user
# (uid 65532), serving /data on 0.0.0.0:8080.
#
#   docker build -t snapkeep .
#   docker run -p 8080:8080 -v snapkeep-data:/data snapkeep
#
# A bind mount must belong to uid 65532 (the image's user): `sudo chown -R 65532:65532 ./data`
# first, or the start stops with a line that says so.

FROM rust:1-slim-bookworm AS build
WORKDIR /src

# The dependencies in a layer of their own, built against an empty crate: a change of the
# sources rebuilds snapkeep alone, not the 160-odd crates it uses.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin snapkeep \
 && rm -rf src target/release/snapkeep target/release/deps/snapkeep-* \
      target/release/deps/libsnapkeep-* target/release/.fingerprint/snapkeep-*

COPY src ./src
COPY client ./client
# COPY keeps the files' own times, which may be older than the empty crate's build.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin snapkeep \
 && mkdir /data

# distroless/cc has glibc and libgcc (what a Rust binary links) and no shell, no package
# manager, no curl: the health check is the binary's own subcommand.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/snapkeep /usr/local/bin/snapkeep
# The volume's mount point must belong to the user that writes it (uid 65532, "nonroot").
COPY --from=build --chown=65532:65532 /data /data
ENV SNAPKEEP_LISTEN=0.0.0.0:8080 \
    SNAPKEEP_DATA_DIR=/data
USER 65532:65532
VOLUME /data
EXPOSE 8080
# Ready, not only running: a server that cannot write /data (or reach its bucket) is unhealthy.
# The start interval lets `depends_on: condition: service_healthy` go on within a second or
# two of the start instead of waiting a whole interval (Docker 25 and later).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --start-interval=1s --retries=3 \
    CMD ["/usr/local/bin/snapkeep", "healthcheck"]
# Exec form: snapkeep is PID 1 and receives docker stop's SIGTERM itself; it stops accepting,
# finishes the requests in flight (up to SNAPKEEP_SHUTDOWN_TIMEOUT, 8 s, below docker stop's 10)
# and exits 0.
ENTRYPOINT ["/usr/local/bin/snapkeep"]
CMD ["serve"]
