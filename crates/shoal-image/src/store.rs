//! The node's image store on disk, under a root the caller gives:
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs and compressed layers, content-addressed
//! blobs/tmp/             downloads in progress; renamed into place once their digest checks
//! layers/<hex>/fs        a layer unpacked once (keyed by its blob digest), shared by images
//! layers/<hex>/diff-id   the digest of its uncompressed tar
//! layers/tmp/            layers being unpacked; renamed into place when complete
//! containers/<task>/     a task's writable layer (`rootfs`)
//! images.json            image records: references → manifest digest, config, layers
//! ```
//!
//! A blob or layer directory exists under its final name only when complete, so a crash
//! leaves at most debris in the `tmp` directories, which `open` clears.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::reference::ImageRef;
use crate::unpack::{Unpacked, unpack_layer};

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The platform manifest's digest: the image's identity here.
    pub digest: String,
    /// What the registry resolved the reference to: the index's digest for a multi-platform
    /// image, else `digest`. Services are pinned to this (`repo:tag@<repo_digest>`).
    pub repo_digest: String,
    /// Normalised references (`docker.io/library/nginx:latest`) that name this image.
    pub references: BTreeSet<String>,
    /// The config blob's digest (docker's image id).
    pub config: String,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
    /// Compressed size of the layers.
    pub size: u64,
}

impl ImageRecord {
    /// docker's short image id (12 hex digits of the config digest).
    pub fn id(&self) -> &str {
        let hex = self.config.strip_prefix("sha256:").unwrap_or(&self.config);
        &hex[..hex.len().min(12)]
    }

    fn blobs(&self) -> impl Iterator<Item = &String> {
        [&self.digest, &self.repo_digest, &self.config]
            .into_iter()
            .chain(&self.layers)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    images: BTreeMap<String, ImageRecord>,
}

/// The on-disk store. Callers serialise work on one blob or layer (see `Images`); the record
/// file is guarded here.
pub struct Store {
    root: PathBuf,
    records: Mutex<()>,
    next_tmp: AtomicU64,
}

/// The hex part of a `sha256:<64 hex>` digest, or why it is not one.
pub fn digest_hex(digest: &str) -> Result<&str, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {digest:?} is not sha256"))?;
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(hex)
    } else {
        Err(format!("digest {digest:?} is not 64 lowercase hex digits"))
    }
}

fn bad_digest(digest: &str) -> impl Fn(String) -> ImageError + '_ {
    move |detail| ImageError::Corrupt {
        path: PathBuf::from(digest),
        detail,
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root` and clears unfinished work.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, ImageError> {
        let root = root.into();
        for dir in ["blobs/tmp", "layers/tmp"] {
            let p = root.join(dir);
            if p.exists() {
                fs::remove_dir_all(&p).map_err(|e| ImageError::io("clear", &p, e))?;
            }
        }
        for dir in ["blobs/sha256", "blobs/tmp", "layers/tmp", "containers"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| ImageError::io("create", &p, e))?;
        }
        Ok(Store {
            root,
            records: Mutex::new(()),
            next_tmp: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(digest).map_err(bad_digest(digest))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// A fresh path for a download in progress.
    pub fn temp_path(&self, dir: &str) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(dir)
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// Moves a downloaded file into place after checking that its content has `digest`; on
    /// a mismatch the file is deleted and nothing is stored.
    pub fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), ImageError> {
        let dest = self.blob_path(digest)?;
        let actual = match sha256_file(tmp) {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(tmp);
                return Err(ImageError::io("read", tmp, e));
            }
        };
        if actual != digest {
            let _ = fs::remove_file(tmp);
            return Err(ImageError::DigestMismatch {
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        fs::rename(tmp, &dest).map_err(|e| ImageError::io("store", &dest, e))
    }

    /// Stores `bytes` (a manifest or config) and returns their digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if !self.has_blob(&digest) {
            let tmp = self.temp_path("blobs");
            fs::File::create(&tmp)
                .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
                .map_err(|e| ImageError::io("write", &tmp, e))?;
            self.commit_blob(&tmp, &digest)?;
        }
        Ok(digest)
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(|e| ImageError::io("read", &p, e))
    }

    /// The unpacked contents of the layer with blob `digest`.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(digest).map_err(bad_digest(digest))?;
        Ok(self.root.join("layers").join(hex).join("fs"))
    }

    /// Unpacks the layer blob `digest` unless that was done before; returns its diff id.
    pub fn unpack(&self, digest: &str) -> Result<Unpacked, ImageError> {
        let fs_dir = self.layer_dir(digest)?;
        let layer_dir = fs_dir.parent().unwrap_or(&fs_dir).to_path_buf();
        let diff_file = layer_dir.join("diff-id");
        if fs_dir.exists() {
            let diff_id = fs::read_to_string(&diff_file)
                .map_err(|e| ImageError::io("read", &diff_file, e))?;
            return Ok(Unpacked {
                diff_id: diff_id.trim().to_string(),
                entries: 0,
            });
        }
        let blob = self.blob_path(digest)?;
        let tmp = self.temp_path("layers");
        let result = (|| {
            let file = fs::File::open(&blob).map_err(|e| ImageError::io("open", &blob, e))?;
            let tmp_fs = tmp.join("fs");
            fs::create_dir_all(&tmp_fs).map_err(|e| ImageError::io("create", &tmp_fs, e))?;
            let unpacked = unpack_layer(file, &tmp_fs, digest)?;
            let tmp_diff = tmp.join("diff-id");
            fs::write(&tmp_diff, &unpacked.diff_id)
                .map_err(|e| ImageError::io("write", &tmp_diff, e))?;
            fs::rename(&tmp, &layer_dir).map_err(|e| ImageError::io("store", &layer_dir, e))?;
            Ok(unpacked)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn records_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn load(&self) -> Result<Records, ImageError> {
        let p = self.records_path();
        match fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
                path: p,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Records::default()),
            Err(e) => Err(ImageError::io("read", &p, e)),
        }
    }

    fn save(&self, records: &Records) -> Result<(), ImageError> {
        let p = self.records_path();
        let tmp = self.temp_path("blobs");
        let bytes = serde_json::to_vec_pretty(records).map_err(|e| ImageError::Corrupt {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()))
            .map_err(|e| ImageError::io("write", &tmp, e))?;
        fs::rename(&tmp, &p).map_err(|e| ImageError::io("write", &p, e))
    }

    fn with_records<T>(
        &self,
        f: impl FnOnce(&mut Records) -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let _guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = self.load()?;
        let out = f(&mut records)?;
        self.save(&records)?;
        Ok(out)
    }

    /// Records `image`, named by `reference` too; a reference that named another image (a
    /// tag that moved) now names only this one.
    pub fn put(
        &self,
        mut image: ImageRecord,
        reference: Option<&ImageRef>,
    ) -> Result<(), ImageError> {
        self.with_records(|r| {
            if let Some(reference) = reference {
                let name = reference.to_string();
                for other in r.images.values_mut() {
                    other.references.remove(&name);
                }
                image.references.insert(name);
            }
            if let Some(old) = r.images.get(&image.digest) {
                image.references.extend(old.references.iter().cloned());
            }
            r.images.insert(image.digest.clone(), image);
            Ok(())
        })
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let _guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.load()?.images.into_values().collect())
    }

    /// When the image was built (its config's `created`, RFC 3339), as `image ls` shows it.
    pub fn created(&self, image: &ImageRecord) -> Option<String> {
        #[derive(Deserialize)]
        struct Created {
            created: Option<String>,
        }
        let raw = self.read_blob(&image.config).ok()?;
        serde_json::from_slice::<Created>(&raw).ok()?.created
    }

    /// The image `name` designates: a reference (`nginx`, `host/app:1`, `app@sha256:…`), a
    /// manifest or repo digest, or an id (a prefix of the config digest, as docker's).
    pub fn get(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let images = self.list()?;
        find(&images, name)
            .cloned()
            .ok_or_else(|| ImageError::NoSuchImage(name.to_string()))
    }

    /// Removes `name`: a reference that is one of several names of its image only untags
    /// it; otherwise the image goes, unless an entry of `in_use` (task image references)
    /// designates it. Returns what was removed (`Untagged`/`Deleted` as docker prints).
    pub fn remove(&self, name: &str, in_use: &[String]) -> Result<Vec<String>, ImageError> {
        let removed = self.with_records(|r| {
            let images: Vec<ImageRecord> = r.images.values().cloned().collect();
            let image = find(&images, name).ok_or_else(|| ImageError::NoSuchImage(name.into()))?;
            let by_ref = ImageRef::parse(name)
                .ok()
                .map(|n| n.to_string())
                .filter(|n| image.references.contains(n));
            if let Some(reference) = &by_ref
                && image.references.len() > 1
            {
                if let Some(i) = r.images.get_mut(&image.digest) {
                    i.references.remove(reference);
                }
                return Ok(vec![format!("Untagged: {reference}")]);
            }
            let users: Vec<&String> = in_use
                .iter()
                .filter(|u| find(&images, u).is_some_and(|i| i.digest == image.digest))
                .collect();
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image: name.to_string(),
                    users: users
                        .iter()
                        .map(|u| u.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            r.images.remove(&image.digest);
            let mut out: Vec<String> = image
                .references
                .iter()
                .map(|n| format!("Untagged: {n}"))
                .collect();
            out.push(format!("Deleted: {}", image.digest));
            Ok(out)
        })?;
        self.collect_garbage()?;
        Ok(removed)
    }

    /// Removes every image no entry of `in_use` designates; returns them.
    pub fn prune(&self, in_use: &[String]) -> Result<Vec<ImageRecord>, ImageError> {
        let pruned = self.with_records(|r| {
            let images: Vec<ImageRecord> = r.images.values().cloned().collect();
            let used: BTreeSet<&str> = in_use
                .iter()
                .filter_map(|u| find(&images, u).map(|i| i.digest.as_str()))
                .collect();
            let gone: Vec<ImageRecord> = images
                .iter()
                .filter(|i| !used.contains(i.digest.as_str()))
                .cloned()
                .collect();
            for image in &gone {
                r.images.remove(&image.digest);
            }
            Ok(gone)
        })?;
        self.collect_garbage()?;
        Ok(pruned)
    }

    /// Deletes blobs and unpacked layers that no image record names.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let images = self.list()?;
        let keep: BTreeSet<&str> = images
            .iter()
            .flat_map(|i| i.blobs())
            .filter_map(|d| digest_hex(d).ok())
            .collect();
        for dir in ["blobs/sha256", "layers"] {
            let dir = self.root.join(dir);
            let entries = fs::read_dir(&dir).map_err(|e| ImageError::io("list", &dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name == "tmp" || keep.contains(name.as_ref()) {
                    continue;
                }
                let p = entry.path();
                let res = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                res.map_err(|e| ImageError::io("remove", &p, e))?;
            }
        }
        Ok(())
    }
}

/// The record `name` designates (see `Store::get`); pure.
pub fn find<'a>(images: &'a [ImageRecord], name: &str) -> Option<&'a ImageRecord> {
    if let Ok(reference) = ImageRef::parse(name) {
        let full = reference.to_string();
        if let Some(i) = images.iter().find(|i| i.references.contains(&full)) {
            return Some(i);
        }
        if let Some(d) = reference.digest() {
            return images.iter().find(|i| i.digest == d || i.repo_digest == d);
        }
    }
    if digest_hex(name).is_ok() {
        return images
            .iter()
            .find(|i| i.digest == name || i.repo_digest == name || i.config == name);
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut hits = images
            .iter()
            .filter(|i| i.config["sha256:".len()..].starts_with(hex));
        let first = hits.next();
        if hits.next().is_none() {
            return first;
        }
    }
    None
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, refs: &[&str]) -> ImageRecord {
        let d = |c: u8| format!("sha256:{}", format!("{:x}", c % 16).repeat(64));
        ImageRecord {
            digest: d(n),
            repo_digest: d(n),
            references: refs
                .iter()
                .map(|r| ImageRef::parse(r).unwrap().to_string())
                .collect(),
            config: d(n + 1),
            layers: vec![],
            size: 0,
        }
    }

    #[test]
    fn digests_are_checked() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(digest_hex("sha512:abc").is_err());
        assert!(digest_hex("sha256:../../etc").is_err());
    }

    #[test]
    fn names_find_images_as_docker_does() {
        let images = [rec(1, &["nginx", "web:1"]), rec(3, &["host:5000/app:2"])];
        assert_eq!(find(&images, "nginx").unwrap().digest, images[0].digest);
        assert_eq!(
            find(&images, "docker.io/library/web:1").unwrap().digest,
            images[0].digest
        );
        assert_eq!(
            find(&images, "host:5000/app:2").unwrap().digest,
            images[1].digest
        );
        assert!(find(&images, "host:5000/app:3").is_none());
        assert_eq!(
            find(&images, &images[1].digest).unwrap().digest,
            images[1].digest
        );
        let pinned = format!("host:5000/app:9@{}", images[1].repo_digest);
        assert_eq!(find(&images, &pinned).unwrap().digest, images[1].digest);
        assert_eq!(find(&images, "2222").unwrap().digest, images[0].digest);
        assert_eq!(images[1].id(), "444444444444");
        assert!(find(&images, "redis").is_none());
    }
}
