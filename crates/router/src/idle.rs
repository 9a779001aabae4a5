//! Inactivity timeouts for connections whose protocol has none of its own: WebSocket (and other
//! upgraded) tunnels, as HAProxy's `timeout tunnel`, and admin connections stuck mid-response.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::resources::Slot;

/// When bytes last moved on the connections that share it.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read or write that moved bytes.
    last: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// When bytes last moved (when it was made, if never).
    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Completes once no bytes have moved for `idle`.
    pub(crate) async fn quiet_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A connection that records in its [`Activity`] each read or write that moves bytes.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: &Arc<Activity>) -> Watched<T> {
        Watched {
            inner,
            activity: Arc::clone(activity),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Joins an upgraded client connection to the track's, bytes both ways, until either side
/// closes or neither sends for `idle`. It holds the client connection's `slot` throughout: a
/// tunnel keeps two descriptors, so it counts against the connection limit as long as it is open.
pub(crate) async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, slot: Slot, idle: Duration) {
    let _slot = slot;
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let activity = Activity::new();
    let mut client = Watched::new(TokioIo::new(client), &activity);
    let mut upstream = Watched::new(TokioIo::new(upstream), &activity);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        // Dropping both ends closes them.
        () = activity.quiet_for(idle) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{Activity, Watched};

    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_a_pause_in_both_directions() {
        let activity = Activity::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Watched::new(a, &activity);
        let quiet = activity.quiet_for(Duration::from_secs(10));
        tokio::pin!(quiet);
        let mut one = [0u8; 1];
        for turn in 0..6 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let polled_once = tokio::time::timeout(Duration::ZERO, &mut quiet).await;
            assert!(polled_once.is_err(), "bytes moved within the last 10 s");
            // Writes on the watched side count, and so do its reads.
            if turn % 2 == 0 {
                a.write_all(b"x").await.expect("write");
                b.read_exact(&mut one).await.expect("read");
            } else {
                b.write_all(b"y").await.expect("write");
                a.read_exact(&mut one).await.expect("read");
            }
        }
        let last = tokio::time::Instant::now();
        quiet.await;
        assert_eq!(
            last.elapsed(),
            Duration::from_secs(10),
            "quiet 10 s after the last byte"
        );
    }
}
