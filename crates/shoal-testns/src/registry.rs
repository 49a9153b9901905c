//! A lab registry for image tests: Debian's `docker-registry` (the CNCF distribution
//! registry) inside a test's namespace, and a tiny busybox image built with umoci and pushed
//! with skopeo, as an operator would.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Netns, run, unique_prefix};

/// The manifest format an image is pushed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    Oci,
    /// Docker image manifest v2, schema 2.
    DockerV2,
}

/// A `docker-registry` serving `127.0.0.1:<port>` inside a namespace, with its storage, config
/// and log in a directory of its own. Stopped (by its pid) and deleted when dropped.
pub struct LabRegistry {
    /// `127.0.0.1:<port>`, as image references name it.
    pub addr: String,
    ns: String,
    dir: PathBuf,
    child: Option<Child>,
    /// `user:password` for skopeo when the registry requires a login.
    creds: Option<String>,
    /// The image builds shared with the other registries alive in this process.
    builds: SharedBuilds,
}

impl LabRegistry {
    /// Starts the registry inside `ns` and waits until it accepts connections.
    pub fn start(ns: &Netns, port: u16) -> LabRegistry {
        Self::start_inner(ns, port, None)
    }

    /// Starts a registry that requires a login (htpasswd, HTTP basic auth): `user` with the
    /// bcrypt hash `hash` of `password` (the registry reads only bcrypt hashes).
    pub fn start_with_login(
        ns: &Netns,
        port: u16,
        user: &str,
        password: &str,
        hash: &str,
    ) -> LabRegistry {
        Self::start_inner(ns, port, Some((user, password, hash)))
    }

    fn start_inner(ns: &Netns, port: u16, login: Option<(&str, &str, &str)>) -> LabRegistry {
        let dir = std::env::temp_dir().join(unique_prefix("shoal-registry"));
        fs::create_dir_all(dir.join("storage")).expect("create registry dir");
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            dir.join("storage").display()
        );
        if let Some((user, _, hash)) = login {
            let htpasswd = dir.join("htpasswd");
            fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config += &format!(
                "auth:\n  htpasswd:\n    realm: lab\n    path: {}\n",
                htpasswd.display()
            );
        }
        fs::write(dir.join("config.yml"), config).expect("write registry config");
        let log = fs::File::create(dir.join("registry.log")).expect("create registry log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "docker-registry", "serve"])
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (is the docker-registry package installed?)");
        let mut registry = LabRegistry {
            addr: addr.clone(),
            ns: ns.name.clone(),
            dir,
            child: Some(child),
            creds: login.map(|(user, password, _)| format!("{user}:{password}")),
            builds: SharedBuilds::join(),
        };
        // Readiness, not a timing assertion: give up after 10 s with the registry's log.
        let ready = ns.run(move || {
            (0..200).any(|_| {
                let up = TcpStream::connect(&addr).is_ok();
                if !up {
                    std::thread::sleep(Duration::from_millis(50));
                }
                up
            })
        });
        if !ready {
            let log = registry.log();
            registry.stop();
            panic!("docker-registry did not listen on {}: {log}", registry.addr);
        }
        registry
    }

    /// The registry's log (its access log lines: `"GET /v2/<repo>/blobs/<digest> HTTP/1.1"`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Where the registry keeps its blobs and repositories.
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Builds (once) a one-layer image holding the host's static busybox as `/bin/busybox`
    /// (and `/bin/sh` linked to it, Cmd `/bin/sh`), pushes it as `repo_tag`
    /// (`lab/busybox:1`) and returns the digest the registry reports for it. Registries alive
    /// at the same time in one test process push the same build, so the same image has the
    /// same digest in each (as one image pushed to several registries would).
    pub fn push_busybox(&self, repo_tag: &str, format: ManifestFormat) -> String {
        self.push_variant(repo_tag, format, None)
    }

    /// Like `push_busybox`, but the image also holds `/variant` with `text`: another image
    /// (another digest) under the same name, e.g. a tag pushed again.
    pub fn push_busybox_variant(&self, repo_tag: &str, text: &str) -> String {
        self.push_variant(repo_tag, ManifestFormat::Oci, Some(text))
    }

    /// Like `push_busybox`, with a HEALTHCHECK in the image's config as docker writes it
    /// (`config.Healthcheck`: `{"Test":["CMD-SHELL","..."],"Interval":ns,...}`, which umoci
    /// cannot set: the OCI image spec has no such field, so the config blob is edited).
    pub fn push_busybox_with_healthcheck(&self, repo_tag: &str, healthcheck: &str) -> String {
        let layout = self.busybox_layout(Some(&format!("healthcheck {healthcheck}")));
        {
            let _one_build_at_a_time = self.builds.lock();
            let done = layout.join("healthcheck-added");
            if !done.exists() {
                add_healthcheck(&layout, healthcheck);
                fs::write(&done, "").expect("mark the layout");
            }
        }
        self.push_layout(&layout, repo_tag, ManifestFormat::Oci)
    }

    fn push_variant(
        &self,
        repo_tag: &str,
        format: ManifestFormat,
        variant: Option<&str>,
    ) -> String {
        let layout = self.busybox_layout(variant);
        self.push_layout(&layout, repo_tag, format)
    }

    fn push_layout(&self, layout: &Path, repo_tag: &str, format: ManifestFormat) -> String {
        let dest = format!("docker://{}/{repo_tag}", self.addr);
        let src = format!("oci:{}:busybox", layout.display());
        let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        if format == ManifestFormat::DockerV2 {
            args.extend(["--format", "v2s2"]);
        }
        if let Some(creds) = &self.creds {
            args.extend(["--dest-creds", creds]);
        }
        args.extend([src.as_str(), dest.as_str()]);
        self.skopeo(&args);
        let mut args = vec!["inspect", "--tls-verify=false", "--format", "{{.Digest}}"];
        if let Some(creds) = &self.creds {
            args.extend(["--creds", creds]);
        }
        args.push(&dest);
        self.skopeo(&args).trim().to_string()
    }

    /// Pushes the busybox image, then an OCI image index `repo:tag` whose entries all point
    /// at it, one per `(os, architecture)` of `platforms` (PUT straight to the registry, as a
    /// multi-platform build would); returns the index's digest.
    pub fn push_busybox_index(&self, repo: &str, tag: &str, platforms: &[(&str, &str)]) -> String {
        let image = format!("{repo}:{tag}-image");
        let digest = self.push_busybox(&image, ManifestFormat::Oci);
        let src = format!("docker://{}/{image}", self.addr);
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        if let Some(creds) = &self.creds {
            args.extend(["--creds", creds]);
        }
        args.push(&src);
        let size = self.skopeo(&args).len();
        let entries: Vec<String> = platforms
            .iter()
            .map(|(os, arch)| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#
                )
            })
            .collect();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        let file = self.dir.join(format!("index-{tag}.json"));
        fs::write(&file, &index).expect("write index");
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.addr);
        let mut curl = Command::new("ip");
        curl.args(["netns", "exec", &self.ns, "curl", "-sS", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-X", "PUT"])
            .args([
                "-H",
                "Content-Type: application/vnd.oci.image.index.v1+json",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
        if let Some(creds) = &self.creds {
            curl.args(["-u", creds]);
        }
        let out = curl.arg(&url).output().expect("run curl");
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            status,
            "201",
            "PUT {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sum = Command::new("sha256sum")
            .arg(&file)
            .output()
            .expect("run sha256sum");
        let sum = String::from_utf8_lossy(&sum.stdout);
        format!(
            "sha256:{}",
            sum.split_whitespace().next().unwrap_or_default()
        )
    }

    fn skopeo(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "skopeo"])
            .args(args)
            .output()
            .expect("run skopeo (is the skopeo package installed?)");
        assert!(
            out.status.success(),
            "skopeo {args:?} failed: {}\nregistry log: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn busybox_layout(&self, variant: Option<&str>) -> PathBuf {
        let shared = self.builds.dir();
        let build = match variant {
            None => shared.join("build"),
            Some(text) => shared.join(format!("build-{}", hex_of(text))),
        };
        let layout = build.join("oci");
        let _one_build_at_a_time = self.builds.lock();
        if layout.exists() {
            return layout;
        }
        fs::create_dir_all(&build).expect("create build dir");
        let image = format!("{}:busybox", layout.display());
        let bundle = build.join("bundle");
        let bundle = bundle.to_str().expect("utf-8 path");
        run(
            "umoci",
            &["init", "--layout", layout.to_str().expect("utf-8")],
        );
        run("umoci", &["new", "--image", &image]);
        run("umoci", &["unpack", "--image", &image, bundle]);
        let bin = Path::new(bundle).join("rootfs/bin");
        fs::create_dir_all(&bin).expect("create rootfs/bin");
        fs::copy(busybox(), bin.join("busybox")).expect("copy busybox (busybox-static)");
        std::os::unix::fs::symlink("busybox", bin.join("sh")).expect("link sh");
        if let Some(text) = variant {
            fs::write(Path::new(bundle).join("rootfs/variant"), text).expect("write /variant");
        }
        run("umoci", &["repack", "--image", &image, bundle]);
        run(
            "umoci",
            &["config", "--image", &image, "--config.cmd", "/bin/sh"],
        );
        layout
    }

    /// Stops the registry (its pid only) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The static busybox the lab images are made of.
pub fn busybox() -> &'static Path {
    Path::new("/bin/busybox")
}

impl Drop for LabRegistry {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A directory of image builds shared by the registries alive at once in a test process,
/// deleted when the last of them goes (so a lab's registries serve the same digests).
struct SharedBuilds;

struct Builds {
    dir: Option<PathBuf>,
    users: usize,
}

static BUILDS: std::sync::Mutex<Builds> = std::sync::Mutex::new(Builds {
    dir: None,
    users: 0,
});
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn builds() -> std::sync::MutexGuard<'static, Builds> {
    BUILDS.lock().unwrap_or_else(|p| p.into_inner())
}

impl SharedBuilds {
    fn join() -> SharedBuilds {
        let mut b = builds();
        if b.dir.is_none() {
            b.dir = Some(std::env::temp_dir().join(unique_prefix("shoal-images")));
        }
        b.users += 1;
        SharedBuilds
    }

    fn dir(&self) -> PathBuf {
        builds()
            .dir
            .clone()
            .expect("a shared build dir while a registry lives")
    }

    fn lock(&self) -> std::sync::MutexGuard<'static, ()> {
        BUILDING.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SharedBuilds {
    fn drop(&mut self) {
        let mut b = builds();
        b.users -= 1;
        if b.users == 0
            && let Some(dir) = b.dir.take()
        {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Writes `bytes` as a blob of an OCI layout; returns its descriptor's digest and size.
fn write_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = layout.join("blob.tmp");
    fs::write(&tmp, bytes).expect("write blob");
    let sum = Command::new("sha256sum")
        .arg(&tmp)
        .output()
        .expect("run sha256sum");
    let hex = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).expect("store blob");
    (format!("sha256:{hex}"), bytes.len())
}

fn read_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.trim_start_matches("sha256:");
    let bytes = fs::read(layout.join("blobs/sha256").join(hex)).expect("read blob");
    serde_json::from_slice(&bytes).expect("a JSON blob")
}

/// Puts `healthcheck` (JSON) into the config of the layout's one image: a new config blob,
/// a new manifest naming it, the index naming the manifest.
fn add_healthcheck(layout: &Path, healthcheck: &str) {
    let check: serde_json::Value = serde_json::from_str(healthcheck).expect("healthcheck JSON");
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).expect("read index.json")).expect("index");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest")
        .to_string();
    let mut manifest = read_json(layout, &manifest_digest);
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("a config")
        .to_string();
    let mut config = read_json(layout, &config_digest);
    config["config"]["Healthcheck"] = check;
    let (digest, size) = write_blob(layout, config.to_string().as_bytes());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = write_blob(layout, manifest.to_string().as_bytes());
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    fs::write(&index_path, index.to_string()).expect("write index.json");
}

/// A short name for a variant's build directory.
fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).take(16).collect()
}
