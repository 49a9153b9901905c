//! Wall-clock instants as milliseconds since the Unix epoch. Proposers read the clock;
//! state only stores what they chose.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// "2 minutes", "About an hour", like docker's `units.HumanDuration`.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

/// The longest duration a flag takes: a year. Anything longer is a typo, and the bound keeps
/// `Millis` arithmetic far from overflow.
pub const MAX_DURATION_MS: u64 = 365 * 24 * 3_600_000;

/// Parses docker-style durations with `humantime`: "10s", "1m30s", "500ms", "2h", "1d", or a
/// bare number of seconds. Values above [`MAX_DURATION_MS`] are refused.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration: expected e.g. 10s, 1m30s, 500ms".into());
    }
    let too_long = || format!("invalid duration {s:?}: longer than a year; use at most 365d");
    // A bare number is seconds, as docker takes it for its older flags.
    let text = if s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{s}s")
    } else {
        s.to_string()
    };
    let d = humantime::parse_duration(&text).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => too_long(),
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")
        }
        _ => format!("invalid duration {s:?}: expected e.g. 10s, 1m30s, 500ms"),
    })?;
    u64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_DURATION_MS)
        .ok_or_else(too_long)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_docker() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("3"), Ok(3000));
        assert!(parse_duration_ms("10x").is_err());
        assert!(parse_duration_ms("10").is_ok());
        assert!(parse_duration_ms("s").is_err());
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(
            parse_duration_ms("10x").unwrap_err(),
            "invalid duration \"10x\": unknown unit \"x\" (use ms, s, m, h or d)"
        );
        assert!(parse_duration_ms("-5s").is_err());
    }

    #[test]
    fn out_of_range_durations_are_refused() {
        let msg = |s: &str| format!("invalid duration {s:?}: longer than a year; use at most 365d");
        // Seconds that overflowed u64 milliseconds (a panic in debug builds, a wrap in release).
        let huge = "18446744073709551615";
        assert_eq!(parse_duration_ms(huge), Err(msg(huge)));
        assert_eq!(
            parse_duration_ms("99999999999999999999h"),
            Err(msg("99999999999999999999h"))
        );
        assert_eq!(parse_duration_ms("366d"), Err(msg("366d")));
        assert_eq!(parse_duration_ms("365d"), Ok(MAX_DURATION_MS));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(500), "Less than a second");
        assert_eq!(human_duration(150_000), "2 minutes");
        assert_eq!(human_duration(90_000), "About a minute");
    }
}
