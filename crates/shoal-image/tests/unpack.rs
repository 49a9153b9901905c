//! Layers built in memory, unpacked to disk and checked there (root: ownership, devices and
//! `trusted.` xattrs need it; CI runs as root).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::Layer;
use sha2::{Digest, Sha256};
use shoal_image::ImageError;
use shoal_image::unpack::unpack_layer;
use tar::EntryType;

fn unpack(bytes: &[u8], dest: &Path) -> Result<shoal_image::unpack::Unpacked, ImageError> {
    unpack_layer(bytes, dest, "test-layer")
}

#[test]
fn files_links_devices_owners_modes_and_times_land_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .dir("./bin/", 0o755)
        .file_owned(
            "./bin/busybox",
            b"#!busybox",
            0o4755,
            1000,
            2000,
            1_500_000_000,
        )
        .symlink("./bin/sh", "/bin/busybox")
        .hard_link("./bin/ls", "./bin/busybox")
        .dir("./etc/", 0o700)
        .file("etc/hostname", b"box\n")
        .node("./dev/null", EntryType::Char, 1, 3)
        .node("./run/fifo", EntryType::Fifo, 0, 0);
    let tar = layer.tar();
    let want_diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let out = unpack(&tar, tmp.path()).unwrap();
    assert_eq!(out.diff_id, want_diff_id);
    assert_eq!(out.entries, 8);

    let root = tmp.path();
    let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"#!busybox");
    assert_eq!((busybox.uid(), busybox.gid()), (1000, 2000));
    assert_eq!(busybox.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(busybox.mtime(), 1_500_000_000);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    let ls = fs::metadata(root.join("bin/ls")).unwrap();
    assert_eq!(ls.ino(), busybox.ino(), "hard link shares the inode");
    assert_eq!(ls.nlink(), 2);
    let etc = fs::metadata(root.join("etc")).unwrap();
    assert_eq!(etc.mode() & 0o7777, 0o700);
    assert_eq!(
        etc.mtime(),
        1_600_000_000,
        "directory time set after its contents"
    );
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(
        fs::metadata(root.join("dev")).unwrap().mode() & 0o7777,
        0o755,
        "implied parent"
    );
    assert!(
        fs::symlink_metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn gzip_layers_are_recognised_and_hashed_uncompressed() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = || Layer::new().file("hello", b"world");
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(layer().tar())));
    let out = unpack(&layer().gzip(), tmp.path()).unwrap();
    assert_eq!(out.diff_id, diff_id);
    assert_eq!(fs::read(tmp.path().join("hello")).unwrap(), b"world");
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlayfs_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = Layer::new()
        .file("etc/.wh.passwd", b"")
        .dir("var/cache/", 0o755)
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"kept")
        .file(".wh..wh.plnk", b"");
    unpack(&layer.tar(), tmp.path()).unwrap();
    let wh = fs::symlink_metadata(tmp.path().join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!tmp.path().join("etc/.wh.passwd").exists());
    let opaque = xattr::get(tmp.path().join("var/cache"), "trusted.overlay.opaque").unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(tmp.path().join("var/cache/new")).unwrap(), b"kept");
    assert!(!tmp.path().join(".wh..wh.plnk").exists());
    assert!(!tmp.path().join("var/cache/.wh..wh..opq").exists());
}

/// Unpacks `layer` into `<tmp>/layer` and returns the error; nothing may appear next to it.
fn refused(layer: Layer) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let err = unpack(&layer.tar(), &dest).unwrap_err();
    let outside: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("layer")],
        "wrote outside: {err}"
    );
    assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn entries_that_would_land_outside_are_refused_by_name() {
    assert_eq!(
        refused(Layer::new().file("../evil", b"x")),
        r#"layer test-layer: entry "../evil" has a '..' component (outside the layer root); the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().file("a/../../evil", b"x")),
        r#"layer test-layer: entry "a/../../evil" has a '..' component (outside the layer root); the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().file("/evil", b"x")),
        r#"layer test-layer: entry "/evil" is an absolute path (outside the layer root); the layer is refused"#
    );
    // A symlink to outside is fine as a link (it is resolved inside the container), but a
    // later entry written through it is not.
    assert_eq!(
        refused(
            Layer::new()
                .symlink("escape", "..")
                .file("escape/evil", b"x")
        ),
        r#"layer test-layer: entry "escape/evil" would be written through the symlink escape; the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().symlink("etc", "/etc").file("etc/evil", b"x")),
        r#"layer test-layer: entry "etc/evil" would be written through the symlink etc; the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().hard_link("shadow", "../../etc/shadow")),
        r#"layer test-layer: entry "shadow" links to a target that has a '..' component (outside the layer root); the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().hard_link("shadow", "/etc/shadow")),
        r#"layer test-layer: entry "shadow" links to a target that is an absolute path (outside the layer root); the layer is refused"#
    );
    assert_eq!(
        refused(
            Layer::new()
                .symlink("etc", "/etc")
                .hard_link("shadow", "etc/shadow")
        ),
        r#"layer test-layer: entry "shadow" links to etc/shadow which is not inside this layer; the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().hard_link("x", "missing")),
        r#"layer test-layer: entry "x" links to missing which is not a file of this layer; the layer is refused"#
    );
    assert_eq!(
        refused(Layer::new().symlink("d", "/tmp").file("d/.wh.x", b"")),
        r#"layer test-layer: entry "d/.wh.x" would be written through the symlink d; the layer is refused"#
    );
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::write(&outside, b"untouched").unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    // A symlink replaced by a file: the file is written in its place, not through it.
    let link_target = outside.to_str().unwrap();
    let layer = Layer::new()
        .symlink("f", link_target)
        .file("f", b"new")
        .dir("d/", 0o755)
        .file("d/x", b"1")
        .file("d", b"file now");
    unpack(&layer.tar(), &dest).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"untouched");
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"new");
    assert_eq!(fs::read(dest.join("d")).unwrap(), b"file now");
}
