//! The PKI's files: 0700 directory, 0600 files, loose key files refused. No root needed
//! (a temporary directory).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use shoal_pki::files::{self, NODE, ROOT_CA_CERT, ROOT_CA_KEY};
use shoal_pki::{NodeCertSpec, NodeKey, PkiError, Role, RootCa, Serial, Trust, Validity};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_root_ca_and_node_credentials_are_saved_private_and_load_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data/certificates");
    let now = SystemTime::now();
    let ca = RootCa::generate("c1", Validity::starting(now, shoal_pki::ROOT_CA_VALIDITY)).unwrap();
    files::save_root_ca(&dir, &ca).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(ROOT_CA_KEY)), 0o600);
    assert_eq!(mode(&dir.join(ROOT_CA_CERT)), 0o600);
    let back = files::load_root_ca(&dir, now).unwrap();
    assert_eq!(back.cert(), ca.cert());
    assert_eq!(files::load_cluster_ca(&dir, now).unwrap(), *ca.cert());

    let key = NodeKey::generate().unwrap();
    let spec = NodeCertSpec {
        node_id: "n1".into(),
        role: Role::Manager,
        cluster_id: "c1".into(),
        validity: Validity::starting(now, shoal_pki::DEFAULT_NODE_CERT_VALIDITY),
        serial: Serial::random(),
    };
    let creds = key
        .certify(ca.issue(&key.csr().unwrap(), &spec).unwrap())
        .unwrap();
    files::save_node(&dir, &creds).unwrap();
    assert_eq!(mode(&dir.join(NODE)), 0o600);
    let loaded = files::load_node(&dir).unwrap();
    assert_eq!(loaded.identity(), creds.identity());
    assert_eq!(loaded.cert(), creds.cert());
    // Saving again replaces the files whole and leaves no temporary file.
    files::save_node(&dir, &creds).unwrap();
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_loose_directory_is_tightened_and_a_loose_key_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let ca = RootCa::generate(
        "c1",
        Validity::starting(SystemTime::now(), shoal_pki::ROOT_CA_VALIDITY),
    )
    .unwrap();
    files::save_root_ca(&dir, &ca).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let key = dir.join(ROOT_CA_KEY);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = files::load_root_ca(&dir, SystemTime::now()).unwrap_err();
    assert!(
        matches!(&err, PkiError::LooseKeyFile { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("run `chmod 600 "), "{err}");
    let err = files::load_node(&dir).unwrap_err().to_string();
    assert!(err.starts_with("cannot read "), "{err}");
    assert!(err.contains(NODE), "{err}");
}

#[test]
fn a_rotation_in_progress_is_saved_and_read_back_then_removed_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certificates");
    let now = SystemTime::now();
    let validity = Validity::starting(now, shoal_pki::ROOT_CA_VALIDITY);
    let (r1, r2) = (
        RootCa::generate("c1", validity).unwrap(),
        RootCa::generate("c1", validity).unwrap(),
    );
    let x = r2.cross_signed_by(&r1).unwrap();
    let rotating = Trust::rotating(r1.cert().clone(), r2.cert().clone(), x).unwrap();
    // A node restarted mid-rotation trusts both roots again.
    files::save_trust(&dir, &rotating).unwrap();
    assert_eq!(mode(&dir.join(files::NEXT_ROOT)), 0o600);
    assert_eq!(files::load_trust(&dir, now).unwrap(), rotating);
    // Once it ends, the new root alone, and no leftover file.
    let done = rotating.finished();
    files::save_trust(&dir, &done).unwrap();
    assert!(!dir.join(files::NEXT_ROOT).exists());
    assert_eq!(files::load_trust(&dir, now).unwrap(), done);
    assert_eq!(files::load_cluster_ca(&dir, now).unwrap(), *r2.cert());
    // A damaged file is an error naming it, not a silent loss of the new root.
    files::save_trust(&dir, &rotating).unwrap();
    fs::write(dir.join(files::NEXT_ROOT), r2.cert().pem()).unwrap();
    let err = files::load_trust(&dir, now).unwrap_err().to_string();
    assert!(
        err.contains("root-ca-next.crt") && err.contains("fewer than two certificates"),
        "{err}"
    );
}
