//! How far a pull has come: the bytes of its layers fetched, of their total, for the
//! agent to show while a task is `preparing` (`service create` prints it).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A pull's progress; shared by every caller waiting for the same pull.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// (bytes fetched, bytes to fetch); the total is 0 until the manifest is read.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a `preparing` task says while its image is pulled: `pulling image: 12.3MB of
/// 35.1MB` (docker's units), `pulling image` before the sizes are known, `extracting
/// image: 35.1MB` once every layer is fetched and they are unpacked.
pub fn describe(done: u64, total: u64) -> String {
    if total == 0 {
        "pulling image".to_string()
    } else if done >= total {
        format!("extracting image: {}", human_size(total))
    } else {
        format!(
            "pulling image: {} of {}",
            human_size(done),
            human_size(total)
        )
    }
}

/// docker's sizes: decimal units, three significant digits (`4.26MB`).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let digits = if u == 0 || v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{v:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", units[u])
}

/// Counts the bytes written through it into a [`Progress`]. Our own: oci-client writes a
/// blob into any `AsyncWrite`, and no crate counts into a counter shared with readers.
pub(crate) struct Counting<W> {
    inner: W,
    progress: Arc<Progress>,
}

impl<W> Counting<W> {
    pub(crate) fn new(inner: W, progress: Arc<Progress>) -> Self {
        Counting { inner, progress }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.progress.add(n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    #[test]
    fn describe_says_how_far_a_pull_is() {
        assert_eq!(describe(0, 0), "pulling image");
        assert_eq!(
            describe(12_345_678, 35_100_000),
            "pulling image: 12.3MB of 35.1MB"
        );
        assert_eq!(describe(35_100_000, 35_100_000), "extracting image: 35.1MB");
        // A retried blob can count twice: still the whole.
        assert_eq!(describe(40_000_000, 35_100_000), "extracting image: 35.1MB");
    }

    #[tokio::test]
    async fn counting_adds_what_is_written() {
        let progress = Arc::new(Progress::default());
        progress.set_total(10);
        let mut w = Counting::new(Vec::new(), Arc::clone(&progress));
        w.write_all(b"hello").await.unwrap();
        w.write_all(b"wor").await.unwrap();
        assert_eq!(progress.get(), (8, 10));
        assert_eq!(w.inner, b"hellowor");
    }
}
