//! Pulls from a real registry: Debian's docker-registry in a namespace of the test's own,
//! serving a busybox image built with umoci and pushed with skopeo. The pulls run on a
//! runtime whose threads are inside that namespace (root).

use std::fs;
use std::future::Future;

use nix::mount::{MsFlags, mount};

use shoal_image::{Credentials, ImageError, ImageRef, Images, Store};
use shoal_testns::registry::{LabRegistry, ManifestFormat, busybox};
use shoal_testns::{Netns, unique_prefix};

struct Lab {
    registry: LabRegistry,
    ns: Netns,
    store_dir: tempfile::TempDir,
}

/// A namespace, a registry in it with `lab/busybox:1` (OCI manifest) pushed, and a fresh
/// store. Returns the lab and the digest skopeo reports for the image.
fn lab() -> (Lab, String) {
    let ns = Netns::new(unique_prefix("img"));
    let registry = LabRegistry::start(&ns, 5000);
    let digest = registry.push_busybox("lab/busybox:1", ManifestFormat::Oci);
    let store_dir = tempfile::tempdir().unwrap();
    (
        Lab {
            registry,
            ns,
            store_dir,
        },
        digest,
    )
}

impl Lab {
    fn images(&self) -> Images {
        Images::new(Store::open(self.store_dir.path()).unwrap(), vec![])
    }

    /// Runs `f` on a runtime whose threads live in the lab's namespace.
    fn block_on<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        self.ns.run(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
    }

    fn reference(&self, rest: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{rest}", self.registry.addr)).unwrap()
    }

    /// How many times the registry served `GET` of this blob since its log had `from` bytes.
    fn blob_gets(&self, repo: &str, digest: &str, from: usize) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/1.1\" 200");
        self.registry.log()[from..].matches(&needle).count()
    }
}

#[test]
fn pulls_and_unpacks_busybox_pinned_to_the_registry_digest() {
    let (lab, digest) = lab();
    let images = lab.images();
    let r = lab.reference("lab/busybox:1");
    let (i, r2) = (images.clone(), r.clone());
    let (resolved, image) = lab.block_on(move || async move {
        let resolved = i.resolve(&r2, None).await.unwrap();
        let image = i.pull(&r2, None).await.unwrap();
        (resolved, image)
    });
    assert_eq!(resolved, digest, "resolve pins what skopeo reports");
    assert_eq!(image.repo_digest, digest);
    assert_eq!(image.digest, digest, "a plain manifest is its own image");
    assert!(image.references.contains("127.0.0.1:5000/lab/busybox:1"));
    assert_eq!(image.layers.len(), 1);
    let layer = images.store().layer_dir(&image.layers[0]).unwrap();
    assert_eq!(
        fs::read(layer.join("bin/busybox")).unwrap(),
        fs::read(busybox()).unwrap(),
        "busybox is in the unpacked layer"
    );
    assert_eq!(
        fs::read_link(layer.join("bin/sh")).unwrap().to_str(),
        Some("busybox")
    );
    assert!(images.store().has_blob(&image.layers[0]));
    assert!(images.store().has_blob(&image.config));

    // Pinned to its digest, the image is found locally: no registry traffic at all.
    let before = images.stats();
    let pinned = r.pinned(&digest);
    let i = images.clone();
    let again = lab.block_on(move || async move { i.pull(&pinned, None).await.unwrap() });
    assert_eq!(again.digest, image.digest);
    assert_eq!(images.stats(), before);
    // Under another name (another registry serving the same image): that name is recorded
    // too, without the digest, so `image ls` shows its tag.
    let elsewhere = ImageRef::parse(&format!("127.0.0.1:5001/team/busybox:2@{digest}")).unwrap();
    let i = images.clone();
    let named = lab.block_on(move || async move { i.pull(&elsewhere, None).await.unwrap() });
    assert!(
        named.references.contains("127.0.0.1:5001/team/busybox:2"),
        "{named:?}"
    );
    assert!(
        named.references.contains("127.0.0.1:5000/lab/busybox:1"),
        "{named:?}"
    );
    assert_eq!(images.stats(), before);

    // The same image as a Docker v2 schema 2 manifest: another manifest, the same layer.
    let v2 = lab
        .registry
        .push_busybox("lab/busybox:v2s2", ManifestFormat::DockerV2);
    let r = lab.reference("lab/busybox:v2s2");
    let i = images.clone();
    let docker = lab.block_on(move || async move { i.pull(&r, None).await.unwrap() });
    assert_eq!(docker.repo_digest, v2);
    let manifest = String::from_utf8(images.store().read_blob(&v2).unwrap()).unwrap();
    assert!(manifest.contains("application/vnd.docker.distribution.manifest.v2+json"));
    let layer = images.store().layer_dir(&docker.layers[0]).unwrap();
    assert!(layer.join("bin/busybox").exists());
    let list = lab.block_on({
        let i = images.clone();
        move || async move { i.list().await.unwrap() }
    });
    assert_eq!(list.len(), 2);
}

#[test]
fn registry_errors_read_as_docker_words_them() {
    let (mut lab, _) = lab();
    let images = lab.images();
    let missing_tag = lab.reference("lab/busybox:nope");
    let missing_repo = lab.reference("lab/missing:1");
    let i = images.clone();
    let (tag_err, repo_err, resolve_err) = lab.block_on(move || async move {
        (
            i.pull(&missing_tag, None).await.unwrap_err(),
            i.pull(&missing_repo, None).await.unwrap_err(),
            i.resolve(&missing_tag, None).await.unwrap_err(),
        )
    });
    assert_eq!(
        tag_err.to_string(),
        "manifest for 127.0.0.1:5000/lab/busybox:nope not found: manifest unknown: manifest unknown"
    );
    assert_eq!(resolve_err.to_string(), tag_err.to_string());
    assert_eq!(
        repo_err.to_string(),
        "pull access denied for 127.0.0.1:5000/lab/missing, repository does not exist or may require 'docker login'"
    );

    lab.registry.stop();
    let r = lab.reference("lab/busybox:1");
    let i = images.clone();
    let down = lab.block_on(move || async move { i.pull(&r, None).await.unwrap_err() });
    assert!(matches!(down, ImageError::Unreachable { .. }), "{down:?}");
    let text = down.to_string();
    assert!(
        text.starts_with("cannot reach registry 127.0.0.1:5000: "),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert!(images.store().list().unwrap().is_empty());
}

#[test]
fn concurrent_pulls_fetch_each_blob_once() {
    let (lab, digest) = lab();
    // A second tag of the same image: a different pull that shares every blob.
    lab.registry
        .push_busybox("lab/busybox:2", ManifestFormat::Oci);
    let images = lab.images();
    let (r1, r2) = (
        lab.reference("lab/busybox:1"),
        lab.reference("lab/busybox:2"),
    );
    let i = images.clone();
    // skopeo's pushes and inspects read blobs too: count only the pulls' requests.
    let log_before = lab.registry.log().len();
    let (a, b, c) = lab.block_on(move || async move {
        tokio::join!(i.pull(&r1, None), i.pull(&r1, None), i.pull(&r2, None))
    });
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        (&a.digest, &b.digest, &c.digest),
        (&digest, &digest, &digest)
    );
    for blob in a.layers.iter().chain([&a.config]) {
        assert_eq!(
            lab.blob_gets("lab/busybox", blob, log_before),
            1,
            "blob {blob} fetched more than once"
        );
    }
    let stats = images.stats();
    assert_eq!(stats.blobs_fetched, 2, "config and layer, once each");
    assert_eq!(stats.layers_unpacked, 1);
    // Two pulls (tags 1 and 2), one manifest each: the third caller joined the first.
    assert_eq!(stats.manifests_fetched, 2);
    assert_eq!(
        images
            .store()
            .get("127.0.0.1:5000/lab/busybox:2")
            .unwrap()
            .references
            .len(),
        2
    );
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_stored() {
    let (lab, _) = lab();
    // Rewrite the layer's bytes in the registry's storage: it serves them under the old digest.
    let blobs = lab
        .registry
        .storage()
        .join("docker/registry/v2/blobs/sha256");
    let mut biggest = None;
    for prefix in fs::read_dir(&blobs).unwrap() {
        for blob in fs::read_dir(prefix.unwrap().path()).unwrap() {
            let data = blob.unwrap().path().join("data");
            let len = fs::metadata(&data).unwrap().len();
            if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                biggest = Some((len, data));
            }
        }
    }
    let (_, layer) = biggest.unwrap();
    let mut bytes = fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&layer, bytes).unwrap();

    let images = lab.images();
    let r = lab.reference("lab/busybox:1");
    let i = images.clone();
    let err = lab.block_on(move || async move { i.pull(&r, None).await.unwrap_err() });
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    let layer_digest = format!(
        "sha256:{}",
        layer
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert!(err.to_string().contains(&layer_digest), "{err}");
    assert!(!images.store().has_blob(&layer_digest));
    let tmp = lab.store_dir.path().join("blobs/tmp");
    assert_eq!(
        fs::read_dir(tmp).unwrap().count(),
        0,
        "no partial download left"
    );
    assert!(images.store().list().unwrap().is_empty());
}

#[test]
fn remove_refuses_images_in_use_and_prune_deletes_the_rest() {
    let (lab, digest) = lab();
    let images = lab.images();
    let r = lab.reference("lab/busybox:1");
    let pinned = r.pinned(&digest).to_string();
    let i = images.clone();
    let (in_use, removed, pruned_used, pruned) = lab.block_on(move || async move {
        let image = i.pull(&r, None).await.unwrap();
        let in_use = i
            .remove(&r.to_string(), std::slice::from_ref(&pinned))
            .await
            .unwrap_err();
        let removed = i
            .remove("127.0.0.1:5000/lab/busybox:nope", &[])
            .await
            .unwrap_err();
        let pruned_used = i.prune(std::slice::from_ref(&pinned)).await.unwrap();
        let pruned = i.prune(&[]).await.unwrap();
        assert_eq!(pruned[0].digest, image.digest);
        (in_use, removed, pruned_used, pruned)
    });
    assert_eq!(
        in_use.to_string(),
        format!(
            "image 127.0.0.1:5000/lab/busybox:1 is in use by 127.0.0.1:5000/lab/busybox:1@{digest}; remove those first"
        )
    );
    assert_eq!(
        removed.to_string(),
        "No such image: 127.0.0.1:5000/lab/busybox:nope"
    );
    assert!(pruned_used.is_empty());
    assert_eq!(pruned.len(), 1);
    let root = lab.store_dir.path();
    assert_eq!(fs::read_dir(root.join("blobs/sha256")).unwrap().count(), 0);
    let layers: Vec<_> = fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(layers, vec![std::ffi::OsString::from("tmp")]);
}

/// bcrypt (cost 5) of "lab-password", made once with crypt(3): the registry reads only
/// bcrypt hashes, and a test-only password hash is no secret.
const LAB_HASH: &str = "$2b$05$A6Sl0M3BcfxIkYJWf6bNieO/0d48ciByyEF7OBWaGa378UInwPqcu";

#[test]
fn a_registry_that_requires_a_login_gets_the_credentials_passed_in() {
    let ns = Netns::new(unique_prefix("img"));
    let registry = LabRegistry::start_with_login(&ns, 5000, "lab", "lab-password", LAB_HASH);
    let digest = registry.push_busybox("team/busybox:1", ManifestFormat::Oci);
    let lab = Lab {
        registry,
        ns,
        store_dir: tempfile::tempdir().unwrap(),
    };
    let images = lab.images();
    let r = lab.reference("team/busybox:1");
    let good = Credentials::new("lab", "lab-password");
    let bad = Credentials::new("lab", "wrong");
    assert!(!format!("{good:?}").contains("lab-password"), "{good:?}");
    let i = images.clone();
    let (anonymous, wrong, right) = lab.block_on(move || async move {
        (
            i.pull(&r, None).await.unwrap_err(),
            i.pull(&r, Some(&bad)).await.unwrap_err(),
            i.pull(&r, Some(&good)).await.unwrap(),
        )
    });
    let denied = "pull access denied for 127.0.0.1:5000/team/busybox, repository does not exist or may require 'docker login'";
    assert_eq!(anonymous.to_string(), denied);
    // Refused credentials read as docker words them, naming who was refused.
    assert!(
        wrong
            .to_string()
            .starts_with("unauthorized: authentication required (registry 127.0.0.1:5000 refused the login of lab"),
        "{wrong}"
    );
    assert!(!wrong.to_string().contains("wrong"), "{wrong}");
    assert_eq!(right.repo_digest, digest);
    assert!(!lab.registry.log().contains("lab-password"));
}

#[test]
fn an_index_yields_the_node_platform_or_names_the_platforms_it_has() {
    let (lab, image_digest) = lab();
    let multi = lab.registry.push_busybox_index(
        "lab/busybox",
        "multi",
        &[("linux", "arm64"), ("linux", "amd64")],
    );
    lab.registry.push_busybox_index(
        "lab/busybox",
        "arm",
        &[("linux", "arm64"), ("linux", "s390x")],
    );
    let images = lab.images();
    let (r, arm) = (
        lab.reference("lab/busybox:multi"),
        lab.reference("lab/busybox:arm"),
    );
    let i = images.clone();
    let (resolved, image, err) = lab.block_on(move || async move {
        (
            i.resolve(&r, None).await.unwrap(),
            i.pull(&r, None).await.unwrap(),
            i.pull(&arm, None).await.unwrap_err(),
        )
    });
    assert_eq!(resolved, multi, "a service pins the index");
    assert_eq!(image.repo_digest, multi);
    assert_eq!(image.digest, image_digest, "the linux/amd64 entry");
    assert!(
        images
            .store()
            .layer_dir(&image.layers[0])
            .unwrap()
            .join("bin/busybox")
            .exists()
    );
    assert_eq!(
        err.to_string(),
        "no matching manifest for linux/amd64 in the manifest list entries of \
         127.0.0.1:5000/lab/busybox:arm (it has: linux/arm64, linux/s390x)"
    );
}

#[test]
fn a_full_disk_reads_no_space_left_on_device() {
    let (lab, _) = lab();
    let small = lab.store_dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let r = lab.reference("lab/busybox:1");
    // A 256 KiB tmpfs as the store, mounted in a private mount namespace of the thread
    // that runs the pull (its runtime's threads inherit it), so the host never sees it.
    let (err, leftovers) = lab.ns.run(move || {
        shoal_testns::private_mounts();
        mount(
            Some("tmpfs"),
            &small,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=256k"),
        )
        .unwrap();
        let images = Images::new(Store::open(&small).unwrap(), vec![]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let err = rt.block_on(images.pull(&r, None)).unwrap_err();
        (err, fs::read_dir(small.join("blobs/tmp")).unwrap().count())
    });
    assert!(matches!(err, ImageError::NoSpace { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with(": no space left on device"),
        "{err}"
    );
    assert_eq!(leftovers, 0, "the partial download is removed");
}
