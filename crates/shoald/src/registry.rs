//! Registry logins on managers (`--with-registry-auth`): sealed with the managers' key
//! before they enter the Raft log, opened by the leader only to hand them, over the session,
//! to the nodes that run the service's tasks. The key is `<data-dir>/registry-auth.key`
//! (root only); the first manager makes it, joining managers get it from the leader.
//! Pinning: the manager resolves a tag to its digest when a service is created or its image
//! changes, as Swarm does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use shoal_api::ServiceOptions;

use crate::errors::DaemonError;
use shoal_image::{AuthConfig, ImageRef, Images, SealKey};
use shoal_types::{ClusterState, Runtime, ServiceSpec, Task, TaskState};
use tracing::warn;

/// The managers' sealing key, loaded (or made) at first use.
pub struct Logins {
    path: PathBuf,
    key: Mutex<Option<Arc<SealKey>>>,
}

impl Logins {
    pub fn new(data_dir: &Path) -> Logins {
        Logins {
            path: key_path(data_dir),
            key: Mutex::new(None),
        }
    }

    pub fn key(&self) -> Result<Arc<SealKey>, shoal_image::ImageError> {
        let mut k = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = &*k {
            return Ok(Arc::clone(k));
        }
        let loaded = Arc::new(SealKey::load_or_create(&self.path)?);
        *k = Some(Arc::clone(&loaded));
        Ok(loaded)
    }

    pub fn seal(&self, auth: &AuthConfig) -> Result<String, DaemonError> {
        self.key()
            .and_then(|k| k.seal_auth(auth))
            .map_err(|e| crate::errors::internal("failed to seal the registry login", e))
    }

    /// The logins of the services of `tasks` (the tasks a node is told about), opened, by
    /// service id. One that cannot be opened is left out with a warning naming the service.
    pub fn for_tasks<'a>(
        &self,
        state: &ClusterState,
        tasks: impl Iterator<Item = &'a Task>,
        opened: &mut HashMap<String, AuthConfig>,
    ) -> BTreeMap<String, AuthConfig> {
        let mut out = BTreeMap::new();
        for t in tasks.filter(|t| t.desired_state <= TaskState::Running) {
            if out.contains_key(&t.service_id) {
                continue;
            }
            let Some(sealed) = state
                .services
                .get(&t.service_id)
                .and_then(|s| s.registry_auth.as_ref())
            else {
                continue;
            };
            if let Some(a) = opened.get(sealed) {
                out.insert(t.service_id.clone(), a.clone());
                continue;
            }
            match self.key().and_then(|k| k.open_auth(sealed)) {
                Ok(a) => {
                    opened.insert(sealed.clone(), a.clone());
                    out.insert(t.service_id.clone(), a);
                }
                Err(e) => {
                    warn!(service = %t.service_id, "registry login not handed to the node: {e}")
                }
            }
        }
        out
    }
}

/// Where a manager keeps the sealing key.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("registry-auth.key")
}

/// docker's warning when a tag cannot be pinned (its words, then why).
pub fn unpinned_warning(image: &str, why: &str) -> String {
    format!(
        "image {image} could not be accessed on a registry to record\nits digest. Each node \
         will access {image} independently,\npossibly leading to different nodes running \
         different\nversions of the image.\n({why})"
    )
}

/// What `service create|update` does with the image before the spec is proposed: pins a tag
/// to the digest the registry has now (unless `--no-resolve-image`, or the reference has a
/// digest), and reads the login. Returns the warnings for the user and the login, if any.
pub async fn prepare_image(
    images: Result<Images, DaemonError>,
    spec: &mut ServiceSpec,
    opts: &ServiceOptions,
) -> Result<(Vec<String>, Option<AuthConfig>), DaemonError> {
    let cs = &mut spec.task_template.container_spec;
    if cs.runtime != Runtime::Oci {
        return Ok((vec![], None));
    }
    let given = cs.image.clone().unwrap_or_default();
    let reference = ImageRef::parse(&given).map_err(|e| DaemonError::Invalid(e.to_string()))?;
    let auth = match &opts.registry_auth {
        Some(h) => {
            Some(AuthConfig::from_header(h).map_err(|e| DaemonError::Invalid(e.to_string()))?)
        }
        None => None,
    };
    if !opts.query_registry || reference.digest().is_some() {
        return Ok((vec![], auth));
    }
    let images = images?;
    let creds = auth.as_ref().map(AuthConfig::credentials);
    match images.resolve(&reference, creds.as_ref()).await {
        Ok(digest) => {
            cs.image = Some(format!("{}@{digest}", reference.familiar()));
            Ok((vec![], auth))
        }
        Err(e) => Ok((vec![unpinned_warning(&given, &e.to_string())], auth)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_is_dockers() {
        let w = unpinned_warning("reg:5000/app:1", "cannot reach registry reg:5000");
        assert!(w.starts_with(
            "image reg:5000/app:1 could not be accessed on a registry to record\nits digest. \
             Each node will access reg:5000/app:1 independently,\npossibly leading to \
             different nodes running different\nversions of the image.\n"
        ));
        assert!(w.ends_with("(cannot reach registry reg:5000)"));
    }

    fn prepare(
        image: &str,
        opts: ServiceOptions,
    ) -> Result<(String, Vec<String>, bool), DaemonError> {
        let mut spec = shoal_types::fixtures::spec("a", 1);
        let cs = &mut spec.task_template.container_spec;
        cs.runtime = Runtime::Oci;
        cs.image = Some(image.into());
        // No image store: any call to a registry would fail the test with this error.
        let none = Err(DaemonError::Unavailable(
            "no registry may be asked here".into(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (warnings, login) = rt.block_on(prepare_image(none, &mut spec, &opts))?;
        let image = spec.task_template.container_spec.image.unwrap_or_default();
        Ok((image, warnings, login.is_some()))
    }

    #[test]
    fn a_digest_given_or_no_resolve_keeps_the_reference_and_reads_the_login() {
        let d = format!("sha256:{}", "a".repeat(64));
        let pinned = format!("reg:5000/app:1@{d}");
        let (image, warnings, login) = prepare(&pinned, ServiceOptions::default()).unwrap();
        assert_eq!(
            (image.as_str(), warnings.len(), login),
            (pinned.as_str(), 0, false)
        );
        let auth = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "reg:5000".into(),
        };
        let opts = ServiceOptions {
            query_registry: false,
            registry_auth: Some(auth.to_header()),
            version: None,
        };
        let (image, _, login) = prepare("reg:5000/app:1", opts).unwrap();
        assert_eq!((image.as_str(), login), ("reg:5000/app:1", true));
        let bad = ServiceOptions {
            query_registry: false,
            registry_auth: Some("%%".into()),
            version: None,
        };
        let err = shoal_api::ApiError::from(prepare("reg:5000/app:1", bad).unwrap_err());
        assert_eq!(err.status, 400);
        // A tag to resolve does ask (here: the store that is not there).
        let err = prepare("reg:5000/app:1", ServiceOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "no registry may be asked here");
    }

    #[test]
    fn logins_open_for_the_tasks_services_only() {
        let dir = tempfile::tempdir().unwrap();
        let logins = Logins::new(dir.path());
        let auth = AuthConfig {
            username: "alice".into(),
            password: "pw".into(),
            server_address: "r:1".into(),
        };
        let mut state = ClusterState::default();
        let mut with = shoal_types::fixtures::service("s1", shoal_types::fixtures::spec("a", 1));
        with.registry_auth = Some(logins.seal(&auth).unwrap());
        let without = shoal_types::fixtures::service("s2", shoal_types::fixtures::spec("b", 1));
        state.services.insert("s1".into(), with);
        state.services.insert("s2".into(), without);
        let mut t1 = shoal_types::fixtures::task("t1", "s1", "a");
        t1.desired_state = TaskState::Running;
        let mut t2 = shoal_types::fixtures::task("t2", "s2", "b");
        t2.desired_state = TaskState::Running;
        let mut cache = HashMap::new();
        let got = logins.for_tasks(&state, [&t1, &t2].into_iter(), &mut cache);
        assert_eq!(got.len(), 1);
        assert_eq!(got["s1"], auth);
        // Another manager's key (a damaged or replaced file) opens nothing.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Logins::new(other_dir.path());
        assert!(
            other
                .for_tasks(&state, [&t1].into_iter(), &mut HashMap::new())
                .is_empty()
        );
    }
}
