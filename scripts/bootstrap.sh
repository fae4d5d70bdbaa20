#!/usr/bin/env bash
# Takes a fresh machine to one that can build and test the gateway, without
# downloading anything from a code host: the wasm32 target, pinned cargo tools
# and the npm packages of package-lock.json. Idempotent: with everything
# present it only checks versions and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER_BUILD_VERSION=0.8.7
say() { printf 'bootstrap: %s\n' "$*" >&2; }

command -v cargo >/dev/null || { say "cargo is required (install Rust with rustup)"; exit 1; }
command -v node >/dev/null || { say "node >= 20 is required"; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then say "node >= 20 is required, found $(node --version)"; exit 1; fi

if command -v rustup >/dev/null; then
  installed=$(rustup target list --installed)
  grep -qx wasm32-unknown-unknown <<<"$installed" || { say "adding target wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"

# worker-build, pinned.
if [ "$(worker-build --version 2>/dev/null | awk '{print $NF}')" != "$WORKER_BUILD_VERSION" ]; then
  say "installing worker-build $WORKER_BUILD_VERSION"
  cargo install --locked --force worker-build --version "=$WORKER_BUILD_VERSION"
fi

# wasm-bindgen-cli at exactly the wasm-bindgen version the Worker links.
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$wb_version" ] || { say "no wasm-bindgen in Cargo.lock"; exit 1; }
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $NF}')" != "$wb_version" ]; then
  say "installing wasm-bindgen-cli $wb_version"
  if ! cargo install --locked --force wasm-bindgen-cli --version "=$wb_version"; then
    # The published lockfile of wasm-bindgen-cli can name a yanked crate
    # (0.2.130 names webpki-roots 1.0.11); the tool itself stays pinned.
    say "--locked install failed (a yanked crate in its lockfile); installing $wb_version with fresh resolution"
    cargo install --force wasm-bindgen-cli --version "=$wb_version"
  fi
fi

# npm packages from the committed lockfile (wrangler, binaryen for wasm-opt, ws).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund
  touch node_modules/.package-lock.json
fi

# Debian's chromium for the browser tests (tests/browser, driven by playwright-core
# with executablePath; no browser download).
if [ ! -x /usr/bin/chromium ]; then
  say "installing chromium (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# schemathesis (and openapi-spec-validator), pinned, for the API sweep
# (tests/api/api-sweep.py), in a venv under the git-ignored .tools/.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
sweep_venv=.tools/venv
sweep_have=$("$sweep_venv/bin/python" -c 'from importlib.metadata import version as v; print(v("schemathesis"), v("openapi-spec-validator"))' 2>/dev/null || true)
if [ "$sweep_have" != "$SCHEMATHESIS_VERSION $OPENAPI_SPEC_VALIDATOR_VERSION" ]; then
  say "installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION into $sweep_venv"
  command -v python3 >/dev/null || { say "python3 (3.9+, with venv) is required for the API sweep"; exit 1; }
  "$sweep_venv/bin/python" -c '' 2>/dev/null || python3 -m venv --clear "$sweep_venv"
  "$sweep_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi
