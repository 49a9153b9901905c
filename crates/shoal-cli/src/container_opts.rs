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
