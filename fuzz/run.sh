#!/usr/bin/env bash
# A fuzzing campaign: fuzz/run.sh TARGET SECONDS, or fuzz/run.sh all SECONDS (every target in
# turn), or fuzz/run.sh replay (every committed regression input, once each).
#
# A campaign starts from the committed seeds (corpus/TARGET) and the committed crashers
# (regressions/TARGET), which it only reads; what it learns goes to target/campaign/TARGET, kept
# between runs, and a crashing input to artifacts/TARGET/. At the end of each target it prints
# its executions and libFuzzer's last coverage line (cov: edges, ft: features).
#
# Exits non-zero if any target crashed (or did not build), naming the crashing input.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  echo "usage: fuzz/run.sh TARGET|all SECONDS   |   fuzz/run.sh replay" >&2
  exit 2
}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz/run.sh: no nightly toolchain (cargo-fuzz needs it): rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is not installed: cargo install --locked cargo-fuzz" >&2
  exit 1
fi

all_targets() {
  cargo +nightly fuzz list
}

# The fuzzer binary of a target, as `cargo fuzz build` leaves it.
binary() {
  local triple
  triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
  echo "target/$triple/release/$1"
}

failed=()

campaign() {
  local target=$1 seconds=$2
  local work="target/campaign/$target" artifacts="artifacts/$target"
  local log="target/campaign/$target.log"
  mkdir -p "$work" "$artifacts" "corpus/$target"
  local inputs=("$work" "corpus/$target") options=()
  [ -d "regressions/$target" ] && inputs+=("regressions/$target")
  # Targets that read JSON get its tokens and Zendesk's attribute names as a dictionary.
  case "$target" in
    fuzz_zendesk_response | fuzz_sim_request | fuzz_grant) options+=(-dict=dict/json.dict) ;;
  esac
  echo "== fuzz $target for ${seconds}s (inputs: ${inputs[*]})"
  local rc=0 started=$SECONDS
  cargo +nightly fuzz run "$target" "${inputs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${options[@]}" >"$log" 2>&1 || rc=$?
  local execs last
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  echo "   $target: ${execs:-?} executions in $((SECONDS - started))s (build included); last: ${last:-none}"
  if [ "$rc" -ne 0 ]; then
    failed+=("$target")
    echo "   $target FAILED (exit $rc); log: fuzz/$log" >&2
    grep -E 'panicked at|SUMMARY|ERROR: libFuzzer' "$log" | head -5 >&2 || true
    local crasher
    crasher=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$crasher" ]; then
      echo "   crashing input: fuzz/$crasher" >&2
      echo "   replay: cargo +nightly fuzz run $target $crasher" >&2
    fi
  fi
}

replay() {
  cargo +nightly fuzz build
  local target file
  for dir in regressions/*/; do
    target=$(basename "$dir")
    for file in "$dir"*; do
      [ -f "$file" ] || continue
      if "$(binary "$target")" "$file" >/dev/null 2>&1; then
        echo "   replayed $target/$(basename "$file"): no crash"
      else
        failed+=("$target")
        echo "   $target/$(basename "$file") CRASHES: $(binary "$target") fuzz/$file" >&2
      fi
    done
  done
}

case "${1:-}" in
  replay)
    [ $# -eq 1 ] || usage
    echo "== replay the committed regression inputs"
    replay
    ;;
  all)
    [ $# -eq 2 ] || usage
    cargo +nightly fuzz build
    for t in $(all_targets); do campaign "$t" "$2"; done
    ;;
  "")
    usage
    ;;
  *)
    [ $# -eq 2 ] || usage
    all_targets | grep -x "$1" >/dev/null || { echo "fuzz/run.sh: no target $1 (targets: $(all_targets | tr '\n' ' '))" >&2; exit 2; }
    campaign "$1" "$2"
    ;;
esac

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz/run.sh: no crash"
