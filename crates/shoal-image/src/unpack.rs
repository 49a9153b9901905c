//! Unpacking one layer (a tar stream, gzip-compressed or not) into a directory of its own.
//!
//! Layers are stacked later as overlayfs lowerdirs, so each is unpacked alone and deletions
//! are written as overlayfs understands them: a whiteout becomes a 0/0 character device, an
//! opaque directory gets `trusted.overlay.opaque=y`. Flattening instead (applying each layer
//! onto one tree) would copy every layer once per image and lose sharing between images.
//!
//! Nothing is written outside `dest`: entry names are checked by `entry::classify`, every
//! parent directory on the way is checked to be a real directory of this layer (never a
//! symlink, which a later write would follow), and hard links must point at a file this layer
//! already holds.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use sha2::{Digest, Sha256};
use tar::{Archive, EntryType};

use crate::entry::{Target, classify, hard_link_target};
use crate::error::ImageError;

/// What unpacking a layer found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar stream (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    pub entries: u64,
}

/// Unpacks the layer read from `src` into `dest` (an empty directory). `layer` names the
/// layer in errors. Gzip is recognised by its magic bytes; anything else is read as tar.
pub fn unpack_layer(src: impl Read, dest: &Path, layer: &str) -> Result<Unpacked, ImageError> {
    let mut src = BufReader::new(src);
    let gzip = src
        .fill_buf()
        .map_err(|e| ImageError::io("read layer", layer, e))?
        .starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(src))
    } else {
        Box::new(src)
    };
    let mut hashed = Hashing {
        inner: stream,
        hash: Sha256::new(),
    };
    let entries = apply(&mut hashed, dest, layer)?;
    // The diff id covers the whole stream, including padding after the end-of-archive blocks.
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| ImageError::io("read layer", layer, e))?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hashed.hash.finalize())),
        entries,
    })
}

struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn apply(src: &mut dyn Read, dest: &Path, layer: &str) -> Result<u64, ImageError> {
    let mut archive = Archive::new(src);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let read_err = |e: io::Error| ImageError::io("read layer", layer, e);
    let mut dir_times = Vec::new();
    let mut count = 0;
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        count += 1;
        let name = entry.path_bytes().into_owned();
        let refuse = |reason: String| ImageError::UnsafeEntry {
            layer: layer.to_string(),
            entry: String::from_utf8_lossy(&name).into_owned(),
            reason,
        };
        let target = classify(&name).map_err(refuse)?;
        let write_err = |e: io::Error| {
            let path = dest.join(String::from_utf8_lossy(&name).as_ref());
            ImageError::io("unpack", path, e)
        };
        match target {
            Target::Root | Target::Skip => {}
            Target::Opaque(dir) => {
                // The parents of `dir/x` are `dir` and its own: all made real directories.
                let full = make_parents(dest, &dir.join("x")).map_err(refuse)?;
                let full = full.parent().unwrap_or(dest);
                xattr::set(full, "trusted.overlay.opaque", b"y").map_err(write_err)?;
            }
            Target::Whiteout(path) => {
                let full = make_parents(dest, &path).map_err(refuse)?;
                clear(&full, false).map_err(write_err)?;
                mknod(&full, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| write_err(e.into()))?;
            }
            Target::Path(path) => {
                let full = make_parents(dest, &path).map_err(refuse)?;
                let kind = entry.header().entry_type();
                clear(&full, kind == EntryType::Directory).map_err(write_err)?;
                match kind {
                    EntryType::Link => {
                        let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                        let rel = hard_link_target(&link).map_err(refuse)?;
                        let src = existing_in_layer(dest, &rel).map_err(refuse)?;
                        fs::hard_link(&src, &full).map_err(write_err)?;
                    }
                    EntryType::Char | EntryType::Block | EntryType::Fifo => {
                        node(&entry, kind, &full).map_err(write_err)?;
                    }
                    EntryType::Regular
                    | EntryType::Continuous
                    | EntryType::GNUSparse
                    | EntryType::Symlink
                    | EntryType::Directory => {
                        entry.unpack(&full).map_err(write_err)?;
                    }
                    other => return Err(refuse(format!("has an unsupported type {other:?}"))),
                }
                if kind == EntryType::Directory {
                    let mtime = entry.header().mtime().unwrap_or(0) as i64;
                    dir_times.push((full, FileTime::from_unix_time(mtime, 0)));
                }
            }
        }
    }
    // Directory times last: creating their contents changed them.
    for (dir, time) in dir_times.iter().rev() {
        filetime::set_symlink_file_times(dir, *time, *time)
            .map_err(|e| ImageError::io("set the times of", dir, e))?;
    }
    Ok(count)
}

/// Creates the missing parents of `rel` under `dest` (0755, as docker does) and returns the
/// full path. A parent that exists must be a real directory: a symlink would be followed by
/// the write and could lead anywhere.
fn make_parents(dest: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut cur = dest.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .collect();
    for part in parents {
        cur.push(part);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "would be written through the symlink {}",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "has a parent {} that is not a directory",
                    cur.strip_prefix(dest).unwrap_or(&cur).display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("cannot create its parent: {e}"))?;
                fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("cannot create its parent: {e}"))?;
            }
            Err(e) => return Err(format!("cannot check its parent: {e}")),
        }
    }
    Ok(dest.join(rel))
}

/// The full path of a hard link's target, which must already be in this layer and not be
/// reached through a symlink.
fn existing_in_layer(dest: &Path, rel: &Path) -> Result<PathBuf, String> {
    let full = dest.join(rel);
    let mut cur = dest.to_path_buf();
    for part in rel.parent().into_iter().flat_map(|p| p.components()) {
        cur.push(part);
        if !is_real_dir(&cur) {
            return Err(format!(
                "links to {} which is not inside this layer",
                rel.display()
            ));
        }
    }
    match fs::symlink_metadata(&full) {
        Ok(m) if !m.is_dir() => Ok(full),
        _ => Err(format!(
            "links to {} which is not a file of this layer",
            rel.display()
        )),
    }
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Makes room for a new entry: a later entry replaces an earlier one of the same name,
/// except that a directory over a directory merges.
fn clear(full: &Path, keep_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(full) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(full),
        Ok(_) => fs::remove_file(full),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A device or FIFO (tar-rs writes those as empty files).
fn node<R: Read>(entry: &tar::Entry<R>, kind: EntryType, full: &Path) -> io::Result<()> {
    let h = entry.header();
    let mode = h.mode()?;
    let dev = makedev(
        h.device_major()?.unwrap_or(0).into(),
        h.device_minor()?.unwrap_or(0).into(),
    );
    let flag = match kind {
        EntryType::Char => SFlag::S_IFCHR,
        EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    mknod(full, flag, Mode::empty(), dev)?;
    std::os::unix::fs::lchown(full, Some(h.uid()? as u32), Some(h.gid()? as u32))?;
    fs::set_permissions(full, fs::Permissions::from_mode(mode & 0o7777))?;
    let mtime = FileTime::from_unix_time(h.mtime()? as i64, 0);
    filetime::set_symlink_file_times(full, mtime, mtime)
}
