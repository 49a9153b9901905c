//! `shoal events`: the cluster's events as `docker events` prints them, streamed until
//! `--until` passes (or forever), from a manager.
//!
//! ```text
//! 2026-12-02T06:40:01.123000000Z service create 4f0c... (name=web)
//! 2026-12-02T06:40:09.020000000Z service update 4f0c... (name=web, replicas.new=3, replicas.old=1)
//! ```

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::{Value, json};
use shoal_api::{Client, EventQuery};
use shoal_types::{Event, EventFilter, Millis};

use crate::format::Format;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Also show the events this manager kept since this time: a date
    /// (2026-01-02T15:04:05Z, 2026-01-02), seconds since the epoch, or a time back from
    /// now (10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Stop once this time has passed (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only events that match: type=service|node|task|network, event=create|update|remove,
    /// service=, node=, network=, task= (an id prefix or a name), scope=swarm. Repeated: the
    /// values of one key are alternatives, every key must match.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// A Go template over the event ({{.Type}} {{.Action}} {{.Actor.ID}}
    /// {{.Actor.Attributes.name}} {{.Time}} {{.TimeNano}}), or `json`.
    #[arg(long)]
    pub format: Option<String>,
}

pub async fn run(client: &Client, a: EventsArgs) -> Result<()> {
    let now = crate::now();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| parse_time(s, now).map_err(|e| anyhow!("{flag}: {e}")))
            .transpose()
    };
    let since = time("--since", &a.since)?;
    let until = time("--until", &a.until)?;
    let filter = EventFilter::parse(a.filter.iter().map(String::as_str)).map_err(|e| anyhow!(e))?;
    let format = Format::parse(a.format.as_deref()).map_err(|e| anyhow!(e))?;
    let query = EventQuery {
        since: since.map(|m| m.0),
        until: until.map(|m| m.0),
        filters: (!filter.is_empty())
            .then(|| serde_json::to_string(&filter.0))
            .transpose()?,
    };
    let mut failed = None;
    client
        .events(&query, |e| match render(&format, &e) {
            Ok(line) => {
                println!("{line}");
                true
            }
            Err(why) => {
                failed = Some(why);
                false
            }
        })
        .await?;
    match failed {
        Some(why) => Err(anyhow!(why)),
        None => Ok(()),
    }
}

/// One event as the user asked for it.
pub fn render(format: &Format, e: &Event) -> Result<String, String> {
    match format {
        Format::Default => Ok(e.line(&rfc3339(e.time))),
        Format::Json => Ok(docker_value(e).to_string()),
        Format::Template { template, .. } => template.render(&docker_value(e)),
    }
}

/// The event as docker's `events.Message` reads in a template: `Time` in seconds,
/// `TimeNano`, `Scope` `swarm`.
fn docker_value(e: &Event) -> Value {
    json!({
        "Type": e.kind.as_str(),
        "Action": e.action.as_str(),
        "Actor": {"ID": e.actor.id, "Attributes": e.actor.attributes},
        "Scope": "swarm",
        "Time": e.time.0 / 1000,
        "TimeNano": e.time.0.saturating_mul(1_000_000),
    })
}

fn rfc3339(t: Millis) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

/// `--since`/`--until` as docker takes them: seconds since the epoch (with a fraction), an
/// RFC 3339 date and time or a date alone (UTC), or a duration back from `now`.
pub fn parse_time(s: &str, now: Millis) -> Result<Millis, String> {
    let s = s.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
    {
        let secs: u64 = secs.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let ms: u64 = format!("{frac:0<3}")[..3].parse().unwrap_or(0);
        return Ok(Millis(secs.saturating_mul(1000).saturating_add(ms)));
    }
    let date = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(&date) {
        let d = t.duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
        return Ok(Millis(d.as_millis() as u64));
    }
    match shoal_types::time::parse_duration_ms(s) {
        Ok(back) => Ok(Millis(now.0.saturating_sub(back))),
        Err(_) => Err(format!(
            "invalid time {s:?}: use a date (2026-01-02T15:04:05Z), seconds since the epoch, or a time back from now (10m)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use shoal_types::{Action, Actor, EventType};

    use super::*;

    #[test]
    fn times_as_docker_takes_them() {
        let now = Millis(1_800_000_000_000);
        assert_eq!(parse_time("1700000000", now), Ok(Millis(1_700_000_000_000)));
        assert_eq!(
            parse_time("1700000000.25", now),
            Ok(Millis(1_700_000_000_250))
        );
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Ok(Millis(1_700_000_000_000))
        );
        assert_eq!(parse_time("2023-11-14", now), Ok(Millis(1_699_920_000_000)));
        assert_eq!(
            parse_time("10m", now),
            Ok(Millis(1_800_000_000_000 - 600_000))
        );
        assert_eq!(
            parse_time("soon", now).unwrap_err(),
            "invalid time \"soon\": use a date (2026-01-02T15:04:05Z), seconds since the epoch, or a time back from now (10m)"
        );
    }

    #[test]
    fn lines_json_and_templates() {
        let e = Event {
            kind: EventType::Service,
            action: Action::Create,
            actor: Actor {
                id: "abc".into(),
                attributes: [("name".to_string(), "web".to_string())].into(),
            },
            time: Millis(1_700_000_000_123),
        };
        assert_eq!(
            render(&Format::Default, &e).unwrap(),
            "2023-11-14T22:13:20.123000000Z service create abc (name=web)"
        );
        let f = Format::parse(Some(
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Time}}",
        ))
        .unwrap();
        assert_eq!(render(&f, &e).unwrap(), "service create web 1700000000");
        let f = Format::parse(Some("json")).unwrap();
        let v: Value = serde_json::from_str(&render(&f, &e).unwrap()).unwrap();
        assert_eq!(v["TimeNano"], json!(1_700_000_000_123_000_000u64));
        assert_eq!(v["Scope"], "swarm");
    }
}
