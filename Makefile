# Trellis: two commands.
#   make run   — install SoftHSM2 if missing, build release, run a development CA in ./var
#   make test  — install what the tests need if missing, then run every test
SHELL := /bin/bash
CARGO ?= cargo
DIR ?= ./var
LISTEN ?= 127.0.0.1:8443

.PHONY: run test deps-run deps-test deps-bench build-release lint bench hsm-bench fuzz soak soak

run: deps-run build-release
	$${CARGO_TARGET_DIR:-target}/release/ca-server dev --dir $(DIR) --listen $(LISTEN)

# The default members, then the example service (not a default member, so
# plain cargo commands skip tokio-postgres): its binary is built before the
# e2e tests run it (tests/tests/api_service.rs), its own tests after.
test: deps-test
	$(CARGO) build --bins
	$(CARGO) build -p api-service --bins
	$(CARGO) test
	$(CARGO) test -p api-service

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

hsm-bench:
	$(CARGO) run --release -p hsm --features bench --bin hsm-bench

# make bench — build release, run every configuration (Trellis, cfssl serve,
# multirootca over HTTPS with the own load generator and with wrk, in-process
# limit, raw HSM, crypto floor, container start, idle ca-client memory), write
# docs/benchmarks.md. Extra ca-bench options: make bench BENCH_ARGS="--seconds 5".
bench: deps-bench
	$(CARGO) build --release -p ca-server -p ca-client -p ca-bench
	$${CARGO_TARGET_DIR:-target}/release/ca-bench all $(BENCH_ARGS) --out docs/benchmarks.md

# make soak — build release, drive Trellis (native API, HTTPS, loopback) open
# loop at half of its measured peak for SOAK_MINUTES after a warm-up (the
# replay window + 30 s), sampling throughput, p99, errors and the server's
# resident set every 10 s; then SIGTERM and `ca-server log verify`. Writes
# docs/soak.md; fails when a criterion fails (errors, resident set not flat
# within 10%, log verify). Extra options: make soak SOAK_ARGS="--rate 500".
SOAK_MINUTES ?= 10
soak: deps-test
	$(CARGO) build --release -p ca-server -p ca-bench
	$${CARGO_TARGET_DIR:-target}/release/ca-bench soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS) --out docs/soak.md

# make fuzz — install cargo-fuzz if missing, then run every fuzz target for
# FUZZ_SECONDS each (one libFuzzer process, so it stays on one core) and
# print each target's final stats line. cargo-fuzz needs nightly -Z flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. New inputs go to
# fuzz/work/<target> (ignored); seeds are fuzz/corpus/<target>, crashers
# kept as regressions fuzz/regressions/<target>. Crashes land in
# fuzz/artifacts/<target>; the make fails if any target crashed.
# FUZZ_SANITIZER=none builds without AddressSanitizer.
FUZZ_SECONDS ?= 60
FUZZ_SANITIZER ?= address
FUZZ_TARGETS ?= csr_decode cfssl_envelope auth_header policy_names log_scan spki_check
FUZZ_ENV = RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=1 CARGO_TARGET_DIR=$(CURDIR)/fuzz/target

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(FUZZ_ENV) $(CARGO) fuzz build -s $(FUZZ_SANITIZER)
	@cd fuzz && failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p work/$$t artifacts/$$t regressions/$$t; \
	  echo "== fuzz $$t ($(FUZZ_SECONDS) s, sanitizer $(FUZZ_SANITIZER))"; \
	  if $(FUZZ_ENV) $(CARGO) fuzz run -s $(FUZZ_SANITIZER) $$t work/$$t corpus/$$t regressions/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 > work/$$t.log 2>&1; \
	  then status=ok; else status=FAILED; failed="$$failed $$t"; fi; \
	  echo "$$t: $$status: $$(grep -E '^#[0-9]+[[:space:]]+DONE' work/$$t.log | tail -1)"; \
	  grep -E '^stat::number_of_executed_units' work/$$t.log | sed "s/^/$$t: /"; \
	  if [ $$status = FAILED ]; then tail -40 work/$$t.log; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (see fuzz/artifacts/)"; exit 1; fi

build-release:
	$(CARGO) build --release -p ca-server -p ca-client

deps-run:
	@scripts/ensure-deps.sh run

deps-test:
	@scripts/ensure-deps.sh test

deps-bench:
	@scripts/ensure-deps.sh bench
