//! The OS clocks, read for shoal-manager's logic (which never reads one itself).

use std::sync::Arc;
use std::time::Instant;

use shoal_manager::clock::{Clock, Now};

/// The monotonic clock from this daemon's start, and the wall clock.
pub struct SystemClock {
    started: Instant,
}

impl SystemClock {
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock {
            started: Instant::now(),
        })
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall: shoal_agent::worker::now(),
        }
    }
}
