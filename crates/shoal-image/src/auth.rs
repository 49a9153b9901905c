//! Registry credentials as the docker CLI keeps them: `~/.docker/config.json` (or
//! `$DOCKER_CONFIG/config.json`), `auths` mapping a server to base64 `user:pass`. shoal reads
//! what `docker login` wrote and writes the same format, leaving every other key as it was.
//!
//! `DockerConfig` and `AuthConfig` are pure; `config_path`, `DockerConfig::load` and
//! `DockerConfig::save` touch files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ImageError;
use crate::pull::Credentials;

/// The key `docker login` uses for Docker Hub.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// One registry's login as the docker API carries it (`X-Registry-Auth`, base64url JSON)
/// and as shoal hands it to a node. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default, rename = "serveraddress")]
    pub server_address: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server_address", &self.server_address)
            .finish()
    }
}

impl AuthConfig {
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.username.clone(), self.password.clone())
    }

    /// The `X-Registry-Auth` header value (base64url of the JSON, as docker sends it).
    pub fn to_header(&self) -> String {
        URL_SAFE.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads an `X-Registry-Auth` value (base64url, padded or not, or standard base64).
    pub fn from_header(value: &str) -> Result<AuthConfig, ImageError> {
        let bad = |detail: String| ImageError::BadAuth(format!("X-Registry-Auth: {detail}"));
        let trimmed = value.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(trimmed)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
            .map_err(|e| bad(format!("not base64: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not an auth config: {e}")))
    }
}

/// The server key `docker login` writes for `registry` (`host[:port]` as in a reference;
/// `docker.io` is Docker Hub's `https://index.docker.io/v1/`).
pub fn server_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

/// `https://host:5000/v2/` → `host:5000`: how docker matches a config key to a registry.
fn hostname(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// A docker CLI config file's content. Keys shoal does not know are kept as they were.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerConfig {
    root: Map<String, Value>,
}

impl DockerConfig {
    pub fn parse(text: &str) -> Result<DockerConfig, String> {
        if text.trim().is_empty() {
            return Ok(DockerConfig::default());
        }
        match serde_json::from_str(text) {
            Ok(Value::Object(root)) => Ok(DockerConfig { root }),
            Ok(_) => Err("it is not a JSON object".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn render(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.root).unwrap_or_default();
        text.push('\n');
        text
    }

    fn auths(&self) -> Option<&Map<String, Value>> {
        self.root.get("auths").and_then(Value::as_object)
    }

    /// The key of `registry`'s entry: exactly its server key, else one naming the same host
    /// (`https://host:5000`, `http://host:5000/v2/`).
    fn key_of(&self, registry: &str) -> Option<String> {
        let wanted = server_key(registry);
        let auths = self.auths()?;
        if auths.contains_key(&wanted) {
            return Some(wanted);
        }
        let host = hostname(&wanted);
        auths.keys().find(|k| hostname(k) == host).cloned()
    }

    /// The login stored for `registry`, if any. An entry whose `auth` does not decode is an
    /// error naming the server.
    pub fn get(&self, registry: &str) -> Result<Option<AuthConfig>, String> {
        let Some(key) = self.key_of(registry) else {
            return Ok(None);
        };
        let entry = &self.auths().and_then(|a| a.get(&key)).cloned();
        let Some(auth) = entry
            .as_ref()
            .and_then(|e| e.get("auth"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let bad = || {
            format!(
                "the stored login for {key} is not base64 \"user:password\"; run `shoal login {registry}` again"
            )
        };
        let plain = STANDARD.decode(auth).map_err(|_| bad())?;
        let plain = String::from_utf8(plain).map_err(|_| bad())?;
        let (user, pass) = plain.split_once(':').ok_or_else(bad)?;
        Ok(Some(AuthConfig {
            username: user.to_string(),
            password: pass.to_string(),
            server_address: key,
        }))
    }

    /// Stores a login for `registry` under its server key, as `docker login` does.
    pub fn set(&mut self, registry: &str, username: &str, password: &str) {
        if let Some(old) = self.key_of(registry) {
            self.remove_key(&old);
        }
        let auths = self
            .root
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(a) = auths {
            let auth = STANDARD.encode(format!("{username}:{password}"));
            a.insert(server_key(registry), serde_json::json!({ "auth": auth }));
        }
    }

    /// Forgets `registry`'s login; whether there was one.
    pub fn remove(&mut self, registry: &str) -> bool {
        match self.key_of(registry) {
            Some(key) => self.remove_key(&key),
            None => false,
        }
    }

    fn remove_key(&mut self, key: &str) -> bool {
        self.root
            .get_mut("auths")
            .and_then(Value::as_object_mut)
            .is_some_and(|a| a.remove(key).is_some())
    }

    /// Reads the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig, ImageError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ImageError::io("read", path, e)),
        };
        DockerConfig::parse(&text).map_err(|detail| {
            ImageError::BadAuth(format!(
                "{} does not parse: {detail}; fix or remove it",
                path.display()
            ))
        })
    }

    /// Writes the file at `path` readable by its owner alone (it holds passwords), through a
    /// temporary file renamed into place.
    pub fn save(&self, path: &Path) -> Result<(), ImageError> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            fs::create_dir_all(dir).map_err(|e| ImageError::io("create", dir, e))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        let tmp = path.with_extension("json.tmp");
        crate::seal::write_private(path, &tmp, self.render().as_bytes())
    }
}

/// Where the docker CLI keeps its config: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".docker").join("config.json")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What `docker login 127.0.0.1:5000` (user `alice`, password `s3cret`) and `docker
    // login` to Docker Hub write, with a key shoal does not know.
    const WRITTEN_BY_DOCKER: &str = r#"{
        "auths": {
                "127.0.0.1:5000": { "auth": "YWxpY2U6czNjcmV0" },
                "https://index.docker.io/v1/": { "auth": "Ym9iOmh1YjpwYXNz" }
        },
        "psFormat": "table {{.ID}}"
}"#;

    #[test]
    fn reads_what_docker_login_wrote() {
        let c = DockerConfig::parse(WRITTEN_BY_DOCKER).unwrap();
        let a = c.get("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("alice", "s3cret")
        );
        assert_eq!(a.server_address, "127.0.0.1:5000");
        // A password may hold ':'; only the first one splits.
        let hub = c.get("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("bob", "hub:pass")
        );
        assert_eq!(c.get("10.1.1.1:5000").unwrap(), None);
        assert_eq!(DockerConfig::parse("").unwrap().get("x").unwrap(), None);
    }

    #[test]
    fn matches_keys_written_with_a_scheme_or_path() {
        let c = DockerConfig::parse(r#"{"auths":{"https://reg.lab:5000/v2/":{"auth":"dTpw"}}}"#)
            .unwrap();
        assert_eq!(c.get("reg.lab:5000").unwrap().unwrap().username, "u");
        assert_eq!(c.get("reg.lab:5001").unwrap(), None);
    }

    #[test]
    fn writes_the_same_format_and_keeps_other_keys() {
        let mut c = DockerConfig::parse(WRITTEN_BY_DOCKER).unwrap();
        c.set("10.0.0.1:5000", "carol", "pw:x");
        let again = DockerConfig::parse(&c.render()).unwrap();
        let v: Value = serde_json::from_str(&c.render()).unwrap();
        assert_eq!(v["auths"]["10.0.0.1:5000"]["auth"], "Y2Fyb2w6cHc6eA==");
        assert_eq!(v["psFormat"], "table {{.ID}}");
        assert_eq!(
            again.get("10.0.0.1:5000").unwrap().unwrap().password,
            "pw:x"
        );
        // A new login replaces the old one, also under another spelling of the key.
        c.set("docker.io", "dave", "p");
        let v: Value = serde_json::from_str(&c.render()).unwrap();
        assert_eq!(v["auths"][DOCKER_HUB]["auth"], STANDARD.encode("dave:p"));
        assert!(c.remove("127.0.0.1:5000"));
        assert!(!c.remove("127.0.0.1:5000"));
        assert_eq!(c.get("127.0.0.1:5000").unwrap(), None);
    }

    #[test]
    fn a_broken_entry_says_to_log_in_again() {
        let c = DockerConfig::parse(r#"{"auths":{"r:1":{"auth":"!!"}}}"#).unwrap();
        assert!(
            c.get("r:1")
                .unwrap_err()
                .contains("run `shoal login r:1` again")
        );
        assert!(DockerConfig::parse("[1]").is_err());
    }

    #[test]
    fn header_round_trips_and_debug_hides_the_password() {
        let a = AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            server_address: "127.0.0.1:5000".into(),
        };
        assert_eq!(AuthConfig::from_header(&a.to_header()).unwrap(), a);
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(AuthConfig::from_header("%%%").is_err());
    }

    #[test]
    fn save_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/config.json");
        let mut c = DockerConfig::default();
        c.set("r:1", "u", "p");
        c.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(DockerConfig::load(&path).unwrap(), c);
        assert_eq!(
            DockerConfig::load(&dir.path().join("none")).unwrap(),
            DockerConfig::default()
        );
    }
}
