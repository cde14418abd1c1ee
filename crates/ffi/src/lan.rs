//! [`LanServer`]: a device serving LAN peers ([`crate::Device::serve_lan`]) until stopped.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::SellsyncError;

/// How long [`LanServer::stop`] waits for the sessions to end.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A device serving LAN peers (other devices of its hub, dialing `sync_peer` at [`url`]) on the
/// address the app gave. `stop()` ends it; so does dropping the handle or closing the device's
/// last reference. Peers see only what their user may see.
///
/// [`url`]: LanServer::url
#[derive(Debug, uniffi::Object)]
pub struct LanServer {
    pub(crate) url: String,
    pub(crate) port: u16,
    pub(crate) shutdown: Mutex<Option<oneshot::Sender<()>>>,
    pub(crate) task: tokio::sync::Mutex<Option<JoinHandle<Result<(), SellsyncError>>>>,
}

#[uniffi::export]
impl LanServer {
    /// `wss://ADDRESS:PORT/`, the address as bound (for `0.0.0.0` give peers this device's LAN
    /// address with [`LanServer::port`]).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The port bound (the one the OS picked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl LanServer {
    /// Stops serving and waits (up to ten seconds) for the sessions to end. The server's own
    /// failure, if it failed, is returned; stopping twice is harmless.
    pub async fn stop(&self) -> Result<(), SellsyncError> {
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(());
        }
        let Some(task) = self.task.lock().await.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_WAIT, task).await {
            Err(_) => Err(SellsyncError::Timeout {
                after_secs: STOP_WAIT.as_secs_f64(),
            }),
            Ok(Err(e)) => Err(crate::device::join_error(e)),
            Ok(Ok(r)) => r,
        }
    }
}
