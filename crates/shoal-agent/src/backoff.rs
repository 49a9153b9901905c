//! How long an agent waits before it tries a manager again. When a leader dies every agent
//! loses its session at the same moment; were they all to come back at once, and again
//! at each failure, the new leader would take the whole cluster's session starts (a full
//! task list and endpoint table each) in one burst. Each wait is drawn at random from a
//! window that doubles with every failure in a row, so the agents spread out.
//!
//! Pure: the randomness is passed in, so the spread is unit-tested.

use std::time::Duration;

/// The window of the first try after a session ends.
pub const FIRST: Duration = Duration::from_millis(250);

/// The window never grows past this: a manager that comes back is found within it.
pub const CAP: Duration = Duration::from_secs(5);

/// The wait before the next try after `failures` tries in a row that opened no session
/// (0: the session just ended), given `random` drawn uniformly from [0, 1).
///
/// The window is `FIRST * 2^failures`, at most `CAP`; the wait is in its upper half
/// ("equal jitter"): never less than half the window, so a failing manager is not hammered,
/// and spread over the other half.
pub fn delay(failures: u32, random: f64) -> Duration {
    let window = FIRST.saturating_mul(1u32 << failures.min(16)).min(CAP);
    let random = if random.is_finite() {
        random.clamp(0.0, 1.0)
    } else {
        0.0
    };
    window / 2 + window.mul_f64(random) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn the_window_doubles_with_each_failure_up_to_the_cap() {
        let lows: Vec<u128> = (0..8).map(|f| ms(delay(f, 0.0))).collect();
        assert_eq!(lows, [125, 250, 500, 1000, 2000, 2500, 2500, 2500]);
        let highs: Vec<u128> = (0..8).map(|f| ms(delay(f, 0.999_999))).collect();
        assert_eq!(highs, [249, 499, 999, 1999, 3999, 4999, 4999, 4999]);
    }

    #[test]
    fn agents_that_lost_the_same_leader_spread_over_the_window() {
        // 100 agents with evenly spread draws: their first tries land in 125..250 ms,
        // no more than a handful in the same millisecond.
        let mut at: Vec<u128> = (0..100).map(|i| ms(delay(0, i as f64 / 100.0))).collect();
        at.sort();
        assert_eq!((at[0], at[99]), (125, 248));
        let mut per_ms = std::collections::BTreeMap::new();
        for t in &at {
            *per_ms.entry(*t).or_insert(0) += 1;
        }
        assert!(per_ms.values().all(|&n| n <= 2), "{per_ms:?}");
    }

    #[test]
    fn many_failures_and_odd_draws_stay_within_the_cap() {
        assert_eq!(delay(u32::MAX, 0.5), Duration::from_millis(3750));
        assert_eq!(delay(3, f64::NAN), Duration::from_millis(1000));
        assert_eq!(delay(3, -1.0), Duration::from_millis(1000));
        assert_eq!(delay(3, 7.0), Duration::from_millis(2000));
    }
}
