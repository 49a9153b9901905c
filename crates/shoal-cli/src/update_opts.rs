//! `--update-*` and `--rollback-*` of `service create|update`: how a change of what tasks
//! run rolls out, and how a rollback does (docker's flags). Pure.

use anyhow::Result;
use clap::Args;
use shoal_types::update::FailureRatio;
use shoal_types::{FailureAction, ServiceSpec, UpdateConfig, UpdateOrder};

use crate::spec::duration;

/// Given flags replace the spec's values; the others stay (their defaults on create).
#[derive(Debug, Default, Args)]
pub struct PolicyOpts {
    /// Tasks updated at once (0: all at once; default 1).
    #[arg(long, value_name = "N")]
    pub update_parallelism: Option<u64>,
    /// Wait between a task's update and the next one's (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub update_delay: Option<String>,
    /// When too many updated tasks fail: pause, continue or rollback (default pause).
    #[arg(long, value_name = "ACTION")]
    pub update_failure_action: Option<FailureAction>,
    /// How long after it starts a new task that ends counts as a failure (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub update_monitor: Option<String>,
    /// Fraction of tasks that may fail before the failure action (0 to 1; default 0).
    #[arg(long, value_name = "RATIO")]
    pub update_max_failure_ratio: Option<f32>,
    /// start-first (the new task runs before the old one stops; shoal's default) or
    /// stop-first (docker's default).
    #[arg(long, value_name = "ORDER")]
    pub update_order: Option<UpdateOrder>,
    /// Tasks rolled back at once (0: all at once; default 1).
    #[arg(long, value_name = "N")]
    pub rollback_parallelism: Option<u64>,
    /// Wait between a task's rollback and the next one's (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub rollback_delay: Option<String>,
    /// When too many rolled-back tasks fail: pause or continue (rollback pauses too).
    #[arg(long, value_name = "ACTION")]
    pub rollback_failure_action: Option<FailureAction>,
    /// How long after it starts a rolled-back task that ends counts as a failure (default 5s).
    #[arg(long, value_name = "DURATION")]
    pub rollback_monitor: Option<String>,
    /// Fraction of tasks that may fail during a rollback (0 to 1; default 0).
    #[arg(long, value_name = "RATIO")]
    pub rollback_max_failure_ratio: Option<f32>,
    /// start-first (shoal's default) or stop-first.
    #[arg(long, value_name = "ORDER")]
    pub rollback_order: Option<UpdateOrder>,
}

/// One policy's flags.
struct Flags<'a> {
    what: &'static str,
    parallelism: Option<u64>,
    delay: Option<&'a str>,
    failure_action: Option<FailureAction>,
    monitor: Option<&'a str>,
    max_failure_ratio: Option<f32>,
    order: Option<UpdateOrder>,
}

impl Flags<'_> {
    fn apply(&self, c: &mut UpdateConfig) -> Result<()> {
        let flag = |name: &str| format!("--{}-{name}", self.what);
        if let Some(p) = self.parallelism {
            c.parallelism = p;
        }
        if let Some(d) = self.delay {
            c.delay_ms = duration(&flag("delay"), d)?;
        }
        if let Some(a) = self.failure_action {
            c.failure_action = a;
        }
        if let Some(m) = self.monitor {
            c.monitor_ms = duration(&flag("monitor"), m)?;
        }
        if let Some(r) = self.max_failure_ratio {
            c.max_failure_ratio = FailureRatio(r);
        }
        if let Some(o) = self.order {
            c.order = o;
        }
        c.validate(self.what).map_err(anyhow::Error::msg)
    }
}

impl PolicyOpts {
    /// Sets the given flags in the spec's `UpdateConfig` and `RollbackConfig`.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<()> {
        Flags {
            what: "update",
            parallelism: self.update_parallelism,
            delay: self.update_delay.as_deref(),
            failure_action: self.update_failure_action,
            monitor: self.update_monitor.as_deref(),
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
        .apply(&mut spec.update_config)?;
        Flags {
            what: "rollback",
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay.as_deref(),
            failure_action: self.rollback_failure_action,
            monitor: self.rollback_monitor.as_deref(),
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
        .apply(&mut spec.rollback_config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        opts: PolicyOpts,
    }

    fn apply(args: &[&str]) -> Result<ServiceSpec> {
        let cmd = Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied()))?;
        let mut spec = shoal_types::fixtures::spec("web", 1);
        cmd.opts.apply(&mut spec)?;
        Ok(spec)
    }

    #[test]
    fn flags_set_their_policy_and_leave_the_rest() {
        let s = apply(&[
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-order",
            "stop-first",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1m",
            "--update-max-failure-ratio",
            "0.5",
            "--rollback-parallelism",
            "0",
        ])
        .unwrap();
        assert_eq!(
            s.update_config,
            UpdateConfig {
                parallelism: 2,
                delay_ms: 10_000,
                failure_action: FailureAction::Rollback,
                monitor_ms: 60_000,
                max_failure_ratio: FailureRatio(0.5),
                order: UpdateOrder::StopFirst,
            }
        );
        assert_eq!(
            s.rollback_config,
            UpdateConfig {
                parallelism: 0,
                ..UpdateConfig::default()
            }
        );
        assert_eq!(
            UpdateConfig::default().order,
            UpdateOrder::StartFirst,
            "shoal's default order (README)"
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let err = |args: &[&str]| apply(args).unwrap_err().to_string();
        assert_eq!(
            err(&["--update-max-failure-ratio", "2"]),
            "invalid --update-max-failure-ratio 2: use a number between 0 and 1"
        );
        assert!(
            err(&["--rollback-delay", "soon"]).starts_with("invalid --rollback-delay: "),
            "{}",
            err(&["--rollback-delay", "soon"])
        );
        assert!(
            err(&["--update-order", "sideways"])
                .contains("expected one of stop-first, start-first"),
            "{}",
            err(&["--update-order", "sideways"])
        );
        assert!(
            err(&["--update-failure-action", "retry"])
                .contains("expected one of pause, continue, rollback"),
            "{}",
            err(&["--update-failure-action", "retry"])
        );
    }
}
