# snapkeep container image: a static-ish release binary on a distroless base, running as a
# non-root user, serving /data on 0.0.0.0:8080.
#
#   docker build -t snapkeep .
#   docker run -p 8080:8080 -v snapkeep-data:/data snapkeep

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY client ./client
RUN cargo build --release --locked \
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/snapkeep", "healthcheck"]
# Exec form: snapkeep is PID 1 and receives docker stop's SIGTERM itself; it stops accepting,
# finishes the requests in flight and exits 0.
ENTRYPOINT ["/usr/local/bin/snapkeep"]
CMD ["serve"]
