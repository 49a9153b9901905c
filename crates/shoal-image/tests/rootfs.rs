//! Task root filesystems on the real kernel's overlayfs (root). Mounts are made in a private
//! mount namespace of the test's own thread, so the host never sees them.

mod common;

use std::fs;
use std::path::Path;

use common::Layer;
use shoal_image::rootfs::{mount_rootfs, remove_rootfs};
use shoal_image::{ImageRecord, Store};

/// Runs `f` on a thread with a private mount namespace.
fn in_private_mounts<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        shoal_testns::private_mounts();
        f()
    })
    .join()
    .expect("thread with private mounts panicked")
}

fn image(store: &Store, layers: Vec<Vec<u8>>) -> ImageRecord {
    let mut digests = vec![];
    for bytes in layers {
        let digest = store.write_blob(&bytes).unwrap();
        store.unpack(&digest).unwrap();
        digests.push(digest);
    }
    let config = store.write_blob(b"{}").unwrap();
    let image = ImageRecord {
        digest: config.clone(),
        repo_digest: config.clone(),
        references: Default::default(),
        config,
        layers: digests,
        size: 0,
    };
    store.put(image.clone(), None).unwrap();
    image
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

#[test]
fn each_task_writes_its_own_layer_and_whiteouts_hide_lower_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    in_private_mounts(move || {
        let store = Store::open(root.join("store")).unwrap();
        let base = Layer::new()
            .file("etc/motd", b"lower")
            .file("etc/passwd", b"root:x:0:0")
            .file("cache/old", b"old")
            .gzip();
        let top = Layer::new()
            .file("etc/.wh.passwd", b"")
            .dir("cache/", 0o755)
            .file("cache/.wh..wh..opq", b"")
            .file("cache/new", b"new")
            .tar();
        let img = image(&store, vec![base, top]);
        let (m1, m2) = (root.join("m1"), root.join("m2"));
        mount_rootfs(&store, &img, "task1", &m1).unwrap();
        mount_rootfs(&store, &img, "task2", &m2).unwrap();

        assert_eq!(read(&m1.join("etc/motd")), "lower");
        assert!(
            !m1.join("etc/passwd").exists(),
            "the whiteout hides the lower file"
        );
        assert!(
            !m1.join("cache/old").exists(),
            "the opaque dir hides the lower contents"
        );
        assert_eq!(read(&m1.join("cache/new")), "new");

        fs::write(m1.join("etc/written"), "by task1").unwrap();
        fs::write(m1.join("etc/motd"), "changed by task1").unwrap();
        assert!(!m2.join("etc/written").exists(), "task2 sees task1's file");
        assert_eq!(read(&m2.join("etc/motd")), "lower");
        let base_layer = store.layer_dir(&img.layers[0]).unwrap();
        assert_eq!(
            read(&base_layer.join("etc/motd")),
            "lower",
            "the shared layer is unchanged"
        );

        remove_rootfs(&store, "task1", &m1).unwrap();
        assert!(!store.root().join("containers/task1").exists());
        assert!(!m1.join("etc/motd").exists(), "unmounted");
        mount_rootfs(&store, &img, "task1", &m1).unwrap();
        assert!(
            !m1.join("etc/written").exists(),
            "the old writable layer is gone"
        );
        assert_eq!(read(&m1.join("etc/motd")), "lower");
        remove_rootfs(&store, "task1", &m1).unwrap();
        remove_rootfs(&store, "task2", &m2).unwrap();
        assert!(!store.root().join("containers/task2").exists());
    });
}

#[test]
fn a_task_id_that_is_not_one_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let img = image(&store, vec![Layer::new().file("a", b"").tar()]);
    let err = mount_rootfs(&store, &img, "../x", &tmp.path().join("m")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"task id "../x" may hold only letters, digits, '-', '_' and '.'"#
    );
}
