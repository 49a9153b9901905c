//! Join tokens in Swarm's shape: `SWMTKN-1-<CA digest>-<secret>`.
//!
//! As Swarm: the digest is the root CA certificate's SHA-256 written in base36 (0-9a-z) and
//! left-padded with zeros to 50 characters; the secret is 16 random bytes in base36, padded
//! to 25. Where shoal differs: the digest is of the certificate's DER (Swarm digests its PEM
//! text), so re-encoding the PEM does not change it.
//!
//! The digest lets a joining node pin the CA before it trusts a manager
//! ([`JoinToken::check_ca`]); the secret, compared in constant time, decides the role.

use std::fmt;

use num_bigint::BigUint;
use subtle::ConstantTimeEq;

use crate::certs::Role;
use crate::error::{PkiError, Result};

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

/// The SHA-256 of a root CA certificate's DER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest([u8; 32]);

impl CaDigest {
    pub fn of(cert_der: &[u8]) -> CaDigest {
        let d = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        CaDigest(out)
    }

    /// The token's 50-character base36 form.
    pub fn base36(&self) -> String {
        base36(&self.0, DIGEST_LEN)
    }
}

impl fmt::Display for CaDigest {
    /// `sha256:<hex>`, as `shoal ca` and errors print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", crate::certs::hex(&self.0))
    }
}

/// A join token. Its `Debug` hides the secret, so logging one does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    digest: CaDigest,
    /// 25 base36 characters.
    secret: String,
}

impl JoinToken {
    /// A token for the CA whose certificate has `ca_digest`, with a secret made from
    /// `secret_bytes` (give it 16 random bytes: [`JoinToken::random`] does).
    pub fn new(ca_digest: CaDigest, secret_bytes: [u8; 16]) -> JoinToken {
        JoinToken {
            digest: ca_digest,
            secret: base36(&secret_bytes, SECRET_LEN),
        }
    }

    pub fn random(ca_digest: CaDigest) -> JoinToken {
        JoinToken::new(ca_digest, rand::random())
    }

    pub fn ca_digest(&self) -> CaDigest {
        self.digest
    }

    /// Reads a token; each malformed part gets its own message.
    pub fn parse(s: &str) -> Result<JoinToken> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('-').collect();
        if parts[0] != PREFIX {
            return Err(PkiError::token(format!(
                "it starts with {:?}, not {PREFIX:?}",
                parts[0]
            )));
        }
        if parts.len() != 4 {
            return Err(PkiError::token(format!(
                "it has {} parts separated by '-', not 4",
                parts.len()
            )));
        }
        if parts[1] != VERSION {
            return Err(PkiError::token(format!(
                "version {:?} is not supported, only {VERSION:?}",
                parts[1]
            )));
        }
        let digest = check_base36("CA digest", parts[2], DIGEST_LEN)?;
        check_base36("secret", parts[3], SECRET_LEN)?;
        let bytes = digest.to_bytes_be();
        if bytes.len() > 32 {
            return Err(PkiError::token(
                "the CA digest is larger than a SHA-256 digest can be",
            ));
        }
        let mut out = [0; 32];
        out[32 - bytes.len()..].copy_from_slice(&bytes);
        Ok(JoinToken {
            digest: CaDigest(out),
            secret: parts[3].to_string(),
        })
    }

    /// Whether `presented` carries this token's secret (and CA digest). The secrets are
    /// compared in constant time so that timing does not reveal how much of one matched.
    pub fn matches(&self, presented: &JoinToken) -> bool {
        let same_secret: bool = self
            .secret
            .as_bytes()
            .ct_eq(presented.secret.as_bytes())
            .into();
        same_secret && self.digest == presented.digest
    }

    /// What a joining node does before it trusts a manager: the CA certificate the manager
    /// presented must have the digest this token pins.
    pub fn check_ca(&self, ca_cert_der: &[u8]) -> Result<()> {
        let found = CaDigest::of(ca_cert_der);
        if found == self.digest {
            Ok(())
        } else {
            Err(PkiError::CaDigestMismatch {
                expected: self.digest.to_string(),
                found: found.to_string(),
            })
        }
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            self.digest.base36(),
            self.secret
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<JoinToken> {
        JoinToken::parse(s)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("digest", &self.digest.to_string())
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A cluster's two current tokens: the presented one's secret says which role it joins as.
#[derive(Debug, Clone)]
pub struct JoinTokens {
    pub worker: JoinToken,
    pub manager: JoinToken,
}

impl JoinTokens {
    /// The role `presented` joins as, or why it is refused. Both secrets are always
    /// compared, so timing does not tell which one was closer.
    pub fn role_for(&self, presented: &JoinToken) -> Result<Role> {
        if presented.digest != self.worker.digest {
            return Err(PkiError::CaDigestMismatch {
                expected: self.worker.digest.to_string(),
                found: presented.digest.to_string(),
            });
        }
        let worker = self.worker.matches(presented);
        let manager = self.manager.matches(presented);
        match (worker, manager) {
            (_, true) => Ok(Role::Manager),
            (true, false) => Ok(Role::Worker),
            (false, false) => Err(PkiError::TokenSecretRefused),
        }
    }
}

fn base36(bytes: &[u8], width: usize) -> String {
    let digits = BigUint::from_bytes_be(bytes).to_str_radix(36);
    format!("{digits:0>width$}")
}

fn check_base36(part: &str, s: &str, len: usize) -> Result<BigUint> {
    if s.len() != len {
        return Err(PkiError::token(format!(
            "the {part} is {} characters long, not {len}",
            s.len()
        )));
    }
    if let Some((i, c)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || c.is_ascii_lowercase()))
    {
        return Err(PkiError::token(format!(
            "the {part} has {c:?} at position {}; only 0-9 and a-z are allowed",
            i + 1
        )));
    }
    BigUint::parse_bytes(s.as_bytes(), 36)
        .ok_or_else(|| PkiError::token(format!("the {part} is not a base36 number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> CaDigest {
        CaDigest::of(b"a CA certificate")
    }

    #[test]
    fn renders_swarms_shape_and_round_trips() {
        let t = JoinToken::new(digest(), [7; 16]);
        let s = t.to_string();
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts[..2], ["SWMTKN", "1"]);
        assert_eq!((parts[2].len(), parts[3].len()), (50, 25));
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), t);
        // Small values are zero-padded to full width and still round trip.
        let small = JoinToken::new(CaDigest([0; 32]), [0; 16]);
        assert_eq!(
            small.to_string(),
            format!("SWMTKN-1-{}-{}", "0".repeat(50), "0".repeat(25))
        );
        assert_eq!(JoinToken::parse(&small.to_string()).unwrap(), small);
        let max = JoinToken::new(CaDigest([0xff; 32]), [0xff; 16]);
        assert_eq!(JoinToken::parse(&max.to_string()).unwrap(), max);
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = JoinToken::new(digest(), [7; 16]);
        let secret = t.to_string().rsplit('-').next().unwrap().to_string();
        assert!(!format!("{t:?}").contains(&secret));
    }

    #[test]
    fn each_malformed_part_is_named() {
        let good = JoinToken::new(digest(), [7; 16]).to_string();
        let parts: Vec<&str> = good.split('-').collect();
        let (d, s) = (parts[2], parts[3]);
        let cases = [
            (format!("SHTKN-1-{d}-{s}"), "starts with \"SHTKN\""),
            (String::new(), "starts with \"\""),
            (format!("SWMTKN-1-{d}"), "3 parts"),
            (format!("SWMTKN-1-{d}-{s}-x"), "5 parts"),
            (
                format!("SWMTKN-2-{d}-{s}"),
                "version \"2\" is not supported",
            ),
            (
                format!("SWMTKN-1-{}-{s}", &d[1..]),
                "CA digest is 49 characters",
            ),
            (format!("SWMTKN-1-{d}-{s}a"), "secret is 26 characters"),
            (
                format!("SWMTKN-1-{}-{s}", d.to_uppercase()),
                "only 0-9 and a-z",
            ),
            (
                format!("SWMTKN-1-{d}-{}_", &s[1..]),
                "secret has '_' at position 25",
            ),
            (
                format!("SWMTKN-1-{}-{s}", "z".repeat(50)),
                "larger than a SHA-256 digest",
            ),
        ];
        for (token, want) in cases {
            let err = JoinToken::parse(&token).unwrap_err().to_string();
            assert!(err.contains(want), "{token:?}: {err}");
            assert!(err.contains("shoal join-token worker"), "{err}");
        }
    }

    #[test]
    fn the_ca_is_checked_against_the_digest() {
        let ca = b"the cluster's CA certificate";
        let t = JoinToken::random(CaDigest::of(ca));
        t.check_ca(ca).unwrap();
        let err = t.check_ca(b"an impostor's CA").unwrap_err();
        assert!(matches!(err, PkiError::CaDigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&CaDigest::of(ca).to_string()));
    }

    #[test]
    fn the_secret_decides_the_role() {
        let tokens = JoinTokens {
            worker: JoinToken::new(digest(), [1; 16]),
            manager: JoinToken::new(digest(), [2; 16]),
        };
        let parse = |t: &JoinToken| JoinToken::parse(&t.to_string()).unwrap();
        assert_eq!(
            tokens.role_for(&parse(&tokens.worker)).unwrap(),
            Role::Worker
        );
        assert_eq!(
            tokens.role_for(&parse(&tokens.manager)).unwrap(),
            Role::Manager
        );
        let rotated = JoinToken::new(digest(), [3; 16]);
        assert!(matches!(
            tokens.role_for(&rotated),
            Err(PkiError::TokenSecretRefused)
        ));
        let other_ca = JoinToken::new(CaDigest::of(b"other"), [1; 16]);
        assert!(matches!(
            tokens.role_for(&other_ca),
            Err(PkiError::CaDigestMismatch { .. })
        ));
    }

    #[test]
    fn secrets_are_compared_in_constant_time() {
        // `matches` goes through subtle's ConstantTimeEq; this pins that a secret differing
        // only in its last character, or only in length, is refused.
        let t = JoinToken::new(digest(), [9; 16]);
        let mut near = t.clone();
        let last = near.secret.pop().unwrap();
        near.secret.push(if last == '0' { '1' } else { '0' });
        assert!(!t.matches(&near));
        let mut short = t.clone();
        short.secret.pop();
        assert!(!t.matches(&short));
        assert!(t.matches(&t.clone()));
    }
}
