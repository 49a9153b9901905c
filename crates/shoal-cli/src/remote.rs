//! Which daemon the CLI talks to and how, as the docker CLI: `-H`/`SHOAL_HOST`, and for
//! `tcp://` hosts `--tlsverify`/`SHOAL_TLS_VERIFY` with `--tlscacert`, `--tlscert` and
//! `--tlskey`, which default to `ca.pem`, `cert.pem` and `key.pem` in `SHOAL_CERT_PATH`
//! (else `~/.shoal`). A Unix socket ignores the TLS options, as docker's CLI does.

use std::path::{Path, PathBuf};

use clap::Args;
use shoal_api::tls::{TlsError, TlsFile, TlsFiles};
use shoal_api::{Client, ClientError, Host};
use thiserror::Error;

/// The directory of the default certificate files.
pub const CERT_PATH_ENV: &str = "SHOAL_CERT_PATH";

#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// For tcp:// hosts: use TLS, verify the daemon against --tlscacert and present
    /// --tlscert (also SHOAL_TLS_VERIFY=1).
    #[arg(long, env = "SHOAL_TLS_VERIFY", global = true,
          value_parser = clap::builder::FalseyValueParser::new())]
    pub tlsverify: bool,
    /// The CA that signed the daemon's certificate [default: $SHOAL_CERT_PATH/ca.pem,
    /// else ~/.shoal/ca.pem].
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// This client's certificate [default: $SHOAL_CERT_PATH/cert.pem, else ~/.shoal/cert.pem].
    #[arg(long, global = true, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// This client's key [default: $SHOAL_CERT_PATH/key.pem, else ~/.shoal/key.pem].
    #[arg(long, global = true, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum RemoteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{source}; {hint}")]
    CertFile {
        #[source]
        source: Box<TlsError>,
        hint: String,
    },
    #[error(
        "--tlscacert, --tlscert and --tlskey are used with --tlsverify (or SHOAL_TLS_VERIFY=1); pass it too"
    )]
    FilesWithoutVerify,
}

/// Where the three files are: each flag, else its docker name in `cert_path`
/// (`$SHOAL_CERT_PATH`), else in `home/.shoal`.
pub fn tls_files(args: &TlsArgs, cert_path: Option<&Path>, home: Option<&Path>) -> TlsFiles {
    let dir = match (cert_path, home) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(home)) => home.join(".shoal"),
        // No $HOME: relative names, which the error for a missing file then shows.
        (None, None) => PathBuf::from(".shoal"),
    };
    let pick = |flag: &Option<PathBuf>, name: &str| flag.clone().unwrap_or_else(|| dir.join(name));
    TlsFiles {
        ca: pick(&args.tlscacert, "ca.pem"),
        cert: pick(&args.tlscert, "cert.pem"),
        key: pick(&args.tlskey, "key.pem"),
    }
}

/// The flag that names `which`, for an error's hint.
fn flag(which: TlsFile) -> &'static str {
    match which {
        TlsFile::Ca => "--tlscacert",
        TlsFile::Cert => "--tlscert",
        TlsFile::Key => "--tlskey",
    }
}

/// What to do about a file that cannot be used: pass its flag, or point SHOAL_CERT_PATH at
/// the directory that holds all three.
fn hint(e: &TlsError, args: &TlsArgs) -> String {
    match e.file() {
        Some(which) => {
            let given = match which {
                TlsFile::Ca => args.tlscacert.is_some(),
                TlsFile::Cert => args.tlscert.is_some(),
                TlsFile::Key => args.tlskey.is_some(),
            };
            if given {
                format!("check the file given to {}", flag(which))
            } else {
                format!(
                    "pass {} FILE, or set {CERT_PATH_ENV} to a directory with ca.pem, cert.pem \
                     and key.pem",
                    flag(which)
                )
            }
        }
        None => "--tlscert and --tlskey must be a certificate and its own key".to_string(),
    }
}

/// A client for `host` with the TLS options; the environment gives the default files.
pub fn client(host: &str, args: &TlsArgs) -> Result<Client, RemoteError> {
    let cert_path = std::env::var_os(CERT_PATH_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let home = std::env::var_os("HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    client_with(host, args, cert_path.as_deref(), home.as_deref())
}

fn client_with(
    host: &str,
    args: &TlsArgs,
    cert_path: Option<&Path>,
    home: Option<&Path>,
) -> Result<Client, RemoteError> {
    if matches!(Host::parse(host)?, Host::Unix(_)) {
        return Ok(Client::new(host)?);
    }
    if !args.tlsverify {
        if args.tlscacert.is_some() || args.tlscert.is_some() || args.tlskey.is_some() {
            return Err(RemoteError::FilesWithoutVerify);
        }
        return Ok(Client::new(host)?);
    }
    let files = tls_files(args, cert_path, home);
    Client::with_tls(host, &files).map_err(|e| match e {
        ClientError::TlsFiles(source) => RemoteError::CertFile {
            hint: hint(&source, args),
            source,
        },
        other => RemoteError::Client(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify() -> TlsArgs {
        TlsArgs {
            tlsverify: true,
            ..TlsArgs::default()
        }
    }

    #[test]
    fn default_files_come_from_shoal_cert_path_else_home() {
        let args = TlsArgs {
            tlscert: Some("/etc/me.pem".into()),
            ..verify()
        };
        let f = tls_files(&args, Some(Path::new("/certs")), Some(Path::new("/root")));
        assert_eq!(f.ca, PathBuf::from("/certs/ca.pem"));
        assert_eq!(f.cert, PathBuf::from("/etc/me.pem"));
        assert_eq!(f.key, PathBuf::from("/certs/key.pem"));
        let f = tls_files(&args, None, Some(Path::new("/root")));
        assert_eq!(f.ca, PathBuf::from("/root/.shoal/ca.pem"));
    }

    #[test]
    fn a_missing_file_is_named_with_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let err = client_with("tcp://127.0.0.1:2376", &verify(), Some(dir.path()), None)
            .unwrap_err()
            .to_string();
        let ca = dir.path().join("ca.pem");
        assert_eq!(
            err,
            format!(
                "cannot read the CA certificate {}: No such file or directory (os error 2); \
                 pass --tlscacert FILE, or set SHOAL_CERT_PATH to a directory with ca.pem, \
                 cert.pem and key.pem",
                ca.display()
            )
        );
        std::fs::write(&ca, "not a certificate").unwrap();
        let args = TlsArgs {
            tlscacert: Some(ca.clone()),
            ..verify()
        };
        let err = client_with("tcp://127.0.0.1:2376", &args, Some(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the CA certificate file {} holds no CA certificate in PEM form; check the file \
                 given to --tlscacert",
                ca.display()
            )
        );
    }

    #[test]
    fn unix_sockets_ignore_tls_and_files_need_tlsverify() {
        let args = TlsArgs {
            tlscacert: Some("/nonexistent/ca.pem".into()),
            ..verify()
        };
        assert!(client_with("unix:///run/shoal/shoal.sock", &args, None, None).is_ok());
        let args = TlsArgs {
            tlsverify: false,
            ..args
        };
        assert!(matches!(
            client_with("tcp://127.0.0.1:2376", &args, None, None),
            Err(RemoteError::FilesWithoutVerify)
        ));
        assert!(client_with("tcp://127.0.0.1:2375", &TlsArgs::default(), None, None).is_ok());
    }
}
