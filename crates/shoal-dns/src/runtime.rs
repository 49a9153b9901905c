//! The node's DNS threads: every sandbox's sockets are served by the same few threads, each
//! running its own single-threaded tokio runtime.
//!
//! Why not the daemon's runtime: DNS load would compete with heartbeats and sessions, and a
//! multi-threaded scheduler moves a socket's task between threads, so every datagram costs a
//! cross-thread wakeup. Why not a thread per sandbox: hundreds of sandboxes per node. Here a
//! sandbox gets one UDP socket per thread (SO_REUSEPORT: the kernel spreads clients over
//! them), each socket stays on its thread for its whole life, and a thread's receive buffers
//! serve all of its sockets. Threads start with the first server, not before.
//!
//! Steering by CPU (asked for with [`DnsRuntime::steered_by_cpu`]; off by default): when there
//! is one thread per CPU the daemon may use, thread i is pinned to the i-th of those CPUs and
//! its sockets take the queries that CPU received (SO_INCOMING_CPU: the reuseport group picks
//! the socket of the receiving CPU). On loopback that is the client's own CPU, so a query is
//! answered where it was asked, with no wakeup across cores. bench/dns measured it: 15–30%
//! less CPU per query than hashing, but a client that asks from one CPU gets one DNS thread,
//! sharing that CPU with it: 0.5–0.7× hashing's top rate, and higher latency. Hence off
//! unless the operator knows the node's clients ask from every CPU. Otherwise, and with fewer
//! threads than CPUs, nothing is pinned and the kernel spreads queries by hash.

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
    /// Whether to steer by CPU when the threads are as many as the CPUs (`placement`).
    steer: bool,
    workers: Mutex<Option<Arc<Workers>>>,
    /// Round robin over the threads for what a sandbox has one of (its TCP listener).
    next: AtomicUsize,
    /// What every server on these threads counts (the node's `/metrics`).
    metrics: Arc<DnsMetrics>,
}

#[derive(Debug)]
pub(crate) struct Workers {
    pub(crate) handles: Vec<Handle>,
    /// The CPU each thread is pinned to and whose queries its sockets take (`placement`).
    pub(crate) cpus: Vec<Option<usize>>,
    /// Dropping these ends each thread's `block_on`, which drops its runtime and its tasks.
    _stop: Vec<oneshot::Sender<()>>,
}

impl DnsRuntime {
    /// `threads` threads (at least one), started with the first server.
    pub fn new(threads: usize) -> DnsRuntime {
        DnsRuntime {
            threads: threads.max(1),
            steer: false,
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

    /// Steers each query to the thread on the CPU that received it, when the threads are
    /// as many as the CPUs this process may use (see the module's doc for the trade-off).
    pub fn steered_by_cpu(mut self) -> DnsRuntime {
        self.steer = true;
        self
    }

    /// The CPU each thread is pinned to and takes the queries of, in thread order, once the
    /// threads run (`None` before, and for each thread when nothing is steered).
    pub fn steered_cpus(&self) -> Option<Vec<Option<usize>>> {
        let workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        workers.as_ref().map(|w| w.cpus.clone())
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
        let cpus = if self.steer {
            let allowed = allowed_cpus();
            let cpus = placement(self.threads, &allowed);
            if cpus.iter().all(Option::is_none) {
                tracing::warn!(
                    threads = self.threads,
                    ?allowed,
                    "dns: steering by CPU needs one DNS thread per CPU this process may use; queries are spread by hash"
                );
            }
            cpus
        } else {
            vec![None; self.threads]
        };
        let started = Arc::new(Workers::start(cpus)?);
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

/// Where each of `threads` threads runs, given the CPUs the process may use: one thread on
/// each of them when they are exactly as many (and more than one), so that every CPU that
/// receives a query has a socket to steer it to; otherwise none pinned. Pure.
pub(crate) fn placement(threads: usize, allowed: &[usize]) -> Vec<Option<usize>> {
    if threads > 1 && allowed.len() == threads {
        allowed.iter().copied().map(Some).collect()
    } else {
        vec![None; threads]
    }
}

/// The CPUs this thread may run on (its affinity, which a cgroup's cpuset narrows too);
/// none if the kernel will not say, which turns steering off.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "dns: cannot read the CPUs this process may use; queries are spread by hash");
            Vec::new()
        }
    }
}

/// Pins the calling thread to `cpu`; false (said) if the kernel refuses.
fn pin_here(cpu: usize) -> bool {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(error) = &pinned {
        tracing::warn!(%error, cpu, "dns: cannot pin a DNS thread; its sockets are not steered");
    }
    pinned.is_ok()
}

impl Workers {
    /// One thread per entry of `cpus`, pinned where it names a CPU.
    fn start(mut cpus: Vec<Option<usize>>) -> Result<Workers, DnsError> {
        let threads = cpus.len();
        let mut handles = Vec::with_capacity(threads);
        let mut stops = Vec::with_capacity(threads);
        let mut pinned = Vec::with_capacity(threads);
        for (i, cpu) in cpus.iter().copied().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DnsError::Runtime)?;
            let (stop, stopped) = oneshot::channel::<()>();
            let (placed, is_placed) = std::sync::mpsc::channel();
            handles.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("shoal-dns-{i}"))
                .spawn(move || {
                    crate::metrics::set_thread_index(i);
                    let _ = placed.send(cpu.is_some_and(pin_here));
                    // Ends when the sender is dropped (Err) as well as on a send.
                    let _ = runtime.block_on(stopped);
                })
                .map_err(DnsError::Runtime)?;
            pinned.push(is_placed.recv().unwrap_or(false));
            stops.push(stop);
        }
        // Steering needs every thread where it is meant to be: a socket steered to a CPU
        // whose thread runs elsewhere would wake that thread across cores for every query.
        if pinned.iter().zip(&cpus).any(|(p, c)| c.is_some() && !p) {
            cpus = vec![None; threads];
        } else if cpus.iter().all(Option::is_some) {
            tracing::info!(
                ?cpus,
                "dns: one thread pinned per CPU, each taking the queries its CPU receives"
            );
        }
        Ok(Workers {
            handles,
            cpus,
            _stop: stops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::placement;

    #[test]
    fn one_thread_per_allowed_cpu_or_none_pinned() {
        assert_eq!(placement(2, &[0, 1]), [Some(0), Some(1)]);
        // The CPUs a cpuset allows, whatever their numbers.
        assert_eq!(placement(3, &[2, 5, 7]), [Some(2), Some(5), Some(7)]);
        // More CPUs than threads: a CPU without a thread would hash its queries anyway,
        // and pinned threads could not use the others.
        assert_eq!(placement(2, &[0, 1, 2, 3]), [None, None]);
        // Fewer: nothing to pin to.
        assert_eq!(placement(4, &[0, 1]), [None; 4]);
        // One thread: nothing to steer between; unknown CPUs: nothing pinned.
        assert_eq!(placement(1, &[3]), [None]);
        assert_eq!(placement(2, &[]), [None, None]);
    }
}
