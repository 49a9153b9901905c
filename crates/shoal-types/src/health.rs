//! Health checks and readiness (issue 11): docker's `HealthConfig`, how a service's check and
//! an image's HEALTHCHECK combine, the probe state machine, and when a running task may take
//! traffic. Pure: the agent runs the probes and feeds their outcomes and times in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::node::display_lowercase;
use crate::{PortConfig, Protocol};

/// docker's defaults (`daemon/health.go`): a probe every 30 s, 30 s to answer, 3 failures in
/// a row, no start period, a probe every 5 s during the start period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u64 = 3;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// docker refuses durations below this (other than 0, "the default").
const MIN_DURATION_NS: u64 = 1_000_000;

/// A health check as docker's API and image configs write it (`ContainerSpec.Healthcheck`,
/// the image config's `Healthcheck`): durations in nanoseconds, 0 meaning "the default" (or,
/// for a service's check, "the image's").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `[]` inherit, `["NONE"]` disabled, `["CMD", prog, args...]`, `["CMD-SHELL", line]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HealthConfig {
    /// `--no-healthcheck`: disables the image's check too.
    pub fn none() -> HealthConfig {
        HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        }
    }

    pub fn is_none(&self) -> bool {
        self.test.first().is_some_and(|t| t == "NONE")
    }

    /// docker's checks of a service's check (`service create` refuses what fails them).
    pub fn validate(&self) -> Result<(), String> {
        match self.test.first().map(String::as_str) {
            None | Some("NONE") => {}
            Some("CMD") if self.test.len() > 1 => {}
            Some("CMD-SHELL") if self.test.len() == 2 => {}
            Some(t) => {
                return Err(format!(
                    "invalid health check test {t:?}: expected NONE, CMD with a program, or CMD-SHELL with one command line"
                ));
            }
        }
        for (name, ns) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if ns != 0 && ns < MIN_DURATION_NS {
                return Err(format!("{name} in Healthcheck cannot be less than 1ms"));
            }
        }
        Ok(())
    }

    /// The service's check with what it leaves unset taken from the image's, as docker
    /// merges a container's config with its image's.
    pub fn merged(
        service: Option<&HealthConfig>,
        image: Option<&HealthConfig>,
    ) -> Option<HealthConfig> {
        let Some(img) = image else {
            return service.cloned();
        };
        let mut c = service.cloned().unwrap_or_default();
        if c.test.is_empty() {
            c.test = img.test.clone();
        }
        for (mine, theirs) in [
            (&mut c.interval, img.interval),
            (&mut c.timeout, img.timeout),
            (&mut c.start_period, img.start_period),
            (&mut c.start_interval, img.start_interval),
            (&mut c.retries, img.retries),
        ] {
            if *mine == 0 {
                *mine = theirs;
            }
        }
        Some(c)
    }

    /// The check a task runs ([`HealthConfig::merged`], defaults filled in). `None`: no
    /// check (neither has one, or the one that decides says NONE).
    pub fn effective(
        service: Option<&HealthConfig>,
        image: Option<&HealthConfig>,
    ) -> Option<Probe> {
        HealthConfig::merged(service, image)?.resolve()
    }

    /// This check with docker's defaults for what it leaves unset; `None` if it runs nothing.
    pub fn resolve(&self) -> Option<Probe> {
        let c = self;
        let command = match c.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, [line])) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), line.clone()]
            }
            _ => return None,
        };
        let or = |ns: u64, default: Duration| {
            if ns == 0 {
                default
            } else {
                Duration::from_nanos(ns)
            }
        };
        Some(Probe {
            command,
            interval: or(c.interval, DEFAULT_INTERVAL),
            timeout: or(c.timeout, DEFAULT_TIMEOUT),
            start_period: Duration::from_nanos(c.start_period),
            start_interval: or(c.start_interval, DEFAULT_START_INTERVAL),
            retries: if c.retries == 0 {
                DEFAULT_RETRIES
            } else {
                c.retries
            },
        })
    }
}

/// A resolved check: what to run and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// argv, run inside the task (`CMD-SHELL` through `/bin/sh -c`).
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u64,
}

/// A task's health, as docker shows a container's (`State.Health.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}
display_lowercase!(Health { Starting => "starting", Healthy => "healthy", Unhealthy => "unhealthy" });

/// docker's health monitor without its clock: the outcome of each probe, with how long
/// after the task started it ran, moves the status. Failures within the start period do not
/// count while the task has never been healthy; `retries` failures in a row make it
/// unhealthy; a success makes it healthy and clears the streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMonitor {
    probe: Probe,
    pub status: Health,
    pub failing_streak: u64,
}

impl HealthMonitor {
    pub fn new(probe: Probe) -> HealthMonitor {
        HealthMonitor {
            probe,
            status: Health::Starting,
            failing_streak: 0,
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// How long to wait before the next probe, `since_start` after the task started: the
    /// start interval while starting within the start period, else the interval.
    pub fn next_delay(&self, since_start: Duration) -> Duration {
        if since_start < self.probe.start_period && self.status == Health::Starting {
            self.probe.start_interval
        } else {
            self.probe.interval
        }
    }

    /// Takes a probe's outcome (`started`: when it began, after the task started). Returns
    /// the new status when it changed.
    pub fn record(&mut self, started: Duration, success: bool) -> Option<Health> {
        let before = self.status;
        if success {
            self.failing_streak = 0;
            self.status = Health::Healthy;
        } else {
            let in_grace = self.status == Health::Starting && started < self.probe.start_period;
            if !in_grace {
                self.failing_streak += 1;
                if self.failing_streak >= self.probe.retries {
                    self.status = Health::Unhealthy;
                }
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// What makes a running task ready to take traffic (enter DNS, VIPs and the mesh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Its health check says healthy.
    Healthy,
    /// A TCP connect to one of these target ports, from inside its namespace, succeeds.
    Listening(Vec<u16>),
    /// It runs.
    Running,
}

impl Readiness {
    /// The rule for a task with or without a health check and these ports (the service's
    /// published and target ports; UDP ones cannot be probed).
    pub fn of(has_check: bool, ports: &[PortConfig]) -> Readiness {
        if has_check {
            return Readiness::Healthy;
        }
        let mut tcp: Vec<u16> = ports
            .iter()
            .filter(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.target_port)
            .collect();
        tcp.sort_unstable();
        tcp.dedup();
        if tcp.is_empty() {
            Readiness::Running
        } else {
            Readiness::Listening(tcp)
        }
    }
}

/// How an agent probes a listening port: often, for a bounded time. A task that has not
/// listened after [`LISTEN_ATTEMPTS`] × [`LISTEN_EVERY`] is taken as ready anyway, as it was
/// before readiness existed (the port may be served later, or only by a process it starts).
pub const LISTEN_EVERY: Duration = Duration::from_millis(100);
pub const LISTEN_ATTEMPTS: u32 = 600;

/// The order of a running task's reports: (health, ready). A report of the same state is
/// taken only when it is further along (starting → healthy → unhealthy, not ready → ready),
/// so a stale one resent after a reconnect is dropped.
pub fn progress(health: Option<Health>, ready: bool) -> (u8, bool) {
    let h = match health {
        None | Some(Health::Starting) => 0,
        Some(Health::Healthy) => 1,
        Some(Health::Unhealthy) => 2,
    };
    (h, ready && health != Some(Health::Unhealthy))
}

#[cfg(test)]
mod tests;

/// The `Healthcheck` of an image's config blob (`config.Healthcheck`, which docker writes
/// for a Dockerfile's HEALTHCHECK; the OCI image spec has no such field, so other builders
/// leave it out). `None` when absent or unreadable.
pub fn from_image_config(json: &[u8]) -> Option<HealthConfig> {
    #[derive(Deserialize)]
    struct Blob {
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "Healthcheck")]
        healthcheck: Option<HealthConfig>,
    }
    serde_json::from_slice::<Blob>(json)
        .ok()?
        .config?
        .healthcheck
}
