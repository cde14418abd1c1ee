#!/usr/bin/env bash
# The binding benchmarks (docs/benchmarks.md, "Bindings"), a local command, not run by CI:
# one store of N deals (default 5,000) written through the facade, then the same calls (open,
# list the deals cold and warm, one edit) from Rust, Python and Kotlin, each on its own copy of
# the store, one run each; then the peak RSS (VmHWM) of each process after opening the store
# with a 32 MiB cache budget and listing every deal. Release builds.
#
#   scripts/bench-bindings.sh          # after scripts/ffi-kotlin.sh has installed kotlinc
#   DEALS=1000 CACHE_MIB=16 scripts/bench-bindings.sh
set -euo pipefail
cd "$(dirname "$0")/.."

deals="${DEALS:-5000}"
cache="${CACHE_MIB:-32}"
target="${CARGO_TARGET_DIR:-target}"
kotlin_lib=tests/ffi-kotlin/node_modules/kotlin-compiler/lib
kotlinc=tests/ffi-kotlin/node_modules/kotlin-compiler/bin/kotlinc
[ -x "$kotlinc" ] || { echo "error: no kotlinc: run scripts/ffi-kotlin.sh first" >&2; exit 1; }
[ -f /usr/share/java/jna.jar ] || { echo "error: no JNA: apt-get install libjna-java" >&2; exit 1; }

nice cargo build --release -p sellsync-ffi --example bench
PROFILE=release scripts/bindings.sh >/dev/null
bin="$target/release/examples/bench"
out="$target/bench-bindings"
rm -rf "$out"
mkdir -p "$out"
cp="/usr/share/java/jna.jar:$kotlin_lib/kotlinx-coroutines-core-jvm.jar"
"$kotlinc" -nowarn -d "$out/bindings.jar" -classpath "$cp" \
  $(find "$target/bindings/kotlin" -name '*.kt') 2>/dev/null
"$kotlinc" -Werror -d "$out/bench.jar" -classpath "$cp:$out/bindings.jar" tests/ffi-kotlin/Bench.kt
java_run() {
  java -Djna.library.path="$PWD/$target/release" \
    -cp "$out/bench.jar:$out/bindings.jar:$cp:$kotlin_lib/kotlin-stdlib.jar" BenchKt "$@"
}
export SELLSYNC_BINDINGS="$PWD/$target/bindings/python"

echo "== uptime: $(uptime)"
echo "== make a store of $deals deals"
"$bin" make "$out/store.redb" "$deals"
for lang in rust python kotlin; do cp "$out/store.redb" "$out/$lang.redb"; done
echo "== open, list cold, list warm, one edit"
"$bin" time "$out/rust.redb"
python3 tests/ffi-python/bench.py time "$out/python.redb"
java_run time "$out/kotlin.redb"
echo "== peak RSS with a $cache MiB cache budget"
"$bin" rss "$out/store.redb" "$cache"
python3 tests/ffi-python/bench.py rss "$out/store.redb" "$cache"
java_run rss "$out/store.redb" "$cache"
echo "== uptime: $(uptime)"
