//! uniffi's bindings generator at the version sellsync-ffi is built with (see
//! `scripts/bindings.sh`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
