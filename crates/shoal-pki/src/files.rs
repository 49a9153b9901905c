//! Thin I/O: the PKI's files in one directory (the wiring decides where, e.g.
//! `<data-dir>/certificates`). The directory is 0700 and every file 0600, written whole
//! (a temporary file renamed over the old one) so that a crash leaves the old or the new
//! file, never half of one. A key file readable by others is refused when read.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ca::{ClusterCa, RootCa};
use crate::error::{PkiError, Result};
use crate::node::NodeCredentials;
use crate::trust::{NextRoot, Trust};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub const ROOT_CA_CERT: &str = "root-ca.crt";
pub const ROOT_CA_KEY: &str = "root-ca.key";
/// The node's certificate and its key in one file: a renewal replaces both at once, so a
/// crash (or a reader) never sees a new key with the old certificate.
pub const NODE: &str = "node.pem";
/// During a root rotation: the new root's certificate, then it cross-signed by the current
/// root, so that a node restarted mid-rotation still trusts both roots.
pub const NEXT_ROOT: &str = "root-ca-next.crt";

/// Creates `dir` (and missing parents) 0700, and tightens it to 0700 if it exists.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PkiError::io("cannot create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| PkiError::io("cannot set mode 0700 on", dir, e))
}

/// Writes `bytes` to `path` as a 0600 file, replacing it whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PkiError::io("cannot remove stale", &tmp, e));
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PkiError::io("cannot create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| PkiError::io("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| PkiError::io("cannot move into place", path, e))
}

/// Reads a key file, refusing one that group or others may read.
pub fn read_private(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| PkiError::io("cannot read", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::LooseKeyFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    read(path)
}

/// Reads a file (a certificate, or a PEM given to `init` for import).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| PkiError::io("cannot read", path, e))
}

/// A manager's root CA: certificate and key.
pub fn save_root_ca(dir: &Path, ca: &RootCa) -> Result<()> {
    ensure_private_dir(dir)?;
    write_private(&dir.join(ROOT_CA_KEY), ca.key_pem().as_bytes())?;
    save_cluster_ca(dir, ca.cert())
}

pub fn load_root_ca(dir: &Path, now: SystemTime) -> Result<RootCa> {
    let (cert, key) = (dir.join(ROOT_CA_CERT), dir.join(ROOT_CA_KEY));
    RootCa::import(
        &read(&cert)?,
        &name(&cert),
        &read_private(&key)?,
        &name(&key),
        now,
    )
}

/// The CA certificate alone (what a worker keeps).
pub fn save_cluster_ca(dir: &Path, ca: &ClusterCa) -> Result<()> {
    ensure_private_dir(dir)?;
    write_private(&dir.join(ROOT_CA_CERT), ca.pem().as_bytes())
}

pub fn load_cluster_ca(dir: &Path, now: SystemTime) -> Result<ClusterCa> {
    let cert = dir.join(ROOT_CA_CERT);
    ClusterCa::from_pem(&read(&cert)?, &name(&cert), now)
}

/// The root a rotation moves to ([`NEXT_ROOT`]).
pub fn save_next_root(dir: &Path, next: &NextRoot) -> Result<()> {
    ensure_private_dir(dir)?;
    let both = format!(
        "{}{}",
        next.ca.pem(),
        crate::certs::cert_to_pem(&next.cross_signed)
    );
    write_private(&dir.join(NEXT_ROOT), both.as_bytes())
}

/// The trust saved in `dir`: the root, and the next one if a rotation was in progress.
pub fn load_trust(dir: &Path, now: SystemTime) -> Result<Trust> {
    let root = load_cluster_ca(dir, now)?;
    let path = dir.join(NEXT_ROOT);
    if !path.exists() {
        return Ok(Trust::from(root));
    }
    let pem = read(&path)?;
    let mut certs = CertificateDer::pem_slice_iter(&pem);
    let mut next = || -> Result<CertificateDer<'static>> {
        certs
            .next()
            .ok_or_else(|| PkiError::Pem {
                file: name(&path),
                expected: "CERTIFICATE",
                reason: "it holds fewer than two certificates".into(),
            })?
            .map_err(|e| PkiError::Pem {
                file: name(&path),
                expected: "CERTIFICATE",
                reason: e.to_string(),
            })
    };
    let (ca, cross) = (next()?, next()?);
    let ca = ClusterCa::from_der(ca, &name(&path), now)?;
    Trust::rotating(root, ca, cross)
}

/// The trust `trust` holds, saved: the root, and the next root while a rotation runs (the
/// file is removed when none does).
pub fn save_trust(dir: &Path, trust: &Trust) -> Result<()> {
    save_cluster_ca(dir, trust.root())?;
    match trust.next() {
        Some(next) => save_next_root(dir, next),
        None => match fs::remove_file(dir.join(NEXT_ROOT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(PkiError::io("cannot remove", &dir.join(NEXT_ROOT), e))
            }
            _ => Ok(()),
        },
    }
}

/// The node's certificate and key, in [`NODE`].
pub fn save_node(dir: &Path, creds: &NodeCredentials) -> Result<()> {
    ensure_private_dir(dir)?;
    let both = format!("{}{}", creds.cert_pem(), creds.key_pem());
    write_private(&dir.join(NODE), both.as_bytes())
}

pub fn load_node(dir: &Path) -> Result<NodeCredentials> {
    let path = dir.join(NODE);
    let pem = read_private(&path)?;
    NodeCredentials::from_pem(&pem, &name(&path), &pem, &name(&path))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn name(path: &Path) -> String {
    path.display().to_string()
}
