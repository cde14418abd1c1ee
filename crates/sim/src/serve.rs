//! Serving on a real socket. Each connection carries a kill switch so that a handler can make
//! the client see a dropped connection instead of a response (fault injection).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::state::Sim;

/// Kill switch of one connection; handlers find it as `ConnectInfo<ConnKill>`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnKill(Arc<AtomicBool>);

impl ConnKill {
    /// From now on the connection fails every read and write, so hyper drops it unanswered.
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A TCP stream that fails once killed.
#[derive(Debug)]
pub(crate) struct SimStream {
    inner: TcpStream,
    kill: ConnKill,
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection dropped by fault injection",
    )
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.kill.0.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.0.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.0.load(Ordering::SeqCst) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections carry a [`ConnKill`].
#[derive(Debug)]
pub(crate) struct SimListener(TcpListener);

impl Listener for SimListener {
    type Io = SimStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        // Small request/response exchanges: do not wait to coalesce segments.
        let _ = stream.set_nodelay(true);
        (
            SimStream {
                inner: stream,
                kill: ConnKill::default(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.io().kill.clone()
    }
}

/// Serves the simulator on an already bound listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    sim: Sim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = crate::http::app(sim).into_make_service_with_connect_info::<ConnKill>();
    axum::serve(SimListener(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}
