#!/usr/bin/env bash
# The Python suite of the bindings (tests/ffi-python), what CI runs: builds the CLI (the hub the
# tests start) and sellsync-ffi, generates the bindings (scripts/bindings.sh, which also checks
# the Swift header), then runs pytest on the generated module against a real hub process.
#
# Exits non-zero on any failure, and when a tool (cargo, cc, python3, pytest) is missing: a
# missing tool fails the run, it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 not found: $2" >&2; exit 1; }
}
need cargo "install Rust (rustup)"
need python3 "install Python 3.9 or later"
python3 -m pytest --version >/dev/null 2>&1 || {
  echo "error: pytest not found: python3 -m pip install pytest" >&2
  exit 1
}

target="${CARGO_TARGET_DIR:-target}"
echo "== build the CLI (sellsync hub)"
nice cargo build -p sellsync
scripts/bindings.sh

echo "== pytest tests/ffi-python"
export SELLSYNC_BIN="${SELLSYNC_BIN:-$PWD/$target/debug/sellsync}"
export SELLSYNC_BINDINGS="$PWD/$target/bindings/python"
python3 -m pytest -q tests/ffi-python "$@"
