//! What a layer's tar entry name means, per the OCI image layer spec (pure): a path inside the
//! layer, a whiteout, or an opaque-directory marker. Names that would land outside the layer
//! root are refused here, before anything touches the disk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// An entry's meaning. Paths are relative to the layer root and made of normal components
/// only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The layer root itself (`./`): nothing to create.
    Root,
    /// A file, directory, link or device at this path.
    Path(PathBuf),
    /// `dir/.wh.name`: `dir/name` of the layers below is deleted. On disk an overlayfs
    /// whiteout (a 0/0 character device) named `name`.
    Whiteout(PathBuf),
    /// `dir/.wh..wh..opq`: the lower layers' contents of `dir` are hidden. On disk the
    /// `trusted.overlay.opaque` xattr on `dir`.
    Opaque(PathBuf),
    /// Other `.wh..wh.` names (aufs bookkeeping such as `.wh..wh.plnk`): skipped, as docker
    /// skips them.
    Skip,
}

/// Interprets a tar entry name. The error is the reason it is refused.
pub fn classify(name: &[u8]) -> Result<Target, String> {
    let path = normal_path(name)?;
    let Some(file) = path.file_name() else {
        return Ok(Target::Root);
    };
    let file = file.as_bytes();
    if file == OPAQUE {
        return Ok(Target::Opaque(
            path.parent().unwrap_or(Path::new("")).into(),
        ));
    }
    if file.starts_with(b".wh..wh.") {
        return Ok(Target::Skip);
    }
    if let Some(hidden) = file.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err("is a whiteout of nothing".into());
        }
        return Ok(Target::Whiteout(
            path.with_file_name(OsStr::from_bytes(hidden)),
        ));
    }
    if path
        .components()
        .any(|c| c.as_os_str().as_bytes().starts_with(WHITEOUT_PREFIX))
    {
        return Err("has a whiteout marker as a directory".into());
    }
    Ok(Target::Path(path))
}

/// The target of a hard link entry: a path inside the same layer.
pub fn hard_link_target(name: &[u8]) -> Result<PathBuf, String> {
    let path = normal_path(name).map_err(|r| format!("links to a target that {r}"))?;
    if path.as_os_str().is_empty() {
        return Err("links to the layer root".into());
    }
    Ok(path)
}

/// `./a/b/` → `a/b`. Absolute names and `..` are refused: layers are applied at their root,
/// and docker's `..` handling differs by version, so nothing ambiguous is accepted.
fn normal_path(name: &[u8]) -> Result<PathBuf, String> {
    if name.contains(&0) {
        return Err("has a NUL byte in its name".into());
    }
    let path = Path::new(OsStr::from_bytes(name));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path (outside the layer root)".into());
            }
            Component::ParentDir => {
                return Err("has a '..' component (outside the layer root)".into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn plain_names_are_normalised() {
        assert_eq!(classify(b"./bin/sh"), Ok(Target::Path(p("bin/sh"))));
        assert_eq!(classify(b"etc/"), Ok(Target::Path(p("etc"))));
        assert_eq!(classify(b"a/./b"), Ok(Target::Path(p("a/b"))));
        assert_eq!(classify(b"./"), Ok(Target::Root));
        assert_eq!(classify(b"."), Ok(Target::Root));
    }

    #[test]
    fn whiteouts_map_to_overlayfs_markers() {
        assert_eq!(
            classify(b"etc/.wh.passwd"),
            Ok(Target::Whiteout(p("etc/passwd")))
        );
        assert_eq!(classify(b"./.wh.tmp"), Ok(Target::Whiteout(p("tmp"))));
        assert_eq!(
            classify(b"var/cache/.wh..wh..opq"),
            Ok(Target::Opaque(p("var/cache")))
        );
        assert_eq!(classify(b".wh..wh..opq"), Ok(Target::Opaque(p(""))));
        assert_eq!(
            classify(b".wh..wh.plnk/123.456"),
            Err("has a whiteout marker as a directory".into())
        );
        assert_eq!(classify(b".wh..wh.plnk"), Ok(Target::Skip));
        assert_eq!(classify(b"a/.wh."), Err("is a whiteout of nothing".into()));
        assert_eq!(
            classify(b"a/.wh..."),
            Err("is a whiteout of nothing".into())
        );
    }

    #[test]
    fn escapes_are_refused() {
        let abs = Err("is an absolute path (outside the layer root)".to_string());
        let up = Err("has a '..' component (outside the layer root)".to_string());
        assert_eq!(classify(b"/etc/passwd"), abs);
        assert_eq!(classify(b"../evil"), up);
        assert_eq!(classify(b"a/../../evil"), up);
        assert_eq!(classify(b"a/.wh.."), Err("is a whiteout of nothing".into()));
        assert_eq!(classify(b"../.wh.x"), up);
        assert_eq!(
            hard_link_target(b"../../etc/shadow"),
            Err("links to a target that has a '..' component (outside the layer root)".into())
        );
        assert_eq!(
            hard_link_target(b"/etc/shadow"),
            Err("links to a target that is an absolute path (outside the layer root)".into())
        );
        assert_eq!(hard_link_target(b"./bin/busybox"), Ok(p("bin/busybox")));
        assert_eq!(
            hard_link_target(b"./"),
            Err("links to the layer root".into())
        );
    }
}
