# Trellis: two commands.
#   make run   — install SoftHSM2 if missing, build release, run a development CA in ./var
#   make test  — install what the tests need if missing, then run every test
SHELL := /bin/bash
CARGO ?= cargo
DIR ?= ./var
LISTEN ?= 127.0.0.1:8443

.PHONY: run test deps-run deps-test build-release lint bench hsm-bench fuzz

run: deps-run build-release
	$${CARGO_TARGET_DIR:-target}/release/ca-server dev --dir $(DIR) --listen $(LISTEN)

test: deps-test
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

hsm-bench:
	$(CARGO) run --release -p hsm --bin hsm-bench

# make bench — build release, run every configuration (Trellis, cfssl serve,
# multirootca, in-process limit, raw HSM), write docs/benchmarks.md.
# Extra ca-bench options: make bench BENCH_ARGS="--seconds 5".
bench: deps-test
	$(CARGO) build --release -p ca-server -p ca-bench
	$${CARGO_TARGET_DIR:-target}/release/ca-bench all $(BENCH_ARGS) --out docs/benchmarks.md

build-release:
	$(CARGO) build --release -p ca-server -p ca-client

deps-run:
	@scripts/ensure-deps.sh run

deps-test:
	@scripts/ensure-deps.sh test
