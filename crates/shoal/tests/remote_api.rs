//! The API over TCP with TLS (`shoald -H tcp://... --tlsverify`), as a remote user sees it:
//! a real shoald in a namespace of its own, certificates made here (rcgen), the real `shoal`
//! CLI and curl. Also what the daemon keeps private: its data dir 0700, its socket 0660.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{SHOAL, SHOALD, text, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use shoal_testns::{Netns, unique_prefix};

const API: &str = "tcp://127.0.0.1:2376";
const URL: &str = "https://127.0.0.1:2376/v1/info";

/// A CA that issues server and client certificates into PEM files.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir` (docker's names) for a
    /// certificate with `sans` and `usage`.
    fn issue(&self, dir: &Path, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "shoal remote API test");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), &self.pem).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        let key_path = dir.join("key.pem");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The test's files, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon this test started and its data dir, stopped when dropped (also when the test
/// fails).
struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let stopped = wait_for_exit(&mut self.0, Duration::from_secs(10));
        if !stopped {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        // A stopped daemon keeps its overlay namespaces for its next start; this one has
        // none. Made in `ip netns exec`'s mount namespace, they are empty files here.
        let id = std::fs::read(self.1.join("node.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["node_id"].as_str().map(str::to_string))
            .filter(|id| id.len() >= 12);
        let (Some(id), Ok(entries)) = (id, std::fs::read_dir("/run/netns")) else {
            return;
        };
        let prefix = format!("shoal-ov-{}-", &id[..12]);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                let _ = Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// `program ARGS` inside `ns`, with `env`.
fn in_ns(ns: &Netns, program: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, program]).args(args);
    // The CLI reads these from the environment: only what the test sets counts.
    cmd.env_remove("SHOAL_HOST")
        .env_remove("SHOAL_TLS_VERIFY")
        .env_remove("SHOAL_CERT_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn tls_api_admits_only_clients_with_a_certificate_from_its_ca() {
    let ns = Netns::new(unique_prefix("rapi"));
    let dir = TempDir(PathBuf::from(format!("/run/{}", ns.name)));
    let d = &dir.0;
    let (server, client, stranger) = (d.join("server"), d.join("client"), d.join("stranger"));
    let ca = TestCa::new("shoal test CA");
    ca.issue(&server, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    ca.issue(&client, &[], ExtendedKeyUsagePurpose::ClientAuth);
    TestCa::new("another CA").issue(&stranger, &[], ExtendedKeyUsagePurpose::ClientAuth);
    // A data dir others may read, as an older shoald or an admin's mkdir left it.
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = d.join("shoal.sock");

    // Without TLS, a TCP listener on anything but loopback is refused before anything starts.
    let out = in_ns(
        &ns,
        SHOALD,
        &[
            "--data-dir",
            &data.display().to_string(),
            "-H",
            "tcp://0.0.0.0:2376",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "refusing to serve the API on tcp://0.0.0.0:2376 without TLS: whoever reaches that \
             address would control the cluster. Pass --tlsverify --tlscacert ca.pem"
        ),
        "{}",
        text(&out.stderr)
    );

    let log_path = d.join("shoald.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let s = |p: &Path| p.display().to_string();
    let daemon = Daemon(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, SHOALD])
            .args(["--hostname", "rapi", "--data-dir", &s(&data)])
            .args(["--socket", &s(&socket), "-H", API, "--tlsverify"])
            .args(["--tlscacert", &s(&server.join("ca.pem"))])
            .args(["--tlscert", &s(&server.join("cert.pem"))])
            .args(["--tlskey", &s(&server.join("key.pem"))])
            .args(["--listen-addr", "127.0.0.1:2377"])
            .args(["--vip-balancer", "nftables", "--mesh-path", "nftables"])
            // Debug too: no layer may print a join secret at any level an admin would use.
            .env("SHOAL_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start shoald"),
        data.clone(),
    );
    let daemon_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("shoald's API", Duration::from_secs(20), || {
        let log = daemon_log();
        if log.matches("API listening").count() == 2 {
            Ok(())
        } else {
            Err(log)
        }
    });

    // What the daemon keeps private, and says it did.
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert!(
        daemon_log().contains("data dir tightened to 0700"),
        "{}",
        daemon_log()
    );
    assert_eq!(mode(&socket), 0o660, "the API socket");
    let group = nix::unistd::Group::from_name("shoal").unwrap();
    assert_eq!(
        std::fs::metadata(&socket).unwrap().gid(),
        group.map_or(0, |g| g.gid.as_raw()),
        "the socket's group is shoal's if it exists, else root's"
    );

    // The CLI over TLS, with SHOAL_CERT_PATH's files, does what it does on the socket.
    let cli = |args: &[&str], env: &[(&str, &Path)]| {
        let mut argv = vec!["-H", API];
        argv.extend_from_slice(args);
        in_ns(&ns, SHOAL, &argv, env)
    };
    let certs = [("SHOAL_CERT_PATH", client.as_path())];
    let out = cli(
        &["--tlsverify", "init", "--advertise-addr", "127.0.0.1"],
        &certs,
    );
    assert!(out.status.success(), "init over TLS: {}", text(&out.stderr));
    let out = cli(&["--tlsverify", "node", "ls"], &certs);
    assert!(
        out.status.success(),
        "node ls over TLS: {}",
        text(&out.stderr)
    );
    let ls = text(&out.stdout);
    assert!(
        ls.contains("rapi") && ls.contains("Ready") && ls.contains("Leader"),
        "{ls}"
    );
    // The same with the flags instead of the environment.
    let out = cli(
        &[
            "--tlsverify",
            "--tlscacert",
            &s(&client.join("ca.pem")),
            "--tlscert",
            &s(&client.join("cert.pem")),
            "--tlskey",
            &s(&client.join("key.pem")),
            "node",
            "ls",
            "-q",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );

    // curl with a client certificate gets the API; without one, the TLS layer refuses it.
    let curl = |extra: &[&str]| {
        let mut args = vec!["-sS", "--max-time", "10", "--cacert"];
        let cacert = s(&client.join("ca.pem"));
        args.push(&cacert);
        args.extend_from_slice(extra);
        args.push(URL);
        in_ns(&ns, "curl", &args, &[])
    };
    let (cert, key) = (s(&client.join("cert.pem")), s(&client.join("key.pem")));
    let out = curl(&["--cert", &cert, "--key", &key]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"NodeID\""),
        "{}",
        text(&out.stdout)
    );
    let out = curl(&[]);
    // TLS 1.3: the handshake ends on curl's side, then the server's alert arrives on read.
    assert_eq!(out.status.code(), Some(56), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("alert certificate required"),
        "{}",
        text(&out.stderr)
    );
    let (cert, key) = (s(&stranger.join("cert.pem")), s(&stranger.join("key.pem")));
    let out = curl(&["--cert", &cert, "--key", &key]);
    assert_eq!(out.status.code(), Some(56), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("alert unknown ca"),
        "{}",
        text(&out.stderr)
    );

    // A CLI that trusts only another CA does not trust the daemon.
    let stranger_env = [("SHOAL_CERT_PATH", stranger.as_path())];
    let out = cli(&["--tlsverify", "node", "ls"], &stranger_env);
    assert_eq!(
        text(&out.stderr).trim(),
        "Error: the shoal daemon at tcp://127.0.0.1:2376 is not trusted: its certificate is not \
         signed by the CA in --tlscacert (SHOAL_CERT_PATH/ca.pem); use the CA that signed the \
         daemon's --tlscert"
    );
    // With the daemon's CA but a certificate from another CA, the daemon refuses it.
    std::fs::write(stranger.join("ca.pem"), &ca.pem).unwrap();
    let out = cli(&["--tlsverify", "node", "ls"], &stranger_env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "Error: the shoal daemon at tcp://127.0.0.1:2376 refused this client's certificate \
         (TLS alert: unknown CA): use a certificate signed by the CA the daemon trusts (its \
         --tlscacert)"
    );
    // A missing file is named, with what to set.
    let nowhere = d.join("nowhere");
    let out = cli(
        &["--tlsverify", "node", "ls"],
        &[("SHOAL_CERT_PATH", nowhere.as_path())],
    );
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "Error: cannot read the CA certificate {}/ca.pem: No such file or directory (os \
             error 2); pass --tlscacert FILE, or set SHOAL_CERT_PATH to a directory with \
             ca.pem, cert.pem and key.pem",
            nowhere.display()
        )
    );
    // A daemon whose certificate does not name the address dialled is not trusted.
    let out = in_ns(
        &ns,
        SHOAL,
        &["-H", "tcp://localhost:2376", "--tlsverify", "node", "ls"],
        &certs,
    );
    assert!(
        text(&out.stderr).contains(
            "the shoal daemon at tcp://localhost:2376 is not trusted: its certificate is not \
             valid for the address in tcp://localhost:2376"
        ),
        "{}",
        text(&out.stderr)
    );
    // Plain HTTP to the TLS listener: the hint says what to pass.
    let out = cli(&["node", "ls"], &[]);
    assert!(
        text(&out.stderr).contains("pass --tlsverify and its certificates"),
        "{}",
        text(&out.stderr)
    );

    // Join secrets stay out of the log.
    let out = cli(&["--tlsverify", "join-token", "-q", "worker"], &certs);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    // SWMTKN-1-<CA digest>-<secret>: the secret is what must not leak.
    let secret = token.rsplit('-').next().unwrap().to_string();
    assert!(secret.len() >= 20, "{token}");
    let log = daemon_log();
    assert!(
        log.contains("refused a TLS connection"),
        "refused handshakes are logged: {log}"
    );
    assert!(
        !log.contains(&token),
        "the join token is in the log:\n{log}"
    );
    drop(daemon);
}
