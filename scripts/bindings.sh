#!/usr/bin/env bash
# Generates the Kotlin, Swift and Python bindings of sellsync-ffi from its built cdylib (uniffi
# library mode) into target/bindings/{kotlin,swift,python}, copies the library next to the
# Python module, and checks that the Swift C header compiles (`cc -fsyntax-only`; there is no
# Swift toolchain here, so the .swift file itself is not compiled). uniffi-bindgen reads
# crates/ffi/uniffi.toml (Kotlin package, Swift module names) through cargo metadata.
#
#   scripts/bindings.sh            # debug build
#   PROFILE=release scripts/bindings.sh
#
# Fails (exit non-zero) on any error, and when cargo or cc is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 not found: $2" >&2; exit 1; }
}
need cargo "install Rust (rustup)"
need cc "install a C compiler (apt-get install gcc) to check the Swift header"

profile="${PROFILE:-debug}"
flag=()
[ "$profile" = release ] && flag=(--release)
target="${CARGO_TARGET_DIR:-target}"
out="$target/bindings"

echo "== build sellsync-ffi ($profile) and uniffi-bindgen"
nice cargo build "${flag[@]}" -p sellsync-ffi -p uniffi-bindgen
lib="$target/$profile/libsellsync_ffi.so"
[ -f "$lib" ] || { echo "error: $lib was not built" >&2; exit 1; }
bindgen="$target/$profile/uniffi-bindgen"

rm -rf "$out"
for lang in kotlin swift python; do
  echo "== generate $lang"
  "$bindgen" generate "$lib" --language "$lang" --out-dir "$out/$lang" --no-format
done
cp "$lib" "$out/python/"
[ -f "$out/python/sellsync.py" ] || { echo "error: no sellsync.py generated" >&2; exit 1; }
[ -n "$(find "$out/kotlin" -name '*.kt' | head -1)" ] || { echo "error: no Kotlin generated" >&2; exit 1; }

echo "== swift: the generated C header compiles (cc -fsyntax-only)"
header="$out/swift/sellsyncFFI.h"
[ -f "$header" ] || { echo "error: no $header generated" >&2; exit 1; }
printf '#include "sellsyncFFI.h"\nint main(void) { return 0; }\n' > "$out/swift/check_header.c"
# The header uses Clang's nullability qualifiers (_Nonnull, _Nullable); GCC, the system compiler
# here, does not know them, so they are defined away for it (they only annotate pointers).
nullability=()
cc --version 2>/dev/null | grep -qi clang || nullability=(-D_Nonnull= -D_Nullable=)
cc -fsyntax-only -Wall -Wextra -Werror -std=c11 "${nullability[@]}" -I "$out/swift" \
  "$out/swift/check_header.c"
echo "bindings in $out/{kotlin,swift,python}"
