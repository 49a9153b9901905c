//! A task's root filesystem: overlayfs with the image's unpacked layers as lowerdirs and a
//! writable layer of the task's own (`containers/<task>/upper`, `work`), removed with it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::error::ImageError;
use crate::store::{ImageRecord, Store};

/// Whether `task_id` can name a directory: one path component of letters, digits, `-`, `_`
/// and `.` (not `.`/`..`). The error says why not.
pub fn check_task_id(task_id: &str) -> Result<(), String> {
    if task_id.is_empty() || task_id == "." || task_id == ".." {
        return Err(format!("task id {task_id:?} cannot name a directory"));
    }
    if !task_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "task id {task_id:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// The overlayfs mount options for `layers` (bottom first): lowerdir lists the top layer
/// first. Paths with ':' or ',' would be read as separators, so they are refused.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, String> {
    let all = layers.iter().map(PathBuf::as_path).chain([upper, work]);
    for p in all {
        let s = p.to_string_lossy();
        if s.contains([':', ',']) {
            return Err(format!(
                "path {s} holds ':' or ',', which overlayfs options cannot carry"
            ));
        }
    }
    if layers.is_empty() {
        return Err("an image without layers has no root filesystem".into());
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    ))
}

fn task_dir(store: &Store, task_id: &str) -> Result<PathBuf, ImageError> {
    check_task_id(task_id).map_err(ImageError::InvalidTaskId)?;
    Ok(store.root().join("containers").join(task_id))
}

/// Mounts the root filesystem of `task_id` running `image` at `target` (created if missing).
pub fn mount_rootfs(
    store: &Store,
    image: &ImageRecord,
    task_id: &str,
    target: &Path,
) -> Result<(), ImageError> {
    let dir = task_dir(store, task_id)?;
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&upper, &work, &target.to_path_buf()] {
        fs::create_dir_all(d).map_err(|e| ImageError::io("create", d, e))?;
    }
    let layers = image
        .layers
        .iter()
        .map(|l| store.layer_dir(l))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(missing) = layers.iter().find(|l| !l.exists()) {
        return Err(ImageError::NoSuchImage(format!(
            "{} (layer {} is not unpacked; pull the image again)",
            image.digest,
            missing.display()
        )));
    }
    let options =
        overlay_options(&layers, &upper, &work).map_err(|detail| ImageError::Unsupported {
            reference: image.digest.clone(),
            what: "root filesystem",
            detail,
        })?;
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| ImageError::io("mount overlayfs at", target, io::Error::from(e)))
}

/// Unmounts `target` (if mounted) and deletes the task's writable layer.
pub fn remove_rootfs(store: &Store, task_id: &str, target: &Path) -> Result<(), ImageError> {
    let dir = task_dir(store, task_id)?;
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(ImageError::io("unmount", target, io::Error::from(e))),
    }
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove", &dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdirs_list_the_top_layer_first() {
        let layers = vec![
            PathBuf::from("/s/layers/a/fs"),
            PathBuf::from("/s/layers/b/fs"),
        ];
        assert_eq!(
            overlay_options(&layers, Path::new("/s/c/t/upper"), Path::new("/s/c/t/work")),
            Ok(
                "lowerdir=/s/layers/b/fs:/s/layers/a/fs,upperdir=/s/c/t/upper,workdir=/s/c/t/work"
                    .into()
            )
        );
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w")).is_err());
        let bad = vec![PathBuf::from("/s:x/fs")];
        assert!(
            overlay_options(&bad, Path::new("/u"), Path::new("/w"))
                .unwrap_err()
                .contains("/s:x/fs")
        );
    }

    #[test]
    fn task_ids_name_one_directory() {
        assert!(check_task_id("vote.1.abc123").is_ok());
        assert!(check_task_id("..").is_err());
        assert!(check_task_id("a/b").is_err());
        assert!(check_task_id("").is_err());
    }
}
