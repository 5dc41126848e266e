# Lethe — developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test setup lint unit crds docs validate-examples bench fuzz clean image

## The image the chart runs (needs a container engine: docker, or CONTAINER_ENGINE=podman).
CONTAINER_ENGINE ?= docker
IMAGE ?= ghcr.io/lethe-dev/lethe:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image:
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

## Run Lethe on an embedded default: a local API emulator with the CRDs, the examples applied with kubectl.
demo:
	bash scripts/demo.sh

## Everything CI checks: installs test dependencies, formatting, lints, all tests.
test: setup lint unit

## Install what the tests need (idempotent; quick when already there).
setup:
	bash scripts/setup-test-env.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

# cargo-nextest runs each test in its own process with a time limit
# (.config/nextest.toml); plain `cargo test` where it is not installed.
unit:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --locked --no-tests=warn; \
	else \
	  $(CARGO) test --locked; \
	fi

## Regenerate crds/ from the Rust types.
crds:
	$(CARGO) run --quiet --bin lethe -- crd --output-dir crds
	$(CARGO) run --quiet --bin lethe -- crd --output-dir charts/lethe/crds

## Regenerate docs/reference.md from the CRD schemas.
docs:
	$(CARGO) run --quiet --bin lethe -- reference > docs/reference.md

validate-examples:
	$(CARGO) run --quiet --bin lethe -- validate -f examples/

clean:
	$(CARGO) clean

## Benchmarks: print ratios and timings measured in the same run (never asserted in tests).
bench:
	$(CARGO) bench --bench emulator
	$(CARGO) bench --bench postgres
	$(CARGO) bench --bench mysql
	$(CARGO) bench --bench redis
	$(CARGO) bench --bench s3

## Fuzz each target for a while (needs `cargo install cargo-fuzz`; RUSTC_BOOTSTRAP lets the stable toolchain build it).
fuzz:
	for t in duration identifier validate; do RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=60 || exit 1; done
