# Sluice and its example plugins, for compose.yaml. Not built by our tests
# (our machines have no Docker engine); `make demo` / `make test` are the tested paths.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev libsasl2-dev && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-unknown-unknown
WORKDIR /src
COPY . .
RUN cargo build --release -p sluice && cd plugins && cargo build --release

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY --from=build /src/plugins/target/wasm32-unknown-unknown/release/*.wasm /plugins/
COPY examples/compose.toml /etc/sluice/sluice.toml
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml
EXPOSE 9464
ENTRYPOINT ["sluice"]
CMD ["run"]
