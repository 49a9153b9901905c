//! The crate's errors, worded as docker words them where users already know the text.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

/// Everything that can go wrong with images on a node. `Clone` because a pull's outcome is
/// shared by every caller waiting for the same pull (io errors are kept behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    #[error("No such image: {0}")]
    NoSuchImage(String),

    #[error("manifest for {reference} not found: manifest unknown: manifest unknown")]
    ManifestUnknown { reference: String },

    #[error(
        "pull access denied for {repository}, repository does not exist or may require 'docker login'"
    )]
    PullAccessDenied { repository: String },

    /// The registry refused the credentials given (docker's words).
    #[error(
        "unauthorized: authentication required (registry {registry} refused the login of {username}; check it with `shoal login {registry}`)"
    )]
    Unauthorized { registry: String, username: String },

    #[error("cannot reach registry {registry}: {reason} (is it running and is the address right?)")]
    Unreachable { registry: String, reason: String },

    #[error(
        "no matching manifest for {wanted} in the manifest list entries of {reference} (it has: {available})"
    )]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("unsupported {what} in {reference}: {detail}")]
    Unsupported {
        reference: String,
        what: &'static str,
        detail: String,
    },

    #[error("registry {registry} answered {reference}: {detail}")]
    Registry {
        registry: String,
        reference: String,
        detail: String,
    },

    #[error("layer {layer}: entry {entry:?} {reason}; the layer is refused")]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: String,
    },

    #[error("{action} {path}: no space left on device")]
    NoSpace { action: String, path: PathBuf },

    #[error("{action} {path}: {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    #[error("image {image} is in use by {users}; remove those first")]
    InUse { image: String, users: String },

    #[error("{0}")]
    InvalidTaskId(String),

    #[error("{0}")]
    BadAuth(String),

    #[error("registry credentials cannot be sealed or opened: {0}")]
    Sealing(String),

    #[error("corrupt image store record {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

impl ImageError {
    /// An io error while `action` on `path`; ENOSPC becomes docker's "no space left on device".
    pub fn io(action: impl Into<String>, path: impl Into<PathBuf>, err: io::Error) -> ImageError {
        if no_space(&err) {
            ImageError::NoSpace {
                action: action.into(),
                path: path.into(),
            }
        } else {
            ImageError::Io {
                action: action.into(),
                path: path.into(),
                source: Arc::new(err),
            }
        }
    }
}

/// ENOSPC, also when wrapped (tar-rs wraps io errors in its own, keeping only the kind).
fn no_space(err: &io::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(nix::libc::ENOSPC)
                || io.kind() == io::ErrorKind::StorageFull
            {
                return true;
            }
            cur = io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static));
            if cur.is_some() {
                continue;
            }
        }
        cur = e.source();
    }
    false
}

/// Maps the registry client's error for `reference` (whole, e.g. `127.0.0.1:5000/a/b:1`) in
/// repository `repository` on `registry` to the error users know from docker. `username`:
/// the login the request carried, if any (a refusal then reads "unauthorized").
pub(crate) fn from_registry(
    err: OciDistributionError,
    registry: &str,
    repository: &str,
    reference: &str,
    username: Option<&str>,
) -> ImageError {
    let denied = || match username {
        Some(u) => ImageError::Unauthorized {
            registry: registry.to_string(),
            username: u.to_string(),
        },
        None => ImageError::PullAccessDenied {
            repository: repository.to_string(),
        },
    };
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.contains(&&OciErrorCode::ManifestUnknown) {
                ImageError::ManifestUnknown {
                    reference: reference.to_string(),
                }
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::NameUnknown | OciErrorCode::Unauthorized | OciErrorCode::Denied
                )
            }) {
                denied()
            } else {
                ImageError::Registry {
                    registry: registry.to_string(),
                    reference: reference.to_string(),
                    detail: envelope.to_string(),
                }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => denied(),
        OciDistributionError::ServerError { code: 404, .. } => ImageError::ManifestUnknown {
            reference: reference.to_string(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => denied(),
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch {
                what: reference.to_string(),
                expected,
                actual,
            }
        }
        OciDistributionError::IoError(e) => ImageError::io("write a blob of", reference, e),
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            ImageError::Unreachable {
                registry: registry.to_string(),
                reason: root_cause(&e),
            }
        }
        other => ImageError::Registry {
            registry: registry.to_string(),
            reference: reference.to_string(),
            detail: other.to_string(),
        },
    }
}

/// The innermost error's text ("Connection refused (os error 111)"), which says more than
/// reqwest's "error sending request".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_reads_as_docker_says_it_also_when_wrapped() {
        let raw = io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let e = ImageError::io("write", "/s/blobs/tmp/1", raw);
        assert_eq!(
            e.to_string(),
            "write /s/blobs/tmp/1: no space left on device"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("failed to unpack")]
        struct Wrapper(#[source] io::Error);
        let wrapped = io::Error::other(Wrapper(io::Error::from_raw_os_error(nix::libc::ENOSPC)));
        assert!(matches!(
            ImageError::io("unpack", "/x", wrapped),
            ImageError::NoSpace { .. }
        ));
        let other = ImageError::io("unpack", "/x", io::Error::other("boom"));
        assert_eq!(other.to_string(), "unpack /x: boom");
    }
}
