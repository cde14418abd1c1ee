//! Automerge on bytes from outside this process.
//!
//! automerge 0.12.0 panics on some malformed input instead of returning an error (in hexane's
//! LEB128 and RLE decoders, reached from `Automerge::load`, `load_incremental` and
//! `receive_sync_message`; see `docs/protocol.md` §4). Every call that loads or applies
//! bytes from a network, a file or another process goes through [`guarded`], which turns such a
//! panic into an [`AutomergePanic`] error.
//!
//! Invariants:
//! - A value the guarded call was mutating when it panicked (a document, a sync state) is in an
//!   unknown state: the caller discards it (or restores a copy) and keeps nothing of it.
//! - A caught panic prints nothing: a process-wide panic hook, installed once, stays silent for
//!   panics raised inside [`guarded`] on the current thread and hands every other panic to the
//!   hook that was installed before it.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// Automerge panicked on the bytes it was given (an upstream bug on malformed input); nothing
/// of them was kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("automerge cannot read these bytes (it failed on malformed input: {0})")]
pub struct AutomergePanic(pub String);

thread_local! {
    /// Depth of [`guarded`] calls on this thread: a panic while it is above 0 is caught.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, an automerge call on foreign bytes, and turns a panic inside it into an error.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, AutomergePanic> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".to_owned());
        AutomergePanic(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo fuzz run fuzz_record_load`: automerge 0.12.0 panics on it in
    /// `hexane-1.0.0-alpha.5/src/lib.rs:354` (LEB128).
    const LEB128_PANIC: &str =
        "856f4a83ff8500000309000000012303410012cbfeff000000012303000000001029";
    /// The second panic site, `hexane-1.0.0-alpha.5/src/rle/decoder.rs:216`.
    const RLE_PANIC: &str = "856f4a83ff850000030900000001230100cb000010ff";

    #[test]
    fn a_panicking_load_becomes_an_error_and_the_next_call_works() {
        for hex_input in [LEB128_PANIC, RLE_PANIC] {
            let bytes = hex::decode(hex_input).unwrap();
            let err = guarded(|| automerge::Automerge::load(&bytes)).unwrap_err();
            assert!(!err.0.is_empty());
            // Whatever automerge makes of them incrementally, no panic escapes.
            let mut doc = automerge::Automerge::new();
            let _ = guarded(|| doc.load_incremental(&bytes));
        }
        assert_eq!(guarded(|| 7), Ok(7));
        assert!(
            guarded(|| automerge::Automerge::load(b"junk"))
                .unwrap()
                .is_err()
        );
    }
}
