//! Sealing registry logins for the cluster's state: ChaCha20-Poly1305 (ring's AEAD, already
//! in the tree through rustls) under a key only managers hold, kept in a file readable by
//! root alone in the manager's data dir. The Raft log and snapshots hold only the sealed
//! text; a manager opens it when it hands the login to a node that runs the service's tasks.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::AuthConfig;
use crate::error::ImageError;

/// Marks the format of sealed text, so a later one can be told apart.
const PREFIX: &str = "sealed-v1:";
const KEY_LEN: usize = 32;

/// The managers' sealing key.
pub struct SealKey {
    bytes: [u8; KEY_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

fn sealing(detail: impl Into<String>) -> ImageError {
    ImageError::Sealing(detail.into())
}

impl SealKey {
    pub fn generate() -> Result<SealKey, ImageError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| sealing("the system's random source failed"))?;
        SealKey::from_bytes(&bytes)
    }

    pub fn from_bytes(raw: &[u8]) -> Result<SealKey, ImageError> {
        let bytes: [u8; KEY_LEN] = raw
            .try_into()
            .map_err(|_| sealing(format!("a key is {KEY_LEN} bytes, not {}", raw.len())))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| sealing("the key was refused"))?;
        Ok(SealKey {
            bytes,
            key: LessSafeKey::new(key),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// The key in `path`, or `None` when there is no such file.
    pub fn load(path: &Path) -> Result<Option<SealKey>, ImageError> {
        match fs::read(path) {
            Ok(raw) => SealKey::from_bytes(&raw)
                .map(Some)
                .map_err(|e| sealing(format!("{}: {e}; the file is damaged", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", path, e)),
        }
    }

    /// Writes the key to `path`, readable by its owner (root) alone.
    pub fn save(&self, path: &Path) -> Result<(), ImageError> {
        write_private(path, &path.with_extension("tmp"), &self.bytes)
    }

    /// The key in `path`, made and saved there first if there is none.
    pub fn load_or_create(path: &Path) -> Result<SealKey, ImageError> {
        if let Some(k) = SealKey::load(path)? {
            return Ok(k);
        }
        let k = SealKey::generate()?;
        k.save(path)?;
        Ok(k)
    }

    /// `sealed-v1:` and base64 of a random nonce and the ciphertext with its tag.
    pub fn seal(&self, plain: &[u8]) -> Result<String, ImageError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| sealing("the system's random source failed"))?;
        let mut buf = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| sealing("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Opens what `seal` made with this key; another key or changed text is an error.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, ImageError> {
        let body = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| sealing("not sealed text"))?;
        let raw = STANDARD
            .decode(body)
            .map_err(|_| sealing("sealed text is not base64"))?;
        if raw.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return Err(sealing("sealed text is too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| sealing("bad nonce"))?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| {
                sealing("it was sealed with another key or changed (re-run the update with --with-registry-auth)")
            })?;
        Ok(plain.to_vec())
    }

    pub fn seal_auth(&self, auth: &AuthConfig) -> Result<String, ImageError> {
        let json = serde_json::to_vec(auth).map_err(|e| sealing(e.to_string()))?;
        self.seal(&json)
    }

    pub fn open_auth(&self, sealed: &str) -> Result<AuthConfig, ImageError> {
        serde_json::from_slice(&self.open(sealed)?)
            .map_err(|e| sealing(format!("sealed login does not parse: {e}")))
    }
}

/// Writes `bytes` to `path` readable by its owner alone: to `tmp` (mode 0600), synced, then
/// renamed into place, so a reader never sees half a file.
pub(crate) fn write_private(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| ImageError::io("create", tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| ImageError::io("write", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| ImageError::io("rename", tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> AuthConfig {
        AuthConfig {
            username: "alice".into(),
            password: "s3cret-password".into(),
            server_address: "127.0.0.1:5000".into(),
        }
    }

    #[test]
    fn sealed_text_hides_the_login_and_opens_with_the_key() {
        let k = SealKey::generate().unwrap();
        let sealed = k.seal_auth(&alice()).unwrap();
        assert!(sealed.starts_with("sealed-v1:"));
        for secret in ["alice", "s3cret", "czNjcmV0"] {
            assert!(!sealed.contains(secret), "{sealed}");
        }
        assert_eq!(k.open_auth(&sealed).unwrap(), alice());
        // A fresh nonce each time: the same login seals differently.
        assert_ne!(k.seal_auth(&alice()).unwrap(), sealed);
    }

    #[test]
    fn another_key_or_a_changed_byte_is_refused() {
        let (k, other) = (SealKey::generate().unwrap(), SealKey::generate().unwrap());
        let sealed = k.seal_auth(&alice()).unwrap();
        assert!(
            other
                .open(&sealed)
                .unwrap_err()
                .to_string()
                .contains("sealed with another key")
        );
        let mut raw = STANDARD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let changed = format!("{PREFIX}{}", STANDARD.encode(raw));
        assert!(k.open(&changed).is_err());
        assert!(k.open("plain").is_err());
        assert!(SealKey::from_bytes(&[0; 5]).is_err());
    }

    #[test]
    fn the_key_file_is_root_only_and_reloads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry-auth.key");
        assert!(SealKey::load(&path).unwrap().is_none());
        let k = SealKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SealKey::load_or_create(&path).unwrap();
        assert_eq!(again.to_bytes(), k.to_bytes());
        assert_eq!(
            again.open_auth(&k.seal_auth(&alice()).unwrap()).unwrap(),
            alice()
        );
    }
}
