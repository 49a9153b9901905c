//! The node's DNS threads: every sandbox's sockets are served by the same few threads, each
//! running its own single-threaded tokio runtime.
//!
//! Why not the daemon's runtime: DNS load would compete with heartbeats and sessions, and a
//! multi-threaded scheduler moves a socket's task between threads, so every datagram costs a
//! cross-thread wakeup. Why not a thread per sandbox: hundreds of sandboxes per node. Here a
//! sandbox gets one UDP socket per thread (SO_REUSEPORT: the kernel spreads clients over
//! them), each socket stays on its thread for its whole life, and a thread's receive buffers
//! serve all of its sockets. Threads start with the first server, not before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::DnsError;
use crate::metrics::DnsMetrics;

/// Threads when none are asked for: the node's cores, at most this many (DNS is a small part
/// of what a node does; four threads answer far more than a node's tasks ask).
const MAX_DEFAULT_THREADS: usize = 4;

/// The threads that serve every [`DnsServer`](crate::DnsServer) of a node. Dropping it stops
/// them (and with them every server still running on them).
#[derive(Debug)]
pub struct DnsRuntime {
    threads: usize,
    workers: Mutex<Option<Arc<Workers>>>,
    /// Round robin over the threads for what a sandbox has one of (its TCP listener).
    next: AtomicUsize,
    /// What every server on these threads counts (the node's `/metrics`).
    metrics: Arc<DnsMetrics>,
}

#[derive(Debug)]
pub(crate) struct Workers {
    pub(crate) handles: Vec<Handle>,
    /// Dropping these ends each thread's `block_on`, which drops its runtime and its tasks.
    _stop: Vec<oneshot::Sender<()>>,
}

impl DnsRuntime {
    /// `threads` threads (at least one), started with the first server.
    pub fn new(threads: usize) -> DnsRuntime {
        DnsRuntime {
            threads: threads.max(1),
            workers: Mutex::new(None),
            next: AtomicUsize::new(0),
            metrics: Arc::default(),
        }
    }

    /// The same, counting into `metrics` (shared with the daemon's `/metrics`).
    pub fn with_metrics(mut self, metrics: Arc<DnsMetrics>) -> DnsRuntime {
        self.metrics = metrics;
        self
    }

    /// The counters of every server on these threads.
    pub fn metrics(&self) -> &Arc<DnsMetrics> {
        &self.metrics
    }

    /// How many threads serve (and so how many UDP sockets each sandbox gets).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The running threads, started on first use.
    pub(crate) fn workers(&self) -> Result<Arc<Workers>, DnsError> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(workers) = &*workers {
            return Ok(workers.clone());
        }
        let started = Arc::new(Workers::start(self.threads)?);
        *workers = Some(started.clone());
        Ok(started)
    }

    /// The thread for the next one-per-sandbox task.
    pub(crate) fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.threads
    }
}

impl Default for DnsRuntime {
    /// One thread per core, at most [`MAX_DEFAULT_THREADS`].
    fn default() -> DnsRuntime {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        DnsRuntime::new(cores.min(MAX_DEFAULT_THREADS))
    }
}

impl Workers {
    fn start(threads: usize) -> Result<Workers, DnsError> {
        let mut handles = Vec::with_capacity(threads);
        let mut stops = Vec::with_capacity(threads);
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DnsError::Runtime)?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("shoal-dns-{i}"))
                .spawn(move || {
                    // Ends when the sender is dropped (Err) as well as on a send.
                    let _ = runtime.block_on(stopped);
                })
                .map_err(DnsError::Runtime)?;
            stops.push(stop);
        }
        Ok(Workers {
            handles,
            _stop: stops,
        })
    }
}
