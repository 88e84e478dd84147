//! Accepting connections: at most `max_connections` open at once per listener (the
//! rest wait in the kernel's listen backlog), a deadline for every request head and
//! every idle keep-alive wait ([`timers`]), and a shutdown that waits for requests
//! in progress, but no longer than the grace period.
//!
//! hyper's HTTP/1 connection serves each connection; the accept loop, the limit and
//! the deadlines are here because hyper's own header timeout also ends a kept-alive
//! connection's idle wait, and `axum::serve` has neither a limit nor a timeout.

mod timers;

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{body::Body, http::Request, Router};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tower_service::Service;

pub use self::timers::Timeouts;
use self::timers::{Clock, Closed, TimedStream};
use crate::metrics::ConnectionMetrics;

/// The largest request head (request line and headers) read; a longer one is
/// answered 431. Webhook heads are a few KiB.
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The most a connection buffers while reading. hyper's default (~400 KiB) lets
/// each stalled connection hold that much.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// One listening socket and what it serves.
pub struct Door {
    /// `public` or `admin`: names the listener in logs and metrics.
    pub name: &'static str,
    /// The bound socket.
    pub listener: TcpListener,
    /// The routes served there.
    pub app: Router,
    /// Connections open at once.
    pub max_connections: usize,
    /// Its connection metrics.
    pub metrics: ConnectionMetrics,
}

/// Serves every door until `shutdown` resolves; then stops accepting, closes the
/// connections that have no request in progress, and waits for the others up to
/// `grace` before closing them too.
pub async fn serve(
    doors: Vec<Door>,
    timeouts: Timeouts,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut running = JoinSet::new();
    for door in doors {
        running.spawn(door.run(timeouts, grace, stopped.clone()));
    }
    shutdown.await;
    let _ = stop.send(true);
    while running.join_next().await.is_some() {}
}

/// What every connection of one door shares.
struct Shared {
    name: &'static str,
    app: Router,
    timeouts: Timeouts,
    metrics: ConnectionMetrics,
    stopped: watch::Receiver<bool>,
}

impl Door {
    async fn run(self, timeouts: Timeouts, grace: Duration, mut stopped: watch::Receiver<bool>) {
        let Self {
            name,
            listener,
            app,
            max_connections,
            metrics,
        } = self;
        let shared = Arc::new(Shared {
            name,
            app,
            timeouts,
            metrics,
            stopped: stopped.clone(),
        });
        let limit = Arc::new(Semaphore::new(max_connections));
        let mut open = JoinSet::new();
        loop {
            while open.try_join_next().is_some() {}
            // A free slot first: past the limit, connections wait in the backlog.
            let permit = tokio::select! {
                biased;
                () = until_stopped(&mut stopped) => break,
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                biased;
                () = until_stopped(&mut stopped) => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    open.spawn(connection(stream, Arc::clone(&shared), permit));
                }
                Err(err) if is_per_connection(&err) => {}
                Err(err) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(listener = name, "cannot accept a connection: {err}");
                    tokio::select! {
                        () = until_stopped(&mut stopped) => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        drop(listener);
        let deadline = Instant::now() + grace;
        let all_closed = tokio::time::timeout_at(deadline, async {
            while open.join_next().await.is_some() {}
        })
        .await;
        if all_closed.is_err() {
            tracing::warn!(
                listener = name,
                connections = open.len(),
                "connections still handling a request after the grace period are closed"
            );
            shared.metrics.shutdown.inc_by(open.len() as u64);
            open.abort_all();
            while open.join_next().await.is_some() {}
        }
    }
}

/// Resolves once shutdown has begun.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which happens only after it said stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Errors of one connection that went away before it was accepted.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until the client closes it, an error, its deadline, or
/// shutdown. Holds its slot (`_permit`) until then.
async fn connection(stream: TcpStream, shared: Arc<Shared>, _permit: OwnedSemaphorePermit) {
    let _open = OpenGauge::new(&shared.metrics);
    let clock = Clock::start(shared.timeouts);
    let service = {
        let (clock, app) = (Arc::clone(&clock), shared.app.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = clock.busy();
            let mut app = app.clone();
            async move {
                let response = app.call(request.map(Body::new)).await;
                drop(busy);
                response
            }
        })
    };
    let mut http = http1::Builder::new();
    // The deadlines are the clock's; hyper's header timeout would also cut the
    // keep-alive wait.
    http.max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_READ_BUFFER)
        .header_read_timeout(None);
    let io = TokioIo::new(TimedStream::new(stream, Arc::clone(&clock)));
    let served = http.serve_connection(io, service);
    tokio::pin!(served);
    let mut stopped = shared.stopped.clone();
    let closed = tokio::select! {
        result = served.as_mut() => return finished(&shared, result),
        closed = clock.expired(false) => closed,
        () = until_stopped(&mut stopped) => {
            // Let a request in progress be answered, then close.
            served.as_mut().graceful_shutdown();
            tokio::select! {
                result = served.as_mut() => return finished(&shared, result),
                closed = clock.expired(true) => closed,
            }
        }
    };
    let (counter, why) = match closed {
        Closed::HeaderTimeout => (
            &shared.metrics.header_timeout,
            "request head not complete in time",
        ),
        Closed::IdleTimeout => (&shared.metrics.idle_timeout, "idle too long"),
        Closed::Shutdown => (&shared.metrics.shutdown, "shutting down"),
    };
    counter.inc();
    tracing::debug!(listener = shared.name, "connection closed: {why}");
}

fn finished(shared: &Shared, result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(listener = shared.name, "connection ended: {err}");
    }
}

/// Counts a connection in `dmflow_connections_open` while it lives.
struct OpenGauge(prometheus_client::metrics::gauge::Gauge);

impl OpenGauge {
    fn new(metrics: &ConnectionMetrics) -> Self {
        metrics.open.inc();
        Self(metrics.open.clone())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
