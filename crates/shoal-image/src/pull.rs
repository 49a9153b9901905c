//! `Images`: the node's image service. Pulls with oci-client (rustls, ring), one pull per
//! image at a time however many callers ask, one download and one unpack per blob.

use crate::progress::{Counting, Progress};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{self as mt, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;

use crate::error::{ImageError, from_registry};
use crate::platform::{self, Platform};
use crate::reference::{ImageRef, plain_http};
use crate::store::{ImageRecord, Store};

const ACCEPT: &[&str] = &[
    mt::IMAGE_MANIFEST_MEDIA_TYPE,
    mt::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    mt::OCI_IMAGE_MEDIA_TYPE,
    mt::OCI_IMAGE_INDEX_MEDIA_TYPE,
];

/// Layer media types this node unpacks (tar, gzip-compressed or not).
const LAYER_TYPES: &[&str] = &[
    mt::IMAGE_LAYER_MEDIA_TYPE,
    mt::IMAGE_LAYER_GZIP_MEDIA_TYPE,
    mt::IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE,
    mt::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE,
    mt::IMAGE_LAYER_NONDISTRIBUTABLE_MEDIA_TYPE,
    mt::IMAGE_LAYER_NONDISTRIBUTABLE_GZIP_MEDIA_TYPE,
];

/// Concurrent layer downloads per pull (docker's default).
const DOWNLOADS: usize = 3;

/// Registry credentials (`docker login`'s). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Counters of registry traffic, for tests and `node inspect`-style reporting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    pub manifests_fetched: u64,
    pub blobs_fetched: u64,
    pub layers_unpacked: u64,
}

type PullFuture = Shared<BoxFuture<'static, Result<ImageRecord, ImageError>>>;

/// The node's images: pulls, the store, list/remove/prune. Cheap to clone.
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    insecure: Vec<String>,
    platform: Platform,
    /// Pulls in progress by normalised reference: a second caller awaits the first's.
    inflight: Mutex<HashMap<String, PullFuture>>,
    /// How far each of those pulls is, by the same key.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// One lock per blob digest, so two images sharing a layer fetch and unpack it once.
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls hold it shared; remove and prune exclusively, so that garbage collection never
    /// deletes a blob a pull has fetched but not yet recorded.
    gc: tokio::sync::RwLock<()>,
    manifests: AtomicU64,
    blobs: AtomicU64,
    unpacked: AtomicU64,
}

impl Images {
    /// `insecure`: registries (`host[:port]`, as `--insecure-registry`) spoken to over plain
    /// HTTP; loopback registries always are.
    pub fn new(store: Store, insecure: Vec<String>) -> Images {
        // reqwest is built without a bundled crypto provider; ring is already in the tree.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Images {
            inner: Arc::new(Inner {
                store,
                insecure,
                platform: Platform::node(),
                inflight: Mutex::default(),
                progress: Mutex::default(),
                blob_locks: Mutex::default(),
                gc: tokio::sync::RwLock::new(()),
                manifests: AtomicU64::new(0),
                blobs: AtomicU64::new(0),
                unpacked: AtomicU64::new(0),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn stats(&self) -> PullStats {
        PullStats {
            manifests_fetched: self.inner.manifests.load(Ordering::Relaxed),
            blobs_fetched: self.inner.blobs.load(Ordering::Relaxed),
            layers_unpacked: self.inner.unpacked.load(Ordering::Relaxed),
        }
    }

    /// The digest the registry has for `reference` now (an index's digest for a
    /// multi-platform image): what a service is pinned to.
    pub async fn resolve(
        &self,
        reference: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<String, ImageError> {
        let (client, auth) = self.inner.client(reference, credentials)?;
        let (_, digest) = self
            .inner
            .manifest(&client, &auth, reference, reference.inner())
            .await?;
        Ok(digest)
    }

    /// Pulls `reference` unless the store has it (by digest); concurrent calls for the same
    /// reference share one pull and its outcome.
    pub async fn pull(
        &self,
        reference: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<ImageRecord, ImageError> {
        let key = reference.to_string();
        let pull = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(pull) => pull.clone(),
                None => {
                    let inner = self.inner.clone();
                    let (r, c, k) = (reference.clone(), credentials.cloned(), key.clone());
                    let progress = Arc::new(Progress::default());
                    self.inner
                        .progress
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), Arc::clone(&progress));
                    // Spawned so a caller that gives up does not cancel the others' pull. It
                    // removes its entry under the lock this function still holds, so never
                    // before the entry is there.
                    let task = tokio::spawn(async move {
                        let out = inner.pull_now(&r, c.as_ref(), &progress).await;
                        inner
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&k);
                        inner
                            .progress
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&k);
                        out
                    });
                    let registry = reference.registry().to_string();
                    let whole = key.clone();
                    let pull = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(ImageError::Registry {
                                registry,
                                reference: whole,
                                detail: format!("the pull stopped: {e}"),
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, pull.clone());
                    pull
                }
            }
        };
        pull.await
    }

    /// How far the pull of `reference` in progress is: (bytes of layers fetched, their
    /// total; 0 until the manifest is read), or `None` when it is not being pulled.
    pub fn progress(&self, reference: &ImageRef) -> Option<(u64, u64)> {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&reference.to_string())
            .map(|p| p.get())
    }

    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        self.inner.store.list()
    }

    /// See `Store::remove`; waits for pulls in progress.
    pub async fn remove(&self, name: &str, in_use: &[String]) -> Result<Vec<String>, ImageError> {
        let _gc = self.inner.gc.write().await;
        let (name, in_use) = (name.to_string(), in_use.to_vec());
        self.inner.blocking(move |s| s.remove(&name, &in_use)).await
    }

    /// See `Store::prune`; waits for pulls in progress.
    pub async fn prune(&self, in_use: &[String]) -> Result<Vec<ImageRecord>, ImageError> {
        let _gc = self.inner.gc.write().await;
        let in_use = in_use.to_vec();
        self.inner.blocking(move |s| s.prune(&in_use)).await
    }
}

#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(Deserialize)]
struct Rootfs {
    diff_ids: Vec<String>,
}

impl Inner {
    /// Runs store work (hashing, unpacking, renames) off the async threads.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, ImageError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me.store))
            .await
            .unwrap_or_else(|e| {
                Err(ImageError::Corrupt {
                    path: self.store.root().to_path_buf(),
                    detail: format!("store work stopped: {e}"),
                })
            })
    }

    fn client(
        &self,
        reference: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<(Client, RegistryAuth), ImageError> {
        let protocol = if plain_http(reference.registry(), &self.insecure) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| ImageError::Registry {
            registry: reference.registry().to_string(),
            reference: reference.to_string(),
            detail: format!("cannot set up a client: {e}"),
        })?;
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok((client, auth))
    }

    fn registry_err(
        &self,
        reference: &ImageRef,
        auth: &RegistryAuth,
    ) -> impl Fn(oci_client::errors::OciDistributionError) -> ImageError {
        let (registry, repo, whole) = (
            reference.registry().to_string(),
            reference.familiar_name(),
            reference.to_string(),
        );
        let user = match auth {
            RegistryAuth::Basic(u, _) => Some(u.clone()),
            _ => None,
        };
        move |e| from_registry(e, &registry, &repo, &whole, user.as_deref())
    }

    /// Fetches the manifest `target` names (verified against its digest by the client),
    /// stores it and returns it with its digest.
    async fn manifest(
        self: &Arc<Self>,
        client: &Client,
        auth: &RegistryAuth,
        reference: &ImageRef,
        target: &Reference,
    ) -> Result<(OciManifest, String), ImageError> {
        let (bytes, digest) = match client.pull_manifest_raw(target, auth, ACCEPT).await {
            Ok(found) => found,
            Err(e) => {
                let err = self.registry_err(reference, auth)(e);
                // The distribution registry answers "manifest unknown" for a repository it
                // does not have at all; its tag list tells the two apart, and a missing
                // repository gets docker's "pull access denied" (what Docker Hub answers).
                if matches!(err, ImageError::ManifestUnknown { .. })
                    && let Err(e) = client.list_tags(target, auth, Some(1), None).await
                {
                    let tags_err = self.registry_err(reference, auth)(e);
                    if matches!(tags_err, ImageError::PullAccessDenied { .. }) {
                        return Err(tags_err);
                    }
                }
                return Err(err);
            }
        };
        self.manifests.fetch_add(1, Ordering::Relaxed);
        let manifest = serde_json::from_slice(&bytes).map_err(|e| ImageError::Unsupported {
            reference: reference.to_string(),
            what: "manifest",
            detail: e.to_string(),
        })?;
        let stored = self.blocking(move |s| s.write_blob(&bytes)).await?;
        if stored != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {reference}"),
                expected: digest,
                actual: stored,
            });
        }
        Ok((manifest, digest))
    }

    async fn pull_now(
        self: &Arc<Self>,
        reference: &ImageRef,
        credentials: Option<&Credentials>,
        progress: &Arc<Progress>,
    ) -> Result<ImageRecord, ImageError> {
        let _gc = self.gc.read().await;
        if reference.digest().is_some()
            && let Ok(image) = self.store.get(&reference.to_string())
        {
            // Stored already (perhaps under another name): this name designates it too.
            let tagged = reference.tagged();
            return self
                .blocking(move |s| {
                    s.put(image.clone(), Some(&tagged))?;
                    s.get(&image.digest)
                })
                .await;
        }
        let (client, auth) = self.client(reference, credentials)?;
        let (manifest, repo_digest) = self
            .manifest(&client, &auth, reference, reference.inner())
            .await?;
        let (manifest, digest) = match manifest {
            OciManifest::Image(m) => (m, repo_digest.clone()),
            OciManifest::ImageIndex(index) => {
                let chosen =
                    platform::select(&index.manifests, &self.platform).map_err(|have| {
                        ImageError::NoMatchingPlatform {
                            reference: reference.to_string(),
                            wanted: self.platform.to_string(),
                            available: have.join(", "),
                        }
                    })?;
                let target = reference.inner().clone_with_digest(chosen.clone());
                match self.manifest(&client, &auth, reference, &target).await? {
                    (OciManifest::Image(m), d) => (m, d),
                    (OciManifest::ImageIndex(_), _) => {
                        return Err(ImageError::Unsupported {
                            reference: reference.to_string(),
                            what: "manifest",
                            detail: format!("{chosen} is an index inside an index"),
                        });
                    }
                }
            }
        };
        self.check_layers(reference, &manifest)?;
        let image = ImageRecord {
            digest,
            repo_digest,
            references: Default::default(),
            config: manifest.config.digest.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            size: manifest.layers.iter().map(|l| l.size.max(0) as u64).sum(),
        };
        progress.set_total(image.size);
        let config_progress = Arc::new(Progress::default());
        self.blob(&client, reference, &manifest.config, &config_progress)
            .await?;
        let config_digest = image.config.clone();
        let config = self.blocking(move |s| s.read_blob(&config_digest)).await?;
        let diff_ids = serde_json::from_slice::<ConfigRootfs>(&config)
            .map_err(|e| ImageError::Unsupported {
                reference: reference.to_string(),
                what: "image config",
                detail: e.to_string(),
            })?
            .rootfs
            .diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Unsupported {
                reference: reference.to_string(),
                what: "image config",
                detail: format!(
                    "{} diff ids for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        // Owned futures: borrowing closures here make the spawned pull's future not `Send`.
        let downloads: Vec<_> = manifest
            .layers
            .iter()
            .map(|layer| {
                let (me, client, r, layer, progress) = (
                    self.clone(),
                    client.clone(),
                    reference.clone(),
                    layer.clone(),
                    Arc::clone(progress),
                );
                async move { me.blob(&client, &r, &layer, &progress).await }
            })
            .collect();
        futures::stream::iter(downloads)
            .buffer_unordered(DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await?;
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            self.unpack(&layer.digest, diff_id).await?;
        }
        let reference = reference.tagged();
        self.blocking(move |s| {
            s.put(image.clone(), Some(&reference))?;
            s.get(&image.digest)
        })
        .await
    }

    fn check_layers(&self, reference: &ImageRef, m: &OciImageManifest) -> Result<(), ImageError> {
        if m.layers.is_empty() {
            return Err(ImageError::Unsupported {
                reference: reference.to_string(),
                what: "image",
                detail: "it has no layers".into(),
            });
        }
        match m
            .layers
            .iter()
            .find(|l| !LAYER_TYPES.contains(&l.media_type.as_str()))
        {
            Some(l) => Err(ImageError::Unsupported {
                reference: reference.to_string(),
                what: "layer media type",
                detail: format!("{} (layer {})", l.media_type, l.digest),
            }),
            None => Ok(()),
        }
    }

    fn lock_for(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.blob_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(digest.to_string()).or_default().clone()
    }

    /// Downloads a blob unless stored; a digest mismatch stores nothing.
    async fn blob(
        self: &Arc<Self>,
        client: &Client,
        reference: &ImageRef,
        desc: &OciDescriptor,
        progress: &Arc<Progress>,
    ) -> Result<(), ImageError> {
        let lock = self.lock_for(&desc.digest);
        let _held = lock.lock().await;
        if self.store.has_blob(&desc.digest) {
            // Stored already (shared with another image): nothing left to fetch of it.
            progress.add(desc.size.max(0) as u64);
            return Ok(());
        }
        self.store.blob_path(&desc.digest)?;
        let tmp = self.store.temp_path("blobs");
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ImageError::io("create", &tmp, e))?;
        let file = Counting::new(file, Arc::clone(progress));
        let fetched = client.pull_blob(reference.inner(), desc, file).await;
        self.blobs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = fetched {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(self.registry_err(reference, &RegistryAuth::Anonymous)(e));
        }
        let digest = desc.digest.clone();
        self.blocking(move |s| s.commit_blob(&tmp, &digest)).await
    }

    /// Unpacks a stored layer unless done before, and checks it against the config.
    async fn unpack(self: &Arc<Self>, digest: &str, diff_id: &str) -> Result<(), ImageError> {
        let lock = self.lock_for(digest);
        let _held = lock.lock().await;
        let fresh = !self.store.layer_dir(digest)?.exists();
        let owned = digest.to_string();
        let unpacked = self.blocking(move |s| s.unpack(&owned)).await?;
        if fresh {
            self.unpacked.fetch_add(1, Ordering::Relaxed);
        }
        if unpacked.diff_id != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {digest}"),
                expected: diff_id.to_string(),
                actual: unpacked.diff_id,
            });
        }
        Ok(())
    }
}
