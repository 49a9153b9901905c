//! Choosing the node's platform from an image index (pure).

use oci_client::manifest::ImageIndexEntry;

/// A platform as an image index names it: `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine this runs on, spelled as OCI spells it (Go's GOARCH).
    pub fn node() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn entry_platform(entry: &ImageIndexEntry) -> Option<Platform> {
    entry.platform.as_ref().map(|p| Platform {
        os: p.os.to_string(),
        architecture: p.architecture.to_string(),
        variant: p.variant.clone(),
    })
}

/// The digest of the entry for `want`, or the list of platforms the index has (`unknown` for
/// entries without one, such as attestation manifests). A wanted variant must match; without
/// one, the first entry of the os and architecture wins (what docker does for amd64).
pub fn select(entries: &[ImageIndexEntry], want: &Platform) -> Result<String, Vec<String>> {
    let matches = |p: &Platform| {
        p.os == want.os
            && p.architecture == want.architecture
            && (want.variant.is_none() || p.variant == want.variant)
    };
    entries
        .iter()
        .find(|e| entry_platform(e).is_some_and(|p| matches(&p)))
        .map(|e| e.digest.clone())
        .ok_or_else(|| {
            entries
                .iter()
                .map(|e| entry_platform(e).map_or("unknown".into(), |p| p.to_string()))
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platform: Option<(&str, &str, Option<&str>)>) -> ImageIndexEntry {
        let platform = platform.map(|(os, arch, variant)| {
            serde_json::from_value(serde_json::json!({
                "os": os, "architecture": arch, "variant": variant,
            }))
            .unwrap()
        });
        ImageIndexEntry {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 1,
            platform,
            annotations: None,
            artifact_type: None,
        }
    }

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn picks_linux_amd64_among_others() {
        let entries = [
            entry("sha256:arm", Some(("linux", "arm64", Some("v8")))),
            entry("sha256:att", None),
            entry("sha256:win", Some(("windows", "amd64", None))),
            entry("sha256:amd", Some(("linux", "amd64", None))),
        ];
        assert_eq!(select(&entries, &amd64()), Ok("sha256:amd".into()));
    }

    #[test]
    fn a_wanted_variant_must_match() {
        let entries = [
            entry("sha256:v7", Some(("linux", "arm", Some("v7")))),
            entry("sha256:v6", Some(("linux", "arm", Some("v6")))),
        ];
        let want = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v6".into()),
        };
        assert_eq!(select(&entries, &want), Ok("sha256:v6".into()));
    }

    #[test]
    fn without_the_platform_the_error_lists_what_there_is() {
        let entries = [
            entry("sha256:arm", Some(("linux", "arm64", Some("v8")))),
            entry("sha256:att", None),
        ];
        assert_eq!(
            select(&entries, &amd64()),
            Err(vec!["linux/arm64/v8".to_string(), "unknown".to_string()])
        );
    }

    #[test]
    fn node_platform_is_linux() {
        assert_eq!(Platform::node().os, "linux");
        assert_eq!(amd64().to_string(), "linux/amd64");
    }
}
