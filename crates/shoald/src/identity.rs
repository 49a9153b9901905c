//! What a node remembers about its membership across restarts: `<data dir>/node.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shoal_types::NodeRole;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub role: NodeRole,
    pub cluster_id: String,
    /// The node's own IP, and its cluster listener `ip:port`.
    pub addr: String,
    pub cluster_addr: String,
    /// Cluster addresses of the managers, refreshed by the session.
    pub managers: Vec<String>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

impl Identity {
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Identity>> {
        let p = path(data_dir);
        match std::fs::read(&p) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt ({e}); move it away to start this node afresh",
                    p.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("failed to read {}: {e}", p.display())),
        }
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a file.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let tmp = data_dir.join("node.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path(data_dir))
    }

    pub fn remove(data_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path(data_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
