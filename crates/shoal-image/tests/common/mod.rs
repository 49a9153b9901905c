//! Small tar layers built in memory, names written raw so that hostile ones ('..', absolute)
//! can be made too (tar-rs' own path setters refuse them).

#![allow(dead_code)]

use std::io::Write;

use tar::{EntryType, Header};

pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: EntryType, mode: u32, size: u64, link: &str) -> Header {
        let mut h = Header::new_gnu();
        let gnu = h.as_gnu_mut().expect("gnu header");
        assert!(name.len() < gnu.name.len() && link.len() < gnu.linkname.len());
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        h
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Layer {
        let h = Self::header(name, EntryType::Directory, mode, 0, "");
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Layer {
        self.file_owned(name, data, 0o644, 0, 0, 1_600_000_000)
    }

    pub fn file_owned(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Layer {
        let mut h = Self::header(name, EntryType::Regular, mode, data.len() as u64, "");
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Layer {
        let h = Self::header(name, EntryType::Symlink, 0o777, 0, target);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn hard_link(mut self, name: &str, target: &str) -> Layer {
        let h = Self::header(name, EntryType::Link, 0o644, 0, target);
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    pub fn node(mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> Layer {
        let mut h = Self::header(name, kind, 0o600, 0, "");
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.builder.append(&h, &[][..]).unwrap();
        self
    }

    /// The uncompressed tar.
    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    /// The tar, gzip-compressed.
    pub fn gzip(self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.tar()).unwrap();
        gz.finish().unwrap()
    }
}
