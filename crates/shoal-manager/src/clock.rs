//! The time, as the manager's logic is given it: read once by the caller through a `Clock`
//! and passed in as a `Now`, so the logic itself never reads a clock and tests move time
//! by hand (`FakeClock`).

use std::sync::atomic::{AtomicU64, Ordering};

use shoal_types::Millis;

/// One reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds from an origin of the clock's choosing, never going back: what
    /// durations (heartbeat silence, propagation latency) are measured on.
    pub mono_ms: u64,
    /// The wall clock, as the state records times (a task's `updated_at`, a restart delay).
    pub wall: Millis,
}

/// Where the manager reads the time. shoald's real one reads the OS clocks; tests use
/// [`FakeClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    mono_ms: AtomicU64,
    wall_ms: AtomicU64,
}

impl FakeClock {
    /// A clock at `wall` on the wall clock and 0 on the monotonic one.
    pub fn at(wall: Millis) -> FakeClock {
        FakeClock {
            mono_ms: AtomicU64::new(0),
            wall_ms: AtomicU64::new(wall.0),
        }
    }

    /// Moves both clocks forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.mono_ms.fetch_add(ms, Ordering::Relaxed);
        self.wall_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Now {
        Now {
            mono_ms: self.mono_ms.load(Ordering::Relaxed),
            wall: Millis(self.wall_ms.load(Ordering::Relaxed)),
        }
    }
}
