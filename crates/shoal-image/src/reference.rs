//! Image references, normalised as docker normalises them (pure).
//!
//! The parsing is oci-spec's distribution `Reference` (re-exported by oci-client), a port of
//! docker's own normaliser: `nginx` → `docker.io/library/nginx:latest`. What it does not do
//! as docker does is word its errors: it says "invalid reference format" for an uppercase
//! repository, so `parse` adds docker's reason.

use std::net::Ipv4Addr;

use oci_client::Reference;

use crate::ImageError;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef(Reference);

impl ImageRef {
    /// Parses `input` as docker does. Errors name the input and what is wrong with it.
    pub fn parse(input: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            input: input.to_string(),
            reason,
        };
        if input.trim() != input || input.is_empty() {
            return Err(invalid(
                "a reference has no spaces and is not empty (example: nginx:1.27)".into(),
            ));
        }
        match Reference::try_from(input) {
            Ok(r) => Ok(ImageRef(r)),
            Err(e) => {
                let lower = input.to_ascii_lowercase();
                if lower != input && Reference::try_from(lower.as_str()).is_ok() {
                    Err(invalid("repository name must be lowercase".into()))
                } else {
                    Err(invalid(e.to_string()))
                }
            }
        }
    }

    /// `host[:port]`, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The registry as addressed on the wire (`index.docker.io` for Docker Hub).
    pub fn registry_address(&self) -> &str {
        self.0.resolve_registry()
    }

    /// `library/nginx`.
    pub fn repository(&self) -> &str {
        self.0.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// The repository as docker names it in "pull access denied for …": without the default
    /// registry and its `library/` (`nginx`, `127.0.0.1:5000/team/app`).
    pub fn familiar_name(&self) -> String {
        if self.registry() == "docker.io" {
            self.repository()
                .strip_prefix("library/")
                .unwrap_or(self.repository())
                .to_string()
        } else {
            format!("{}/{}", self.registry(), self.repository())
        }
    }

    /// The same image pinned to `digest`, tag kept: `host/app:1@sha256:…` (what a service
    /// is pinned to).
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef(match self.tag() {
            Some(tag) => Reference::with_tag_and_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
                digest.to_string(),
            ),
            None => self.0.clone_with_digest(digest.to_string()),
        })
    }

    /// The reference without its digest when it has a tag (`host/app:1@sha256:…` →
    /// `host/app:1`): the name a pull records, so `image ls` shows the tag and `image rm
    /// host/app:1` finds what a pinned task pulled.
    pub fn tagged(&self) -> ImageRef {
        match (self.tag(), self.digest()) {
            (Some(tag), Some(_)) => ImageRef(Reference::with_tag(
                self.registry().to_string(),
                self.repository().to_string(),
                tag.to_string(),
            )),
            _ => self.clone(),
        }
    }

    /// docker's short form of the image (`service ps` and `image ls`): familiar name and
    /// tag, no digest (`busybox:latest`, `127.0.0.1:5000/app:1`); only the digest when there
    /// is no tag.
    pub fn familiar(&self) -> String {
        match (self.tag(), self.digest()) {
            (Some(tag), _) => format!("{}:{tag}", self.familiar_name()),
            (None, Some(d)) => format!("{}@{d}", self.familiar_name()),
            (None, None) => self.familiar_name(),
        }
    }

    pub(crate) fn inner(&self) -> &Reference {
        &self.0
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Whether `registry` (`host[:port]`) is spoken to over plain HTTP: when listed in `insecure`
/// (as given to `--insecure-registry`, `host[:port]`) or when its host is a 127.0.0.0/8
/// address or `localhost`, as docker does. Everything else is HTTPS.
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|i| i == registry) {
        return true;
    }
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    if insecure.iter().any(|i| i == host) {
        return true;
    }
    host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_as_docker() {
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(norm("anoy/vote"), "docker.io/anoy/vote:latest");
        assert_eq!(
            norm("index.docker.io/anoy/vote"),
            "docker.io/anoy/vote:latest"
        );
        assert_eq!(norm("host:5000/team/app:tag"), "host:5000/team/app:tag");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(
            norm("registry.example.com/anoy/vote"),
            "registry.example.com/anoy/vote:latest"
        );
        assert_eq!(
            norm(&format!("nginx@{D}")),
            format!("docker.io/library/nginx@{D}")
        );
        assert_eq!(
            norm(&format!("host:5000/app:1@{D}")),
            format!("host:5000/app:1@{D}")
        );
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.registry_address(), "index.docker.io");
        assert_eq!(r.familiar_name(), "nginx");
        let r = ImageRef::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/team/app");
        assert_eq!((r.repository(), r.tag()), ("team/app", Some("latest")));
    }

    #[test]
    fn pinning_keeps_the_tag() {
        let r = ImageRef::parse("host:5000/app:1").unwrap();
        assert_eq!(r.pinned(D).to_string(), format!("host:5000/app:1@{D}"));
        assert_eq!(r.pinned(D).digest(), Some(D));
        assert_eq!(r.pinned(D).tagged(), r);
        let by_digest = ImageRef::parse(&format!("host:5000/app@{D}")).unwrap();
        assert_eq!(by_digest.tagged(), by_digest);
    }

    #[test]
    fn familiar_form_drops_the_pin_as_docker_ps_does() {
        let f = |s: &str| ImageRef::parse(s).unwrap().familiar();
        assert_eq!(f(&format!("busybox:latest@{D}")), "busybox:latest");
        assert_eq!(f("docker.io/library/nginx"), "nginx:latest");
        assert_eq!(f(&format!("host:5000/app:1@{D}")), "host:5000/app:1");
        assert_eq!(
            f(&format!("host:5000/app@{D}")),
            format!("host:5000/app@{D}")
        );
    }

    fn refused(s: &str) -> String {
        ImageRef::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn refuses_invalid_names_naming_input_and_reason() {
        assert_eq!(
            refused("Nginx"),
            r#"invalid reference format "Nginx": repository name must be lowercase"#
        );
        assert_eq!(
            refused("host:5000/Team/app"),
            r#"invalid reference format "host:5000/Team/app": repository name must be lowercase"#
        );
        assert_eq!(
            refused("nginx:bad tag"),
            r#"invalid reference format "nginx:bad tag": invalid reference format"#
        );
        assert_eq!(
            refused("app@sha256:abc"),
            r#"invalid reference format "app@sha256:abc": invalid reference format"#
        );
        let short = format!("app@sha256:{}", "a".repeat(40));
        assert_eq!(
            refused(&short),
            format!("invalid reference format {short:?}: invalid checksum digest length")
        );
        assert_eq!(
            refused(""),
            r#"invalid reference format "": a reference has no spaces and is not empty (example: nginx:1.27)"#
        );
        assert!(refused("a/$$/b").contains("\"a/$$/b\""));
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let insecure = vec!["reg.lab:5000".to_string(), "10.0.0.9".to_string()];
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("127.8.9.10", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("reg.lab:5000", &insecure));
        assert!(plain_http("10.0.0.9:5000", &insecure));
        assert!(!plain_http("reg.lab:5001", &insecure));
        assert!(!plain_http("128.0.0.1:5000", &[]));
        assert!(!plain_http("docker.io", &insecure));
    }
}
