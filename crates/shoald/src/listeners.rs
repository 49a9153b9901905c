//! Where the HTTP API is served (`-H`, as dockerd's) and the files the daemon keeps private.
//!
//! The policy is pure ([`plan`]): a Unix socket (0660, group `shoal` if it exists, else
//! root's), and TCP only with `--tlsverify` unless the address is a loopback one, since the
//! API is full control of the cluster. Binding is thin I/O after it.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shoal_api::tls::TlsFiles;
use thiserror::Error;

/// The socket the CLI looks for when neither `-H` nor `--socket` is given.
pub const DEFAULT_SOCKET: &str = "/run/shoal/shoal.sock";

/// The group that may use the Unix socket besides root, if it exists (as docker's `docker`).
pub const SOCKET_GROUP: &str = "shoal";

/// One `-H` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSpec {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostSpec::Unix(p) => write!(f, "unix://{}", p.display()),
            HostSpec::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl std::str::FromStr for HostSpec {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<HostSpec, ListenError> {
        let bad = || ListenError::InvalidHost(s.to_string());
        if let Some(path) = s.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(HostSpec::Unix(path.into()));
            }
            return Err(bad());
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.strip_suffix('/').unwrap_or(addr);
            return addr.parse().map(HostSpec::Tcp).map_err(|_| bad());
        }
        Err(bad())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ListenError {
    #[error(
        "invalid -H {0:?}: expected unix:///path/to/shoal.sock or tcp://IP:PORT (e.g. tcp://0.0.0.0:2376)"
    )]
    InvalidHost(String),
    #[error(
        "refusing to serve the API on {0} without TLS: whoever reaches that address would control the cluster. Pass --tlsverify --tlscacert ca.pem --tlscert server-cert.pem --tlskey server-key.pem (clients then need a certificate signed by that CA), or listen on a loopback address such as tcp://127.0.0.1:2375"
    )]
    PlainTcpNotLoopback(String),
    #[error(
        "--tlsverify needs {0}: the server's certificate and key, and the CA that signs clients' certificates"
    )]
    MissingTlsFile(&'static str),
    #[error(
        "--tlscacert, --tlscert and --tlskey are used only with --tlsverify (shoald serves TLS only with client certificates); pass --tlsverify too"
    )]
    TlsFilesWithoutVerify,
}

/// The TLS flags as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFlags {
    pub verify: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What to listen on, decided from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub listeners: Vec<HostSpec>,
    /// Set when a TCP listener serves TLS.
    pub tls: Option<TlsFiles>,
    /// What the log should say (plain TCP on loopback, `--tlsverify` with no TCP listener).
    pub warnings: Vec<String>,
}

/// Decides the listeners: `-H` values, else `--socket`'s path (kept for older command
/// lines), else [`DEFAULT_SOCKET`]; `--socket` given with `-H` is served too.
pub fn plan(
    hosts: &[HostSpec],
    socket: Option<&Path>,
    tls: &TlsFlags,
) -> Result<Plan, ListenError> {
    let mut listeners: Vec<HostSpec> = hosts.to_vec();
    if let Some(s) = socket {
        listeners.push(HostSpec::Unix(s.to_path_buf()));
    }
    if listeners.is_empty() {
        listeners.push(HostSpec::Unix(DEFAULT_SOCKET.into()));
    }
    let mut seen = Vec::new();
    listeners.retain(|l| {
        let new = !seen.contains(l);
        seen.push(l.clone());
        new
    });
    let mut warnings = Vec::new();
    let any_tcp = listeners.iter().any(|l| matches!(l, HostSpec::Tcp(_)));
    let files = if tls.verify {
        let need = |f: &Option<PathBuf>, flag| f.clone().ok_or(ListenError::MissingTlsFile(flag));
        let files = TlsFiles {
            ca: need(&tls.ca, "--tlscacert")?,
            cert: need(&tls.cert, "--tlscert")?,
            key: need(&tls.key, "--tlskey")?,
        };
        if !any_tcp {
            warnings.push(
                "--tlsverify is set but no -H tcp://... is: TLS applies to TCP listeners only"
                    .to_string(),
            );
        }
        Some(files)
    } else {
        if tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some() {
            return Err(ListenError::TlsFilesWithoutVerify);
        }
        for l in &listeners {
            if let HostSpec::Tcp(addr) = l {
                if !is_loopback(addr.ip()) {
                    return Err(ListenError::PlainTcpNotLoopback(l.to_string()));
                }
                warnings.push(format!(
                    "serving the API on {l} without TLS: every local user and process that can \
                     connect to it controls the cluster; use --tlsverify for anything but tests"
                ));
            }
        }
        None
    };
    Ok(Plan {
        listeners,
        tls: files,
        warnings,
    })
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Creates the data dir 0700, or tightens it to 0700; returns the mode it had when it was
/// looser (for the log).
pub fn private_data_dir(dir: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode == 0o700 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(Some(mode))
}

/// Makes a freshly bound socket 0660 and hands it to group [`SOCKET_GROUP`] if that group
/// exists; returns the group's name that may use it.
pub fn restrict_socket(path: &Path) -> std::io::Result<&'static str> {
    let group = nix::unistd::Group::from_name(SOCKET_GROUP)
        .map_err(std::io::Error::from)?
        .map(|g| g.gid);
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid)).map_err(std::io::Error::from)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(if group.is_some() {
        SOCKET_GROUP
    } else {
        "root"
    })
}

/// A key file that group or others may read: the daemon serves it anyway (it is the admin's
/// file), and says so.
pub fn loose_key_mode(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(v: &[&str]) -> Vec<HostSpec> {
        v.iter().map(|h| h.parse().unwrap()).collect()
    }

    fn tls() -> TlsFlags {
        TlsFlags {
            verify: true,
            ca: Some("/etc/shoal/ca.pem".into()),
            cert: Some("/etc/shoal/cert.pem".into()),
            key: Some("/etc/shoal/key.pem".into()),
        }
    }

    #[test]
    fn host_specs() {
        assert_eq!(
            "unix:///run/x.sock".parse::<HostSpec>().unwrap(),
            HostSpec::Unix("/run/x.sock".into())
        );
        assert_eq!(
            "tcp://[::1]:2376".parse::<HostSpec>().unwrap().to_string(),
            "tcp://[::1]:2376"
        );
        for bad in [
            "tcp://localhost:2376",
            "tcp://0.0.0.0",
            "unix://x.sock",
            "/run/x.sock",
        ] {
            assert_eq!(
                bad.parse::<HostSpec>().unwrap_err().to_string(),
                format!(
                    "invalid -H {bad:?}: expected unix:///path/to/shoal.sock or tcp://IP:PORT \
                     (e.g. tcp://0.0.0.0:2376)"
                )
            );
        }
    }

    #[test]
    fn the_socket_is_the_default_and_socket_is_an_alias() {
        let p = plan(&[], None, &TlsFlags::default()).unwrap();
        assert_eq!(p.listeners, hosts(&["unix:///run/shoal/shoal.sock"]));
        assert!(p.warnings.is_empty() && p.tls.is_none());
        let p = plan(&[], Some(Path::new("/tmp/a.sock")), &TlsFlags::default()).unwrap();
        assert_eq!(p.listeners, hosts(&["unix:///tmp/a.sock"]));
        // -H alone replaces the default socket, as dockerd's.
        let p = plan(&hosts(&["tcp://0.0.0.0:2376"]), None, &tls()).unwrap();
        assert_eq!(p.listeners, hosts(&["tcp://0.0.0.0:2376"]));
        let p = plan(
            &hosts(&["unix:///tmp/a.sock", "tcp://10.0.0.1:2376"]),
            Some(Path::new("/tmp/a.sock")),
            &tls(),
        )
        .unwrap();
        assert_eq!(
            p.listeners,
            hosts(&["unix:///tmp/a.sock", "tcp://10.0.0.1:2376"])
        );
        assert_eq!(p.tls.unwrap().key, PathBuf::from("/etc/shoal/key.pem"));
    }

    #[test]
    fn plain_tcp_only_on_loopback_with_a_warning() {
        let err = plan(&hosts(&["tcp://0.0.0.0:2375"]), None, &TlsFlags::default()).unwrap_err();
        assert_eq!(
            err,
            ListenError::PlainTcpNotLoopback("tcp://0.0.0.0:2375".into())
        );
        assert!(
            err.to_string().contains("Pass --tlsverify --tlscacert"),
            "{err}"
        );
        for ok in [
            "tcp://127.0.0.1:2375",
            "tcp://127.3.4.5:2375",
            "tcp://[::1]:2375",
            "tcp://[::ffff:127.0.0.1]:1",
        ] {
            let p = plan(&hosts(&[ok]), None, &TlsFlags::default()).unwrap();
            assert_eq!(p.warnings.len(), 1, "{ok}");
            assert!(p.warnings[0].starts_with(&format!("serving the API on {}", p.listeners[0])));
        }
        for refused in [
            "tcp://[::]:2375",
            "tcp://192.168.1.2:2375",
            "tcp://[::ffff:10.0.0.1]:1",
        ] {
            assert!(
                plan(&hosts(&[refused]), None, &TlsFlags::default()).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn tls_flags_go_together() {
        let mut t = tls();
        t.key = None;
        assert_eq!(
            plan(&hosts(&["tcp://0.0.0.0:2376"]), None, &t).unwrap_err(),
            ListenError::MissingTlsFile("--tlskey")
        );
        let t = TlsFlags {
            verify: false,
            ..tls()
        };
        assert_eq!(
            plan(&hosts(&["tcp://127.0.0.1:2376"]), None, &t).unwrap_err(),
            ListenError::TlsFilesWithoutVerify
        );
        let p = plan(&[], None, &tls()).unwrap();
        assert_eq!(
            p.warnings,
            ["--tlsverify is set but no -H tcp://... is: TLS applies to TCP listeners only"]
        );
    }

    #[test]
    fn data_dir_is_created_or_tightened_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/data");
        assert_eq!(private_data_dir(&dir).unwrap(), None);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_data_dir(&dir).unwrap(), Some(0o755));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(private_data_dir(&dir).unwrap(), None);
    }
}
