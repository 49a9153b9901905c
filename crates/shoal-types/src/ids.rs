//! Object ids: 24 random lowercase hex characters (96 bits). The first 12 are the short id
//! that the CLI prints and that a task uses as its hostname, like a container's short id.

use rand::Rng;

pub const ID_LEN: usize = 24;
pub const SHORT_LEN: usize = 12;

/// A fresh random id. Called by proposers only; `apply` never makes ids.
pub fn new_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LEN)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// The first 12 characters of an id.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(SHORT_LEN)]
}

/// Whether `s` looks like an id or an id prefix (used to resolve `inspect` arguments).
pub fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// A manager's Raft id, derived from its node id (the first 15 hex digits, so it fits in
/// 60 bits and is never 0 for a real id).
pub fn raft_id_of(node_id: &str) -> u64 {
    u64::from_str_radix(&node_id[..node_id.len().min(15)], 16)
        .unwrap_or(0)
        .max(1)
}

/// A random secret for join tokens: 25 characters of [a-z0-9].
pub fn new_secret() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), ID_LEN);
        assert!(is_hex(&a));
        assert_ne!(a, b);
        assert_eq!(short_id(&a).len(), SHORT_LEN);
    }
}
