//! API versions: what `/_ping` and `/version` announce, and the version a request's path
//! names (`/v1.41/services`), as dockerd checks it.

use crate::DockerError;

/// The newest Engine API version served: clients newer than it negotiate down to it
/// through `/_ping`'s `API-Version` header.
pub const MAX: &str = "1.47";
/// The oldest: the swarm endpoints and `ServiceStatus` (1.41, Debian 12's docker 20.10)
/// are all there by then; older clients are refused by name.
pub const MIN: &str = "1.24";

/// `(major, minor)` of `"1.41"`.
fn parse(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The version a path segment such as `v1.41` names, checked against [`MIN`] and [`MAX`];
/// `None` when the segment is no version (`services`), as an unversioned path is served
/// at [`MAX`].
pub fn from_segment(segment: &str) -> Result<Option<(u32, u32)>, DockerError> {
    let Some(v) = segment.strip_prefix('v') else {
        return Ok(None);
    };
    let Some(parsed) = parse(v) else {
        return Ok(None);
    };
    let min = parse(MIN).expect("MIN is a version");
    let max = parse(MAX).expect("MAX is a version");
    if parsed < min {
        return Err(DockerError::TooOld(v.to_string()));
    }
    if parsed > max {
        return Err(DockerError::TooNew(v.to_string()));
    }
    Ok(Some(parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_in_range_are_served_and_others_refused_by_name() {
        assert_eq!(from_segment("v1.41"), Ok(Some((1, 41))));
        assert_eq!(from_segment("v1.47"), Ok(Some((1, 47))));
        assert_eq!(from_segment("services"), Ok(None));
        assert_eq!(
            from_segment("v1.12").unwrap_err().to_string(),
            "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version"
        );
        assert_eq!(
            from_segment("v1.51").unwrap_err().to_string(),
            "client version 1.51 is too new. Maximum supported API version is 1.47"
        );
    }
}
