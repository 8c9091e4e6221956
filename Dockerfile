# georob in a container, for the cluster runs of docs/scale.md.
#
#   docker build -t georob .                       # tract only (pure Rust): the default target
#   docker build --target with-ort -t georob:ort . # plus ONNX Runtime's CPU library (PyPI wheel)
#
# Models, data and suites are not in the image: mount them (docs/scale.md, "The container image").

ARG RUST_VERSION=1.95
ARG DEBIAN=bookworm

# 1. The release build. The manifests and lock file come first so that the dependency
#    download stays cached while only georob's sources change.
FROM rust:${RUST_VERSION}-slim-${DEBIAN} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY transforms transforms
COPY benches benches
COPY src src
COPY docs docs
RUN cargo fetch --locked
RUN cargo build --release --locked --bin georob \
    && strip target/release/georob \
    && target/release/georob --version

# 2. ONNX Runtime's shared library, taken out of its PyPI wheel (the same release `.ci/run`
#    tests against); georob loads it at run time through ORT_DYLIB_PATH.
FROM python:3.11-slim-${DEBIAN} AS ort-wheel
ARG ORT_VERSION=1.32.0
RUN pip download --no-deps --only-binary=:all: --dest /wheel "onnxruntime==${ORT_VERSION}" \
    && python -m zipfile -e /wheel/onnxruntime-*.whl /wheel/x \
    && mkdir -p /opt/onnxruntime \
    && cp /wheel/x/onnxruntime/capi/libonnxruntime.so.* /opt/onnxruntime/ \
    && ln -s "$(ls /opt/onnxruntime/)" /opt/onnxruntime/libonnxruntime.so

# 3. The run-time base: Debian slim (glibc; libstdc++ for ONNX Runtime), an unprivileged user.
FROM debian:${DEBIAN}-slim AS base
RUN useradd --create-home --uid 10001 georob
COPY --from=build /src/target/release/georob /usr/local/bin/georob
USER georob
WORKDIR /work
ENTRYPOINT ["georob"]
CMD ["--help"]

# 4a. With ONNX Runtime (`--target with-ort`): `--backend auto` picks it up.
FROM base AS with-ort
COPY --from=ort-wheel /opt/onnxruntime /opt/onnxruntime
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so

# 4b. The default target: tract only.
FROM base AS tract
