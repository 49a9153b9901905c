//! `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]`, as docker takes it and
//! keeps it (`ContainerSpec.Mounts`). Pure: the agent makes volumes and checks sources.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A path of the node's, bind-mounted.
    Bind,
    /// A named directory in the node's data dir, made at first use and kept after the task.
    Volume,
    /// A tmpfs of the container's own.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: MountType,
    /// The host path (bind) or the volume's name (volume); none for tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// tmpfs only: its size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size_bytes: Option<u64>,
}

impl Mount {
    /// Parses docker's `--mount` syntax: comma-separated `key=value` (`type`, `source` or
    /// `src`, `target`, `destination` or `dst`, `readonly` or `ro` with an optional
    /// true/false, `tmpfs-size` in bytes).
    pub fn parse(s: &str) -> Result<Mount, String> {
        let bad = |why: &str| format!("invalid --mount {s:?}: {why}");
        let (mut kind, mut source, mut target) = (None, None, None);
        let (mut read_only, mut size) = (false, None);
        for field in s.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (field, None),
            };
            match (key, value) {
                ("type", Some(v)) => {
                    kind = Some(match v {
                        "bind" => MountType::Bind,
                        "volume" => MountType::Volume,
                        "tmpfs" => MountType::Tmpfs,
                        _ => return Err(bad(&format!("type {v:?} is not bind, volume or tmpfs"))),
                    })
                }
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_string()),
                ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
                ("readonly" | "ro", Some("false" | "0")) => read_only = false,
                ("tmpfs-size", Some(v)) => {
                    size = Some(
                        v.parse()
                            .map_err(|_| bad("tmpfs-size is a number of bytes"))?,
                    )
                }
                _ => return Err(bad(&format!("unknown or incomplete field {field:?}"))),
            }
        }
        let kind = kind.unwrap_or(MountType::Volume);
        let target = target.ok_or_else(|| bad("target is required"))?;
        if !target.starts_with('/') {
            return Err(bad("target must be an absolute path"));
        }
        match (kind, &source) {
            (MountType::Bind, Some(src)) if !src.starts_with('/') => {
                return Err(bad("a bind source must be an absolute path"));
            }
            (MountType::Bind | MountType::Volume, None) => {
                return Err(bad("source is required for a bind or volume mount"));
            }
            (MountType::Volume, Some(name)) if !valid_volume_name(name) => {
                return Err(bad(
                    "a volume name is letters, digits, '_', '.' or '-', starting with a letter or digit",
                ));
            }
            (MountType::Tmpfs, Some(_)) => return Err(bad("a tmpfs mount has no source")),
            _ => {}
        }
        if size.is_some() && kind != MountType::Tmpfs {
            return Err(bad("tmpfs-size is for tmpfs mounts"));
        }
        Ok(Mount {
            kind,
            source,
            target,
            read_only,
            tmpfs_size_bytes: size,
        })
    }
}

/// docker's rule for volume names (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), which also keeps a name
/// from leaving the volumes directory.
fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_syntax() {
        let m = Mount::parse("type=bind,source=/srv/data,target=/data,readonly").unwrap();
        assert_eq!(
            m,
            Mount {
                kind: MountType::Bind,
                source: Some("/srv/data".into()),
                target: "/data".into(),
                read_only: true,
                tmpfs_size_bytes: None,
            }
        );
        let v = Mount::parse("src=cache,dst=/cache").unwrap();
        assert_eq!(
            (v.kind, v.source.as_deref()),
            (MountType::Volume, Some("cache"))
        );
        let t = Mount::parse("type=tmpfs,target=/run/x,tmpfs-size=1048576").unwrap();
        assert_eq!(t.tmpfs_size_bytes, Some(1 << 20));
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""Type":"bind""#), "{json}");
        assert_eq!(serde_json::from_str::<Mount>(&json).unwrap(), m);
    }

    #[test]
    fn refusals_name_the_mount_and_the_reason() {
        let err = |s| Mount::parse(s).unwrap_err();
        assert_eq!(
            err("type=bind,source=data,target=/d"),
            "invalid --mount \"type=bind,source=data,target=/d\": a bind source must be an absolute path"
        );
        assert!(err("type=volume,source=../x,target=/d").contains("a volume name is"));
        assert!(err("type=tmpfs,source=x,target=/d").contains("a tmpfs mount has no source"));
        assert!(err("type=nfs,target=/d").contains("type \"nfs\" is not bind, volume or tmpfs"));
        assert!(err("source=x").contains("target is required"));
        assert!(err("type=bind,target=/d").contains("source is required"));
    }
}
