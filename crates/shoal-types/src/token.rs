//! Join tokens: `SHTKN-1-<cluster id>-<secret>`, like docker's `SWMTKN-1-...`. The secret
//! decides the role: managers keep one secret for workers and one for managers.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub cluster_id: String,
    pub secret: String,
}

const PREFIX: &str = "SHTKN-1-";

impl JoinToken {
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let bad = || {
            format!(
                "invalid join token {s:?}: expected SHTKN-1-<24 hex digits>-<25 characters>; \
                 run `shoal join-token worker` on a manager to print a valid one"
            )
        };
        let rest = s.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let (cluster_id, secret) = rest.split_once('-').ok_or_else(bad)?;
        let hex = cluster_id.len() == crate::ids::ID_LEN && crate::ids::is_hex(cluster_id);
        let secret_ok = secret.len() == 25
            && secret
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !hex || !secret_ok {
            return Err(bad());
        }
        Ok(JoinToken {
            cluster_id: cluster_id.into(),
            secret: secret.into(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.cluster_id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let t = JoinToken {
            cluster_id: crate::new_id(),
            secret: crate::ids::new_secret(),
        };
        assert_eq!(JoinToken::parse(&t.to_string()), Ok(t));
        assert!(JoinToken::parse("SWMTKN-1-abc").is_err());
        assert!(JoinToken::parse("SHTKN-1-zz-zz").is_err());
    }
}
