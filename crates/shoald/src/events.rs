//! The manager's event feed (`shoal events`, docker's `/events`): every applied state is
//! compared with the one before (`shoal_manager::events::between`, pure), and a change of
//! Raft leader becomes `node update` events; the last events are kept in a ring for
//! `--since` and sent to every subscriber.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::EventFeed;
use shoal_manager::events::{Ring, between, leader_changed};
use shoal_types::Event;
use tokio::sync::broadcast;

use crate::manager::Manager;

/// How many events a slow subscriber may be behind before its stream is ended.
const SUBSCRIBER_BACKLOG: usize = 4096;
/// How often the leader is looked at when no state changes (an election commits nothing
/// until the new leader's first entry).
const LEADER_POLL: Duration = Duration::from_millis(250);

pub struct Feed {
    /// The ring and the sender under one lock: a subscriber gets the kept events and the
    /// live ones after them, none lost or repeated in between.
    inner: Mutex<(Ring, broadcast::Sender<Event>)>,
}

impl Default for Feed {
    fn default() -> Feed {
        Feed {
            inner: Mutex::new((Ring::default(), broadcast::channel(SUBSCRIBER_BACKLOG).0)),
        }
    }
}

impl Feed {
    pub fn subscribe(&self) -> EventFeed {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        EventFeed {
            past: inner.0.range(shoal_types::Millis(0), None),
            live: inner.1.subscribe(),
        }
    }

    fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let e = inner.0.push(e);
            // No subscriber is no error: the ring keeps it for a later `--since`.
            let _ = inner.1.send(e);
        }
    }
}

/// Follows the applied state and the leader for as long as this node is a manager.
pub async fn run(m: Arc<Manager>) {
    let mut state_rx = m.watch_state();
    let mut prev = state_rx.borrow_and_update().clone();
    let mut leader = m.leader().map(|(id, _)| id);
    loop {
        tokio::select! {
            r = state_rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(LEADER_POLL) => {}
        }
        let state = state_rx.borrow_and_update().clone();
        let now = m.now().wall;
        // An empty state is the one before the log is read back: what the log holds was
        // not created now.
        let mut events = if Arc::ptr_eq(&prev, &state) || prev.version == 0 {
            Vec::new()
        } else {
            between(&prev, &state, now)
        };
        let now_leader = m.leader().map(|(id, _)| id);
        events.extend(leader_changed(&state, leader, now_leader, now));
        leader = now_leader;
        prev = state;
        m.events.publish(events);
    }
}
