//! Each connection's deadline: the request head must be complete within
//! `header_timeout` of the connection opening (or of the first byte of the next
//! request on a kept-alive connection), and a kept-alive connection may wait for
//! its next request `idle_timeout` at most. While a request is being handled there
//! is no deadline here: the handler bounds the body's arrival itself.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
    time::Instant,
};

/// The two timeouts of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the connection's start, or the next request's first byte, to the end of
    /// the request head.
    pub header: Duration,
    /// From a response to the next request's first byte.
    pub idle: Duration,
}

/// Why the host closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// The request head was not complete in time.
    HeaderTimeout,
    /// No next request in time.
    IdleTimeout,
    /// Shutting down, with no request in progress.
    Shutdown,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading a request head, due by then.
    Head(Instant),
    /// This many requests being handled.
    Busy(usize),
    /// Waiting for the next request, until then.
    Idle(Instant),
}

/// The phase a connection is in, moved on by its reads and its requests.
pub(super) struct Clock {
    phase: watch::Sender<Phase>,
    timeouts: Timeouts,
}

impl Clock {
    /// A clock for a connection that has just opened: reading its first head.
    pub(super) fn start(timeouts: Timeouts) -> Arc<Self> {
        Arc::new(Self {
            phase: watch::Sender::new(Phase::Head(Instant::now() + timeouts.header)),
            timeouts,
        })
    }

    /// Bytes arrived: on an idle connection, the next request has begun.
    fn bytes_read(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle(_) => {
                *phase = Phase::Head(Instant::now() + self.timeouts.header);
                true
            }
            Phase::Head(_) | Phase::Busy(_) => false,
        });
    }

    /// A request's head is complete and it is being handled until the returned guard
    /// is dropped; then the connection is idle.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.phase.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
            }
        });
        Busy(Arc::clone(self))
    }

    /// Resolves when the connection is due to be closed. `stopping`: the host is
    /// shutting down, so a connection reading a request head is closed at once
    /// (one handling a request is still waited for).
    pub(super) async fn expired(&self, stopping: bool) -> Closed {
        let mut phase = self.phase.subscribe();
        loop {
            let current = *phase.borrow_and_update();
            let (deadline, why) = match current {
                Phase::Busy(_) => {
                    // The sender lives as long as `self`: `changed` cannot fail.
                    let _ = phase.changed().await;
                    continue;
                }
                Phase::Head(_) if stopping => return Closed::Shutdown,
                Phase::Head(deadline) => (deadline, Closed::HeaderTimeout),
                Phase::Idle(deadline) => (deadline, Closed::IdleTimeout),
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return why,
                _ = phase.changed() => {}
            }
        }
    }
}

/// A request being handled; dropping it makes the connection idle (once no other
/// request is in progress).
pub(super) struct Busy(Arc<Clock>);

impl Drop for Busy {
    fn drop(&mut self) {
        let idle = self.0.timeouts.idle;
        self.0.phase.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now() + idle),
            }
        });
    }
}

/// A TCP stream that tells its [`Clock`] when bytes arrive.
pub(super) struct TimedStream {
    stream: TcpStream,
    clock: Arc<Clock>,
}

impl TimedStream {
    pub(super) fn new(stream: TcpStream, clock: Arc<Clock>) -> Self {
        Self { stream, clock }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn a_head_not_complete_in_time_expires_as_a_header_timeout() {
        let clock = Clock::start(TIMEOUTS);
        assert_eq!(clock.expired(false).await, Closed::HeaderTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_request_the_connection_is_idle_until_the_next_first_byte() {
        let clock = Clock::start(TIMEOUTS);
        drop(clock.busy());
        assert_eq!(clock.expired(false).await, Closed::IdleTimeout);
        let clock = Clock::start(TIMEOUTS);
        drop(clock.busy());
        clock.bytes_read();
        assert_eq!(clock.expired(false).await, Closed::HeaderTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_has_no_deadline_until_it_is_answered() {
        let clock = Clock::start(TIMEOUTS);
        let busy = clock.busy();
        let expired = clock.expired(true);
        tokio::pin!(expired);
        // Far past both timeouts (the clock is paused: this returns at once).
        let waited = tokio::time::timeout(Duration::from_secs(3600), expired.as_mut()).await;
        assert!(waited.is_err(), "expired while a request was in progress");
        drop(busy);
        assert_eq!(expired.await, Closed::IdleTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_connection_reading_a_head_is_closed_at_once() {
        let clock = Clock::start(TIMEOUTS);
        let closed = tokio::time::timeout(Duration::from_millis(1), clock.expired(true)).await;
        assert_eq!(closed, Ok(Closed::Shutdown));
    }
}
