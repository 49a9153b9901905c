//! `service logs [-f] [--tail N] [-t] [--since T]`: which lines to print and how. The
//! daemon returns each task's whole log (a container's lines with the time its monitor read
//! them; a host command's without); choosing, following and formatting happen here.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use shoal_api::logs::{Follow, Nanos, nanos, rfc3339_nanos};
use shoal_api::{Client, LogLine};

use crate::service::{LogsArgs, log_prefix};

/// `--since`: an RFC 3339 time (`2026-12-01T05:43:56Z`, an offset or fraction allowed) or
/// a duration before `now` (`10m`, `1h30m`), as docker takes it.
pub fn parse_since(s: &str, now: SystemTime) -> Result<Nanos, String> {
    if let Some(t) = rfc3339_nanos(s) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(s).map_err(|_| {
        format!("invalid --since {s:?}: expected an RFC 3339 time or a duration such as 10m")
    })?;
    let then = now.checked_sub(ago).unwrap_or(UNIX_EPOCH);
    Ok(nanos(then))
}

/// What `service logs` prints of one poll: per task, the lines after `since` (lines
/// without a time are kept), the last `tail` of them.
pub fn select(lines: &[LogLine], tail: Option<usize>, since: Option<Nanos>) -> Vec<&LogLine> {
    let mut by_task: BTreeMap<&str, Vec<&LogLine>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for l in lines {
        let keep = match (since, l.timestamp.as_deref().and_then(rfc3339_nanos)) {
            (Some(since), Some(t)) => t >= since,
            _ => true,
        };
        if !keep {
            continue;
        }
        let v = by_task.entry(&l.task).or_insert_with(|| {
            order.push(&l.task);
            Vec::new()
        });
        v.push(l);
    }
    let mut out = Vec::new();
    for task in order {
        let v = &by_task[task];
        let skip = tail.map_or(0, |n| v.len().saturating_sub(n));
        out.extend(&v[skip..]);
    }
    out
}

/// One printed line: docker's `TASK@NODE    | LINE`, after the time with `-t`.
pub fn render(l: &LogLine, timestamps: bool, no_trunc: bool) -> String {
    let prefix = log_prefix(&l.task, &l.node, no_trunc);
    match (&l.timestamp, timestamps) {
        (Some(t), true) => format!("{t} {prefix}{}", l.line),
        _ => format!("{prefix}{}", l.line),
    }
}

pub async fn run(client: &Client, a: &LogsArgs) -> Result<()> {
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let lines = client.service_logs(&a.service).await?;
    for l in select(&lines, a.tail, since) {
        println!("{}", render(l, a.timestamps, a.no_trunc));
    }
    if !a.follow {
        return Ok(());
    }
    // Everything up to now counts as seen, printed or not.
    let mut seen = Follow::default();
    seen.new_lines(&lines);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let lines = client.service_logs(&a.service).await?;
        for l in seen.new_lines(&lines) {
            println!("{}", render(l, a.timestamps, a.no_trunc));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(task: &str, time: Option<&str>, text: &str) -> LogLine {
        LogLine {
            task: task.into(),
            node: "node1".into(),
            line: text.into(),
            timestamp: time.map(str::to_string),
        }
    }

    #[test]
    fn times_as_conmon_writes_them() {
        let t = rfc3339_nanos("2026-12-01T05:43:56.002791099+00:00").unwrap();
        assert_eq!(t, rfc3339_nanos("2026-12-01T05:43:56.002791099Z").unwrap());
        assert_eq!(
            rfc3339_nanos("2026-12-01T07:43:56.002791099+02:00").unwrap(),
            t
        );
        assert_eq!(t % 1_000_000_000, 2_791_099);
        assert_eq!(rfc3339_nanos("10m"), None);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(parse_since("10s", now).unwrap(), 990_000_000_000);
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("expected an RFC 3339 time or a duration")
        );
    }

    #[test]
    fn tail_is_per_task_and_since_skips_older_lines() {
        let lines = vec![
            line("a.1", Some("2026-12-01T00:00:01Z"), "a1"),
            line("b.1", None, "b1"),
            line("a.1", Some("2026-12-01T00:00:02Z"), "a2"),
            line("b.1", None, "b2"),
            line("a.1", Some("2026-12-01T00:00:03Z"), "a3"),
        ];
        let text = |v: Vec<&LogLine>| v.iter().map(|l| l.line.clone()).collect::<Vec<_>>();
        assert_eq!(text(select(&lines, Some(1), None)), ["a3", "b2"]);
        let since = rfc3339_nanos("2026-12-01T00:00:02Z");
        assert_eq!(text(select(&lines, None, since)), ["b1", "b2", "a2", "a3"]);
        assert_eq!(
            render(&lines[0], true, false),
            "2026-12-01T00:00:01Z a.1@node1    | a1"
        );
        assert_eq!(render(&lines[1], true, false), "b.1@node1    | b1");
    }
}
