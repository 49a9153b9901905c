//! Container images on a node: references normalised as docker does, pulls from a registry
//! into a content-addressed store, layers unpacked once each per the OCI image layer spec,
//! and overlayfs root filesystems for tasks.
//!
//! # Layout
//! - `reference`: parsing and normalising image references; which registries are plain HTTP.
//! - `platform`: choosing the node's entry of an image index.
//! - `entry`: what a layer's tar entry name means (path, whiteout, opaque dir) and which
//!   names are refused.
//! - `unpack`: applying one layer to a directory of its own.
//! - `store`: blobs, unpacked layers and image records on disk; list, remove, prune.
//! - `pull`: `Images`, the node's image service (oci-client, single-flight pulls).
//! - `rootfs`: a task's root filesystem (overlayfs over the image's layers).
//! - `auth`: registry logins as the docker CLI keeps them (`~/.docker/config.json`).
//! - `seal`: registry logins sealed for the cluster's state with the managers' key.
//!
//! `reference`, `platform` and `entry` do no I/O, nor do `auth`'s `DockerConfig` and
//! `AuthConfig`.

pub mod auth;
pub mod entry;
pub mod error;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod rootfs;
pub mod seal;
pub mod store;
pub mod unpack;

pub use auth::{AuthConfig, DockerConfig};
pub use error::ImageError;
pub use platform::Platform;
pub use progress::{Progress, human_size};
pub use pull::{Credentials, Images, PullStats};
pub use reference::ImageRef;
pub use seal::SealKey;
pub use store::{ImageRecord, Store};
