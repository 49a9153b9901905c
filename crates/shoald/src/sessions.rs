//! What one node may hold open on the leader: a single live session (a newer one replaces
//! the older, as swarmkit's dispatcher does, so an agent that reconnects after a cut link is
//! never refused while its old stream lingers) and a few unary calls in flight per RPC. A
//! member with a valid certificate is trusted to act for itself, not to cost the leader a
//! session loop or a Raft write per call it cares to open.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;
use tonic::Status;

/// Unary calls of one kind one node may have in flight. An agent sends them one at a time;
/// a heartbeat that timed out on its side may still be finishing here, hence more than 1.
pub const MAX_IN_FLIGHT: usize = 4;

/// The live session of each node.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Live>>,
    next: AtomicU64,
}

struct Live {
    id: u64,
    replaced: oneshot::Sender<()>,
}

/// A session's claim to be its node's live one; `replaced` resolves when a newer session
/// of the same node opens.
pub struct Ticket {
    pub id: u64,
    pub replaced: oneshot::Receiver<()>,
}

impl Sessions {
    /// Registers a new session for `node`, ending the one it had.
    pub fn open(&self, node: &str) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let old = lock(&self.live).insert(node.to_string(), Live { id, replaced: tx });
        if let Some(old) = old {
            let _ = old.replaced.send(());
        }
        Ticket { id, replaced: rx }
    }

    /// Forgets session `id` of `node`; whether it was still the live one (a replaced
    /// session must not report its node disconnected).
    pub fn close(&self, node: &str, id: u64) -> bool {
        let mut live = lock(&self.live);
        if live.get(node).is_some_and(|l| l.id == id) {
            live.remove(node);
            true
        } else {
            false
        }
    }
}

/// Unary calls in flight, per node and RPC.
#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<(String, &'static str), usize>>,
}

/// One call in flight; dropping it (the handler returned or was cancelled) frees its place.
pub struct Call<'a> {
    in_flight: &'a InFlight,
    key: (String, &'static str),
}

impl InFlight {
    /// A place for one more `rpc` call of `node`, or the refusal naming both.
    pub fn enter(&self, node: &str, rpc: &'static str) -> Result<Call<'_>, Status> {
        let key = (node.to_string(), rpc);
        let mut counts = lock(&self.counts);
        let n = counts.entry(key.clone()).or_default();
        if *n >= MAX_IN_FLIGHT {
            return Err(Status::resource_exhausted(format!(
                "node {node} has {MAX_IN_FLIGHT} {rpc} calls in flight already; wait for their replies"
            )));
        }
        *n += 1;
        Ok(Call {
            in_flight: self,
            key,
        })
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut counts = lock(&self.in_flight.counts);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_session_replaces_the_older_one() {
        let s = Sessions::default();
        let mut first = s.open("n1");
        let other = s.open("n2");
        assert!(first.replaced.try_recv().is_err(), "not replaced yet");
        let second = s.open("n1");
        assert_eq!(first.replaced.try_recv(), Ok(()));
        // The replaced session's end does not unregister the newer one.
        assert!(!s.close("n1", first.id));
        assert!(s.close("n1", second.id));
        assert!(!s.close("n1", second.id));
        assert!(s.close("n2", other.id));
    }

    #[test]
    fn calls_in_flight_are_bounded_per_node_and_rpc() {
        let f = InFlight::default();
        let held: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| f.enter("n1", "ReportStatus").unwrap())
            .collect();
        let err = f.enter("n1", "ReportStatus").err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            err.message(),
            "node n1 has 4 ReportStatus calls in flight already; wait for their replies"
        );
        // Other nodes and other RPCs are not affected.
        assert!(f.enter("n2", "ReportStatus").is_ok());
        assert!(f.enter("n1", "AckEndpoints").is_ok());
        drop(held);
        assert!(f.enter("n1", "ReportStatus").is_ok());
        assert!(lock(&f.counts).is_empty());
    }
}
