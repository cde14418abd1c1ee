//! [`ChangeListener`]: change observation through a trait the app implements (Kotlin, Swift,
//! Python) or Rust does.

/// Told which records changed, by a local edit, a sync round or a resolution (see
/// [`crate::Device::observe`]). Called from whichever thread made the change: return fast
/// (hop to the UI thread), and do not call the device back synchronously from a sync round.
// `rust, foreign` is uniffi 0.32's spelling of the deprecated `with_foreign`: implemented by the
// app, or in Rust (the tests).
#[uniffi::export(rust, foreign)]
pub trait ChangeListener: Send + Sync {
    /// The ids of the records that changed, each once, in id order.
    fn on_change(&self, records: Vec<String>);
}
