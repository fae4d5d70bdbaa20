# Quick start: `make dev` serves the gateway on 127.0.0.1:8787; `make check` is
# the quick loop (fmt, clippy, host tests; no servers); `make test` runs the
# whole suite. All of them bootstrap whatever is missing first.
.PHONY: dev check test build bootstrap clean soak fuzz bench

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	@scripts/build.sh

# Auth is off locally through .dev.vars, made from .dev.vars.example when absent.
dev: build
	@[ -f .dev.vars ] || { cp .dev.vars.example .dev.vars && echo "dev: created .dev.vars from .dev.vars.example (auth off)"; }
	node_modules/.bin/wrangler dev -c wrangler.dev.toml --ip 127.0.0.1 --port 8787 $(ARGS)

# fmt, clippy (host: routing, bench; wasm32: the Worker) and routing's host tests.
check:
	@scripts/check.sh

# check, then the build and everything that needs a server (README: "What `make test` runs").
test:
	@scripts/test.sh

# Ten minutes of churn, publishing and kicks against a local server (not part of make test).
# SOAK_SECONDS shortens it (with SOAK_SAMPLE_SECONDS=2 for enough memory readings).
soak: build
	node tests/soak/soak.mjs

# A long fuzz run: FUZZ_CASES inputs per target (make test runs 2,000).
fuzz: bootstrap
	FUZZ_CASES=$${FUZZ_CASES:-1000000} cargo test --release -p routing --test fuzz -- --test-threads=1

clean:
	rm -rf build target .wrangler

# Benchmarks (v2): ours (and ours batched) vs a partyserver room vs the durable JS peer vs a
# native tokio server, 3 rounds; rewrites BENCHMARKS.md and BENCHMARKS.jsonl. BENCH_* env vars size it.
bench: build
	@BENCH_COMMAND="make bench" scripts/bench.sh $(ARGS)
