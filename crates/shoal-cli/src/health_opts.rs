//! `service create|update`'s health and readiness flags, as docker's: `--health-cmd`,
//! `--health-interval`, `--health-timeout`, `--health-retries`, `--health-start-period`,
//! `--health-start-interval`, `--no-healthcheck`, and shoal's `--endpoint-publish-not-ready`.
//! Pure.

use anyhow::{Result, bail};
use clap::Args;
use shoal_types::health::HealthConfig;
use shoal_types::service::ContainerSpec;
use shoal_types::time::parse_duration_ms;
use shoal_types::{EndpointSpec, ServiceSpec};

#[derive(Debug, Default, Args)]
pub struct HealthOpts {
    /// Command to run to check health (through /bin/sh -c, inside the task; exit 0: healthy).
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u64>,
    /// Start period for the task to initialize before failures count towards retries
    /// (ms|s|m|h) (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h) (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// List tasks that run but are not ready yet in `tasks.<service>` (only there: the
    /// service's name, its VIP and published ports wait for readiness), so that the members
    /// of a clustered app find each other before they are healthy. `=false` to turn off.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub endpoint_publish_not_ready: Option<bool>,
}

/// A health duration in nanoseconds, as docker's API keeps it (`500us` is kept as given, so
/// that docker's 1 ms minimum can refuse it rather than it rounding to 0, "the default").
fn nanos(flag: &str, s: &str) -> Result<u64> {
    let bad = |e: String| anyhow::anyhow!("invalid argument {s:?} for \"{flag}\" flag: {e}");
    parse_duration_ms(s).map_err(bad)?;
    let text = if s.trim().bytes().all(|b| b.is_ascii_digit()) {
        format!("{}s", s.trim())
    } else {
        s.trim().to_string()
    };
    let d = humantime::parse_duration(&text).map_err(|e| bad(e.to_string()))?;
    u64::try_from(d.as_nanos()).map_err(|e| bad(e.to_string()))
}

impl HealthOpts {
    fn any_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some()
    }

    /// `service create`: the check the flags give, if any (none: the image's applies).
    pub fn apply_create(&self, cs: &mut ContainerSpec, ep: &mut EndpointSpec) -> Result<()> {
        ep.publish_not_ready = self.endpoint_publish_not_ready.unwrap_or(false);
        if self.no_healthcheck {
            if self.any_health() {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            cs.healthcheck = Some(HealthConfig::none());
        } else if self.any_health() {
            let mut h = HealthConfig::default();
            self.set(&mut h)?;
            cs.healthcheck = Some(h);
        }
        Ok(())
    }

    /// `service update`, as docker's: `--no-healthcheck` replaces the check with NONE; any
    /// `--health-*` changes that field only (`--health-cmd ""` goes back to the image's
    /// command); a check that was NONE gets a command again only from `--health-cmd`.
    pub fn apply_update(&self, spec: &mut ServiceSpec) -> Result<()> {
        if let Some(b) = self.endpoint_publish_not_ready {
            spec.endpoint_spec.publish_not_ready = b;
        }
        let cs = &mut spec.task_template.container_spec;
        if self.no_healthcheck {
            if self.any_health() {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            cs.healthcheck = Some(HealthConfig::none());
            return Ok(());
        }
        if !self.any_health() {
            return Ok(());
        }
        let h = cs.healthcheck.get_or_insert_with(HealthConfig::default);
        if h.is_none() {
            h.test.clear();
        }
        self.set(h)
    }

    /// Sets the fields whose flags are given.
    fn set(&self, h: &mut HealthConfig) -> Result<()> {
        if let Some(cmd) = &self.health_cmd {
            h.test = if cmd.is_empty() {
                vec![]
            } else {
                vec!["CMD-SHELL".into(), cmd.clone()]
            };
        }
        if let Some(d) = &self.health_interval {
            h.interval = nanos("--health-interval", d)?;
        }
        if let Some(d) = &self.health_timeout {
            h.timeout = nanos("--health-timeout", d)?;
        }
        if let Some(n) = self.health_retries {
            h.retries = n;
        }
        if let Some(d) = &self.health_start_period {
            h.start_period = nanos("--health-start-period", d)?;
        }
        if let Some(d) = &self.health_start_interval {
            h.start_interval = nanos("--health-start-interval", d)?;
        }
        Ok(())
    }
}
