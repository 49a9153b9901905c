//! `service create`'s container options beyond the image and its command: `--mount`,
//! `--cap-add`, `--cap-drop`, `--hostname`, `--env-file`, `--reserve-cpu`,
//! `--reserve-memory`. Pure but for reading the env files.

use anyhow::{Context, Result, bail};
use clap::Args;
use shoal_types::mount::Mount;
use shoal_types::service::{ContainerSpec, Limits};

#[derive(Debug, Default, Args)]
pub struct ContainerOpts {
    /// Attach a mount (oci): type=bind|volume|tmpfs,source=…,target=…[,readonly].
    #[arg(long = "mount", value_name = "MOUNT")]
    pub mounts: Vec<String>,
    /// Add a Linux capability to docker's default set (oci).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability from docker's default set (oci).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// The container's hostname (oci; default: the task's short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Read environment variables from a file (KEY=VALUE lines; # comments; a bare KEY takes
    /// this shell's value).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<String>,
    /// CPUs the scheduler sets aside on the node for each task, e.g. 0.5.
    #[arg(long, value_name = "CPUS")]
    pub reserve_cpu: Option<String>,
    /// Memory the scheduler sets aside on the node for each task (64m, 1g).
    #[arg(long, value_name = "BYTES")]
    pub reserve_memory: Option<String>,
}

impl ContainerOpts {
    /// The flags only a container can take, for `--runtime host`'s refusal.
    pub fn oci_only(&self) -> [(&'static str, bool); 4] {
        [
            ("--mount", !self.mounts.is_empty()),
            ("--cap-add", !self.cap_add.is_empty()),
            ("--cap-drop", !self.cap_drop.is_empty()),
            ("--hostname", self.hostname.is_some()),
        ]
    }

    /// Sets them on `cs`: the env files' variables before `-e`'s.
    pub fn apply(&self, cs: &mut ContainerSpec) -> Result<()> {
        let mut env = Vec::new();
        for path in &self.env_files {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --env-file {path}"))?;
            env.extend(
                env_file(&text, |k| std::env::var(k).ok())
                    .map_err(|e| anyhow::anyhow!("--env-file {path}: {e}"))?,
            );
        }
        env.append(&mut cs.env);
        cs.env = env;
        cs.mounts = self
            .mounts
            .iter()
            .map(|m| Mount::parse(m))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        cs.cap_add = self.cap_add.clone();
        cs.cap_drop = self.cap_drop.clone();
        cs.hostname = self.hostname.clone();
        cs.reservations = Limits {
            memory_bytes: self
                .reserve_memory
                .as_deref()
                .map(|m| crate::spec::memory_bytes(m).map_err(|e| reserve(e, "--reserve-memory")))
                .transpose()?,
            nano_cpus: self
                .reserve_cpu
                .as_deref()
                .map(|c| crate::spec::nano_cpus(c).map_err(|e| reserve(e, "--reserve-cpu")))
                .transpose()?,
        };
        Ok(())
    }
}

/// `service update`'s container options: what is not given stays as it is.
#[derive(Debug, Default, Args)]
pub struct ContainerUpdateOpts {
    /// Add or replace (by target) a mount (oci).
    #[arg(long, value_name = "MOUNT")]
    pub mount_add: Vec<String>,
    /// Remove the mount at a target path.
    #[arg(long, value_name = "TARGET")]
    pub mount_rm: Vec<String>,
    /// Add a Linux capability (oci).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (oci).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// The container's hostname (oci).
    #[arg(long)]
    pub hostname: Option<String>,
    /// CPUs to set aside for each task.
    #[arg(long, value_name = "CPUS")]
    pub reserve_cpu: Option<String>,
    /// Memory to set aside for each task.
    #[arg(long, value_name = "BYTES")]
    pub reserve_memory: Option<String>,
}

impl ContainerUpdateOpts {
    pub fn apply(&self, cs: &mut ContainerSpec) -> Result<()> {
        let oci = cs.runtime == shoal_types::service::Runtime::Oci;
        let given = !self.mount_add.is_empty()
            || !self.mount_rm.is_empty()
            || !self.cap_add.is_empty()
            || !self.cap_drop.is_empty()
            || self.hostname.is_some();
        if given && !oci {
            bail!(
                "--mount-*, --cap-* and --hostname are for containers; this service runs a host command"
            );
        }
        cs.mounts.retain(|m| !self.mount_rm.contains(&m.target));
        for m in &self.mount_add {
            let m = Mount::parse(m).map_err(anyhow::Error::msg)?;
            cs.mounts.retain(|old| old.target != m.target);
            cs.mounts.push(m);
        }
        // An add undoes an earlier drop of the same capability, and the other way round.
        for c in &self.cap_add {
            cs.cap_drop.retain(|d| d != c);
            if !cs.cap_add.contains(c) {
                cs.cap_add.push(c.clone());
            }
        }
        for c in &self.cap_drop {
            cs.cap_add.retain(|a| a != c);
            if !cs.cap_drop.contains(c) {
                cs.cap_drop.push(c.clone());
            }
        }
        if let Some(h) = &self.hostname {
            cs.hostname = Some(h.clone());
        }
        if let Some(m) = &self.reserve_memory {
            cs.reservations.memory_bytes =
                Some(crate::spec::memory_bytes(m).map_err(|e| reserve(e, "--reserve-memory"))?);
        }
        if let Some(c) = &self.reserve_cpu {
            cs.reservations.nano_cpus =
                Some(crate::spec::nano_cpus(c).map_err(|e| reserve(e, "--reserve-cpu"))?);
        }
        Ok(())
    }
}

/// The limit parsers name `--limit-*`; a reservation's error names its own flag.
fn reserve(e: anyhow::Error, flag: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}",
        e.to_string()
            .replace("--limit-memory", flag)
            .replace("--limit-cpu", flag)
    )
}

/// docker's env file: `KEY=VALUE` lines, `#` comments and blank lines skipped, a bare `KEY`
/// taking `lookup(KEY)` (left out when unset).
pub fn env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some(("", _)) => bail!("line {}: no variable name in {line:?}", n + 1),
            Some(_) => out.push(line.to_string()),
            None => {
                let key = line.trim_end();
                if key.contains(char::is_whitespace) {
                    bail!("line {}: variable {key:?} contains whitespace", n + 1);
                }
                if let Some(v) = lookup(key) {
                    out.push(format!("{key}={v}"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_as_docker_reads_them() {
        let text = "# settings\nA=1\n\nB=x=y\nHOME\nUNSET\n";
        let env = env_file(text, |k| (k == "HOME").then(|| "/root".to_string())).unwrap();
        assert_eq!(env, ["A=1", "B=x=y", "HOME=/root"]);
        assert_eq!(
            env_file("=1\n", |_| None).unwrap_err().to_string(),
            "line 1: no variable name in \"=1\""
        );
    }

    #[test]
    fn updates_add_replace_and_remove() {
        let mut cs = ContainerSpec::host(vec![]);
        cs.runtime = shoal_types::service::Runtime::Oci;
        cs.mounts = vec![Mount::parse("type=tmpfs,target=/a").unwrap()];
        cs.cap_drop = vec!["NET_RAW".into()];
        let up = ContainerUpdateOpts {
            mount_add: vec!["type=volume,source=v1,target=/a".into()],
            cap_add: vec!["NET_RAW".into()],
            reserve_cpu: Some("0.5".into()),
            ..Default::default()
        };
        up.apply(&mut cs).unwrap();
        assert_eq!(cs.mounts.len(), 1);
        assert_eq!(cs.mounts[0].source.as_deref(), Some("v1"));
        assert!(cs.cap_drop.is_empty());
        assert_eq!(cs.cap_add, ["NET_RAW"]);
        assert_eq!(cs.reservations.nano_cpus, Some(500_000_000));
        let rm = ContainerUpdateOpts {
            mount_rm: vec!["/a".into()],
            ..Default::default()
        };
        rm.apply(&mut cs).unwrap();
        assert!(cs.mounts.is_empty());
        let mut host = ContainerSpec::host(vec![]);
        let err = ContainerUpdateOpts {
            hostname: Some("x".into()),
            ..Default::default()
        }
        .apply(&mut host)
        .unwrap_err();
        assert!(
            err.to_string().contains("this service runs a host command"),
            "{err}"
        );
    }

    #[test]
    fn options_reach_the_spec() {
        let opts = ContainerOpts {
            mounts: vec!["type=tmpfs,target=/scratch".into()],
            cap_drop: vec!["NET_RAW".into()],
            hostname: Some("web".into()),
            reserve_memory: Some("1g".into()),
            ..Default::default()
        };
        let mut cs = ContainerSpec::host(vec![]);
        opts.apply(&mut cs).unwrap();
        assert_eq!(cs.mounts[0].target, "/scratch");
        assert_eq!(cs.cap_drop, ["NET_RAW"]);
        assert_eq!(cs.reservations.memory_bytes, Some(1 << 30));
        let bad = ContainerOpts {
            reserve_memory: Some("lots".into()),
            ..Default::default()
        };
        let err = bad.apply(&mut cs).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid --reserve-memory \"lots\""),
            "{err}"
        );
    }
}
