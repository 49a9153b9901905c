//! When a node renews its certificate. Pure: `now` and the random point are parameters.
//!
//! As Swarm, a node renews at a random point between 50% and 80% of its certificate's
//! lifetime, so that nodes issued together do not all come back to the CA at once.

use std::ops::RangeInclusive;
use std::time::SystemTime;

use crate::certs::Identity;

/// Where in a certificate's lifetime renewal may fall (Swarm's range).
pub const RENEWAL_RANGE: RangeInclusive<f64> = 0.5..=0.8;

/// What a node should do about its certificate now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing until then.
    Wait { until: SystemTime },
    /// Ask for a new certificate now, with the current one (still valid).
    Now,
    /// The certificate has expired: no peer accepts it; the node must join again.
    Expired,
}

/// A random point in [`RENEWAL_RANGE`], chosen once per certificate by the caller.
pub fn random_fraction() -> f64 {
    rand::random_range(RENEWAL_RANGE)
}

/// The decision for a certificate valid from `not_before` to `not_after`: renew once
/// `fraction` of its lifetime has passed (`fraction` is clamped to 0..=1; NaN counts as 0.5).
pub fn decide(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    fraction: f64,
) -> Renewal {
    if now >= not_after {
        return Renewal::Expired;
    }
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return Renewal::Now;
    };
    let fraction = if fraction.is_nan() {
        0.5
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let at = not_before + lifetime.mul_f64(fraction);
    if now >= at {
        Renewal::Now
    } else {
        Renewal::Wait { until: at }
    }
}

impl Identity {
    /// [`decide`] for this certificate.
    pub fn renewal(&self, now: SystemTime, fraction: f64) -> Renewal {
        decide(self.not_before, self.not_after, now, fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn renews_from_the_chosen_point_and_reports_expiry() {
        // Valid 1000..2000: at 0.5 renewal starts at 1500.
        let d = |now| decide(at(1000), at(2000), at(now), 0.5);
        assert_eq!(d(1000), Renewal::Wait { until: at(1500) });
        assert_eq!(d(1499), Renewal::Wait { until: at(1500) });
        assert_eq!(d(1500), Renewal::Now);
        assert_eq!(d(1999), Renewal::Now);
        assert_eq!(d(2000), Renewal::Expired);
        assert_eq!(d(5000), Renewal::Expired);
        // At 0.8: 1800.
        assert_eq!(
            decide(at(1000), at(2000), at(1799), 0.8),
            Renewal::Wait { until: at(1800) }
        );
        assert_eq!(decide(at(1000), at(2000), at(1800), 0.8), Renewal::Now);
    }

    #[test]
    fn out_of_range_fractions_are_clamped() {
        assert_eq!(decide(at(1000), at(2000), at(1000), -1.0), Renewal::Now);
        assert_eq!(
            decide(at(1000), at(2000), at(1000), 7.0),
            Renewal::Wait { until: at(2000) }
        );
        assert_eq!(
            decide(at(1000), at(2000), at(1000), f64::NAN),
            Renewal::Wait { until: at(1500) }
        );
    }

    #[test]
    fn a_one_minute_certificate_renews_within_its_minute() {
        // A minute-long test certificate issued at 10_000 (backdated 6 s).
        let v = crate::Validity::starting(at(10_000), Duration::from_secs(60));
        let Renewal::Wait { until } = decide(v.not_before, v.not_after, at(10_000), 0.5) else {
            panic!("a fresh certificate must not be renewed at once");
        };
        assert_eq!(until, at(10_000 - 6 + 33));
    }

    #[test]
    fn the_random_point_is_in_swarms_range() {
        for _ in 0..1000 {
            assert!(RENEWAL_RANGE.contains(&random_fraction()));
        }
    }
}
