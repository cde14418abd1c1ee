//! Serving on a real socket.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;

use crate::state::PdSim;

/// Serves the simulator on an already bound listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    sim: PdSim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, crate::http::app(sim))
        .with_graceful_shutdown(shutdown)
        .await
}
