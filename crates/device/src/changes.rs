//! Change observation: which records changed, told to subscriptions and callbacks.
//!
//! The facade learns what changed from the store's feed (every document write has a feed
//! seq): after each edit, resolution and sync round it reads the feed past the last seq it
//! reported and hands the records found to every subscriber. A round cut short (timeout, or
//! its future dropped) is caught up by the next call that reports, so nothing is lost, only
//! reported late.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Weak};

use sellsync_model::RecordId;
use tokio::sync::Notify;

use crate::error::panic_text;

/// A callback told of changed records (see [`crate::Device::on_change`]).
pub type ChangeCallback = Box<dyn Fn(&[RecordId]) + Send + Sync>;

/// What one subscription has not taken yet.
#[derive(Debug, Default)]
struct Pending {
    ids: Mutex<BTreeSet<RecordId>>,
    notify: Notify,
}

/// The subscribers of one device.
#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<Vec<Weak<Pending>>>,
    callbacks: Mutex<Vec<Arc<ChangeCallback>>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    pub(crate) fn subscribe(&self) -> ChangeStream {
        let pending = Arc::new(Pending::default());
        lock(&self.subs).push(Arc::downgrade(&pending));
        ChangeStream { pending }
    }

    pub(crate) fn on_change(&self, f: ChangeCallback) {
        lock(&self.callbacks).push(Arc::new(f));
    }

    /// Tells everyone of `ids` (nothing when empty). Callbacks run on the calling thread, with
    /// no lock of the device held; one that panics is logged and skipped.
    pub(crate) fn publish(&self, ids: &[RecordId]) {
        if ids.is_empty() {
            return;
        }
        {
            let mut subs = lock(&self.subs);
            subs.retain(|w| w.strong_count() > 0);
            for s in subs.iter().filter_map(Weak::upgrade) {
                lock(&s.ids).extend(ids.iter().cloned());
                s.notify.notify_one();
            }
        }
        let callbacks: Vec<Arc<ChangeCallback>> = lock(&self.callbacks).clone();
        for cb in callbacks {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| cb(ids))) {
                tracing::warn!("a change callback panicked: {}", panic_text(&*p));
            }
        }
    }
}

/// A subscription to a device's changed records (see [`crate::Device::subscribe`]). Changes
/// accumulate from the moment it is made; dropping it ends it.
#[derive(Debug)]
pub struct ChangeStream {
    pending: Arc<Pending>,
}

impl ChangeStream {
    /// Waits until some record changed since the last call (or since the subscription was made),
    /// then returns those records, each once, in id order. Cancel-safe: a dropped call loses
    /// nothing, the records wait for the next one.
    pub async fn next(&mut self) -> Vec<RecordId> {
        loop {
            let ids = std::mem::take(&mut *lock(&self.pending.ids));
            if !ids.is_empty() {
                return ids.into_iter().collect();
            }
            self.pending.notify.notified().await;
        }
    }

    /// The records changed since the last call, without waiting (empty if none).
    pub fn try_next(&mut self) -> Vec<RecordId> {
        std::mem::take(&mut *lock(&self.pending.ids))
            .into_iter()
            .collect()
    }
}
