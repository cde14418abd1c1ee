//! Change observation beside the listener: [`Observation`] (what [`crate::Device::observe`]
//! returns: `stop()` removes the listener) and [`ChangeFeed`] (an async `next_changes` call,
//! no foreign callback at all).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sellsync_device::ChangeStream;

use crate::error::{SellsyncError, invalid};
use crate::listener::ChangeListener;

/// The longest wait of [`ChangeFeed::next_changes`], in milliseconds (an hour).
pub const MAX_WAIT_MS: u32 = 3_600_000;

/// One listener registered with [`crate::Device::observe`]. `stop()` removes it: it is not
/// called again and is freed. Dropping this handle does not stop the listener (a caller may
/// ignore it); closing the device does.
#[derive(uniffi::Object)]
pub struct Observation {
    pub(crate) listener: Arc<Mutex<Option<Arc<dyn ChangeListener>>>>,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("active", &self.is_active())
            .finish()
    }
}

#[uniffi::export]
impl Observation {
    /// Removes the listener: no later change is told to it. Stopping twice is harmless.
    pub fn stop(&self) {
        let l = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(l);
    }

    /// Whether the listener is still registered (not stopped).
    pub fn is_active(&self) -> bool {
        self.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

/// A subscription to the records changed from the moment it was made (by a local edit, a sync
/// round or a resolution), read by awaiting [`ChangeFeed::next_changes`]. Changes accumulate
/// until read; nothing is lost between calls. It keeps working after the device is closed (it
/// then reports nothing new).
#[derive(Debug, uniffi::Object)]
pub struct ChangeFeed {
    pub(crate) stream: tokio::sync::Mutex<ChangeStream>,
}

#[uniffi::export(async_runtime = "tokio")]
impl ChangeFeed {
    /// Waits up to `timeout_ms` (1 to 3,600,000) for changes, then returns the records changed
    /// since the last call, each once, in id order; an empty list when none changed within the
    /// wait. Cancel-safe: a call cancelled (Kotlin) or timed out loses nothing. Calls on one
    /// feed queue.
    pub async fn next_changes(&self, timeout_ms: u32) -> Result<Vec<String>, SellsyncError> {
        if timeout_ms == 0 || timeout_ms > MAX_WAIT_MS {
            return Err(invalid(
                "timeout_ms",
                format!("{timeout_ms}: give 1 to {MAX_WAIT_MS} milliseconds"),
            ));
        }
        let mut stream = self.stream.lock().await;
        let wait = Duration::from_millis(u64::from(timeout_ms));
        let ids = tokio::time::timeout(wait, stream.next())
            .await
            .unwrap_or_default();
        Ok(ids.iter().map(ToString::to_string).collect())
    }
}

#[uniffi::export]
impl ChangeFeed {
    /// The records changed since the last call, without waiting (empty if none). Errors:
    /// `Conflict` when a `next_changes` call is waiting on this feed.
    pub fn try_next_changes(&self) -> Result<Vec<String>, SellsyncError> {
        let mut stream = self
            .stream
            .try_lock()
            .map_err(|_| SellsyncError::Conflict {
                target: "the change feed".to_owned(),
                reason: "a next_changes call is waiting on it".to_owned(),
            })?;
        Ok(stream.try_next().iter().map(ToString::to_string).collect())
    }
}
