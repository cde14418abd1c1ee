#!/usr/bin/env bash
# The Kotlin suite of the bindings (tests/ffi-kotlin), what CI runs after scripts/ffi-python.sh:
# builds the CLI (the hub the app starts) and sellsync-ffi, generates the bindings
# (scripts/bindings.sh), compiles the generated Kotlin and the app (tests/ffi-kotlin/App.kt) with
# kotlinc, and runs the app on the JVM against the built library and a real hub process.
#
# Installs what is missing: kotlinc from npm (`kotlin-compiler`, the exact version in
# tests/ffi-kotlin/package.json and package-lock.json, into tests/ffi-kotlin/node_modules) and
# JNA from Debian (`apt-get install libjna-java`; the package, not only its jar: its native
# dispatch library lives in /usr/lib/jni). Fails, never skips, when either is still missing.
#
#   scripts/ffi-kotlin.sh
#   SELLSYNC_KOTLIN_SKIP_BUILD=1 scripts/ffi-kotlin.sh   # reuse target/bindings as built
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 not found: $2"; }
need cargo "install Rust (rustup)"
need java "install a Java runtime, 17 or later (apt-get install openjdk-17-jdk-headless)"

here=tests/ffi-kotlin
kotlinc="$here/node_modules/kotlin-compiler/bin/kotlinc"
if [ ! -x "$kotlinc" ]; then
  need npm "install Node.js and npm to fetch kotlinc (npm kotlin-compiler)"
  echo "== npm ci kotlin-compiler (tests/ffi-kotlin/package-lock.json)"
  (cd "$here" && npm ci --no-audit --no-fund --ignore-scripts)
fi
[ -x "$kotlinc" ] || fail "kotlinc not found at $kotlinc after npm ci in $here"
kotlin_lib="$here/node_modules/kotlin-compiler/lib"

jna=/usr/share/java/jna.jar
jna_native() { ls /usr/lib/jni/libjnidispatch.system.so /usr/lib/*/jni/libjnidispatch.system.so 2>/dev/null | head -1; }
if [ ! -f "$jna" ] || [ -z "$(jna_native)" ]; then
  need apt-get "install Debian's libjna-java (JNA 5.13) by hand"
  echo "== apt-get install libjna-java"
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q libjna-java
fi
[ -f "$jna" ] || fail "JNA not found: $jna is missing after apt-get install libjna-java"
[ -n "$(jna_native)" ] || fail "JNA's native library libjnidispatch.system.so is missing (libjna-jni)"

target="${CARGO_TARGET_DIR:-target}"
if [ -z "${SELLSYNC_KOTLIN_SKIP_BUILD:-}" ]; then
  echo "== build the CLI (sellsync hub)"
  nice cargo build -p sellsync
  scripts/bindings.sh
fi
bindings="$target/bindings/kotlin"
lib="$target/debug/libsellsync_ffi.so"
[ -f "$lib" ] || fail "$lib not found: run scripts/bindings.sh"
generated=$(find "$bindings" -name '*.kt')
[ -n "$generated" ] || fail "no generated Kotlin in $bindings: run scripts/bindings.sh"

out="$target/ffi-kotlin"
rm -rf "$out"
mkdir -p "$out"
coroutines="$kotlin_lib/kotlinx-coroutines-core-jvm.jar"
[ -f "$coroutines" ] || fail "$coroutines not found in the kotlin-compiler package"
cp="$jna:$coroutines"

echo "== kotlinc: the generated bindings"
# -nowarn: the generated code is not ours to fix (uniffi's own test runner compiles it so too).
# shellcheck disable=SC2086
nice "$kotlinc" -nowarn -Werror -d "$out/bindings.jar" -classpath "$cp" $generated
echo "== kotlinc: the app (tests/ffi-kotlin/App.kt)"
nice "$kotlinc" -Werror -d "$out/app.jar" -classpath "$cp:$out/bindings.jar" "$here/App.kt"

echo "== run the app against a real hub"
export SELLSYNC_BIN="${SELLSYNC_BIN:-$PWD/$target/debug/sellsync}"
export SELLSYNC_CATALOG="$PWD/tests/ffi-python/catalog.json"
java -ea -Djna.library.path="$PWD/$(dirname "$lib")" \
  -cp "$out/app.jar:$out/bindings.jar:$cp:$kotlin_lib/kotlin-stdlib.jar" \
  AppKt "$@"
