//! The rows of `service ls` and `service ps`: pure functions of the API's objects (and `now`),
//! so the tables are tested without a daemon.

use serde_json::{Value, json};
use shoal_api::{ServiceView, TaskView};
use shoal_types::time::human_duration;
use shoal_types::{Millis, PublishMode, ServiceMode, short_id};

use crate::format::Format;
use crate::table::{self, Columns, Row, cell};

const COMMAND_WIDTH: usize = 40;
const ERROR_WIDTH: usize = 30;

fn obj(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        _ => Row::new(),
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(width - 1).collect::<String>())
    }
}

/// `*:8080->80/tcp, 53/udp`.
pub fn ports(view: &ServiceView, mode: Option<PublishMode>) -> String {
    view.service
        .spec
        .endpoint_spec
        .ports
        .iter()
        .filter(|p| mode.is_none_or(|m| p.publish_mode == m))
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn service_row(v: &ServiceView) -> Row {
    let spec = &v.service.spec;
    let replicas = match spec.mode {
        ServiceMode::Replicated { replicas } => format!("{}/{replicas}", v.status.running_tasks),
        ServiceMode::Global {} => format!("{}/{}", v.status.running_tasks, v.status.desired_tasks),
    };
    obj(json!({
        "ID": short_id(&v.service.id),
        "Name": spec.name,
        "Mode": spec.mode.name(),
        "Replicas": replicas,
        "Command": truncate(&what_runs(&spec.task_template.container_spec), COMMAND_WIDTH),
        "Ports": ports(v, None),
    }))
}

/// A service's COMMAND cell: its image first for a container (`IMAGE [COMMAND]`).
fn what_runs(cs: &shoal_types::service::ContainerSpec) -> String {
    cs.image
        .iter()
        .chain(&cs.command)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

const SERVICE_KEYS: &[&str] = &["ID", "Name", "Mode", "Replicas", "Command", "Ports"];

fn service_cells(r: &Row) -> Vec<String> {
    SERVICE_KEYS.iter().map(|k| cell(r, k)).collect()
}

pub fn render_services(rows: &[Row], format: &Format) -> Result<String, String> {
    let columns = Columns {
        headers: &["ID", "NAME", "MODE", "REPLICAS", "COMMAND", "PORTS"],
        cells: &service_cells,
    };
    table::list(rows, SERVICE_KEYS, columns, format)
}

/// docker's CURRENT STATE: `Running 3 seconds ago`, and a running task's health as
/// `docker ps` shows a container's: `Running 3 seconds ago (healthy)`.
pub fn current_state(t: &TaskView, now: Millis) -> String {
    let st = &t.task.status;
    let ago = human_duration(now.since(st.timestamp)).to_lowercase();
    match st.health {
        Some(h) if st.state == shoal_types::TaskState::Running => {
            format!("{:?} {ago} ago ({h})", st.state)
        }
        _ => format!("{:?} {ago} ago", st.state),
    }
}

/// Orders tasks like docker: by service, then slot (node for global services), newest
/// first within a slot.
pub fn sort_tasks(tasks: &mut [TaskView]) {
    tasks.sort_by(|a, b| {
        let key = |t: &TaskView| {
            let node = if t.task.slot == 0 {
                t.task.node_id.clone().unwrap_or_default()
            } else {
                String::new()
            };
            (t.task.service_name.clone(), t.task.slot, node)
        };
        key(a).cmp(&key(b)).then_with(|| {
            (b.task.created_at, b.task.status.timestamp, &b.task.id).cmp(&(
                a.task.created_at,
                a.task.status.timestamp,
                &a.task.id,
            ))
        })
    });
}

/// Rows of `service ps` for tasks already sorted by [`sort_tasks`]: older tasks of a slot
/// are named ` \_ vote.1`.
pub fn task_rows(
    tasks: &[TaskView],
    services: &[ServiceView],
    now: Millis,
    no_trunc: bool,
) -> Vec<Row> {
    let mut prev_slot: Option<String> = None;
    tasks
        .iter()
        .map(|t| {
            let slot = t.task.slot_name();
            let name = if prev_slot.as_deref() == Some(slot.as_str()) {
                format!(" \\_ {slot}")
            } else {
                slot.clone()
            };
            prev_slot = Some(slot);
            let err = &t.task.status.err;
            let error = match (err.is_empty(), no_trunc) {
                (true, _) => String::new(),
                (false, true) => format!("\"{err}\""),
                (false, false) => format!("\"{}\"", truncate(err, ERROR_WIDTH)),
            };
            // Like docker, PORTS shows host-mode ports of running tasks only.
            let ports = services
                .iter()
                .find(|s| s.service.id == t.task.service_id)
                .filter(|_| t.task.status.state == shoal_types::TaskState::Running)
                .map(|s| ports(s, Some(PublishMode::Host)))
                .unwrap_or_default();
            obj(json!({
                "ID": if no_trunc { t.task.id.as_str() } else { short_id(&t.task.id) },
                "Name": name,
                "Image": task_image(&t.task.spec, no_trunc),
                "Node": t.node_hostname,
                "DesiredState": format!("{:?}", t.task.desired_state),
                "CurrentState": current_state(t, now),
                "Error": error,
                "Ports": ports,
            }))
        })
        .collect()
}

/// `service ps`'s IMAGE as docker shows it: without the pinned digest unless --no-trunc
/// (`busybox:latest`); empty for a host command.
fn task_image(cs: &shoal_types::service::ContainerSpec, no_trunc: bool) -> String {
    let Some(image) = &cs.image else {
        return String::new();
    };
    match shoal_image::ImageRef::parse(image) {
        Ok(r) if !no_trunc => r.familiar(),
        _ => image.clone(),
    }
}

const TASK_KEYS: &[&str] = &[
    "ID",
    "Name",
    "Image",
    "Node",
    "DesiredState",
    "CurrentState",
    "Error",
    "Ports",
];

fn task_cells(r: &Row) -> Vec<String> {
    TASK_KEYS.iter().map(|k| cell(r, k)).collect()
}

pub fn render_tasks(rows: &[Row], format: &Format) -> Result<String, String> {
    let columns = Columns {
        headers: &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        cells: &task_cells,
    };
    table::list(rows, TASK_KEYS, columns, format)
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use shoal_api::ServiceStatus;
    use shoal_types::{PortConfig, Task, TaskState, TaskStatus, fixtures};

    use super::*;

    fn view() -> ServiceView {
        let mut spec = fixtures::spec("vote", 2);
        spec.endpoint_spec.ports = vec![
            PortConfig::parse("8080:80").unwrap(),
            PortConfig::parse("53/udp").unwrap(),
        ];
        spec.task_template.container_spec.command = [
            "shoal",
            "demo",
            "vote",
            "--listen",
            "0.0.0.0:80",
            "--redis",
            "redis:6379",
            "--verbose",
        ]
        .map(String::from)
        .to_vec();
        ServiceView {
            service: fixtures::service("4f2c1a9e0b1d2c3d4e5f6a7b", spec),
            status: ServiceStatus {
                running_tasks: 1,
                desired_tasks: 2,
                ..Default::default()
            },
        }
    }

    fn task(
        id: &str,
        slot: u64,
        state: TaskState,
        desired: TaskState,
        at: u64,
        err: &str,
    ) -> TaskView {
        let mut status = TaskStatus::new(state, Millis(at), "");
        status.err = err.into();
        TaskView {
            task: Task {
                id: id.into(),
                service_id: "4f2c1a9e0b1d2c3d4e5f6a7b".into(),
                service_name: "vote".into(),
                slot,
                node_id: Some("n1".into()),
                desired_state: desired,
                status,
                spec_version: 1,
                networks: Vec::new(),
                ports: Vec::new(),
                restarts: 0,
                started_at: None,
                ready_at: None,
                spec: fixtures::spec("vote", 1).task_template.container_spec,
                created_at: Millis(at),
                updated_at: Millis(at),
            },
            node_hostname: format!("node{slot}"),
        }
    }

    #[test]
    fn ls_table() {
        let mut global = view();
        global.service.id = "9a0b1c2d3e4f5a6b7c8d9e0f".into();
        global.service.spec.name = "agent".into();
        global.service.spec.mode = ServiceMode::Global {};
        global.service.spec.endpoint_spec.ports.clear();
        global.service.spec.task_template.container_spec.command =
            vec!["sleep".into(), "1000".into()];
        global.status = ServiceStatus {
            running_tasks: 3,
            desired_tasks: 3,
            ..Default::default()
        };
        let rows = [service_row(&view()), service_row(&global)];
        expect![[r#"
            ID             NAME    MODE         REPLICAS   COMMAND                                    PORTS
            4f2c1a9e0b1d   vote    replicated   1/2        shoal demo vote --listen 0.0.0.0:80 --r…   *:8080->80/tcp, 53/udp
            9a0b1c2d3e4f   agent   global       3/3        sleep 1000
        "#]]
        .assert_eq(&render_services(&rows, &Format::Default).unwrap());
    }

    #[test]
    fn ps_table() {
        let now = 200_000;
        let mut tasks = vec![
            task(
                "aaaaaaaaaaaa000000000000",
                1,
                TaskState::Failed,
                TaskState::Shutdown,
                100_000,
                "task: non-zero exit (1): listen tcp 0.0.0.0:80: address in use",
            ),
            task(
                "bbbbbbbbbbbb000000000000",
                2,
                TaskState::Running,
                TaskState::Running,
                197_000,
                "",
            ),
            task(
                "cccccccccccc000000000000",
                1,
                TaskState::Running,
                TaskState::Running,
                150_000,
                "",
            ),
        ];
        sort_tasks(&mut tasks);
        let rows = task_rows(&tasks, &[view()], Millis(now), false);
        expect![[r#"
            ID             NAME         IMAGE   NODE    DESIRED STATE   CURRENT STATE               ERROR                              PORTS
            cccccccccccc   vote.1               node1   Running         Running 50 seconds ago
            aaaaaaaaaaaa    \_ vote.1           node1   Shutdown        Failed about a minute ago   "task: non-zero exit (1): list…"
            bbbbbbbbbbbb   vote.2               node2   Running         Running 3 seconds ago
        "#]]
        .assert_eq(&render_tasks(&rows, &Format::Default).unwrap());
        let rows = task_rows(&tasks, &[view()], Millis(now), true);
        assert_eq!(cell(&rows[0], "ID"), "cccccccccccc000000000000");
        assert_eq!(
            cell(&rows[1], "Error"),
            "\"task: non-zero exit (1): listen tcp 0.0.0.0:80: address in use\""
        );
    }

    #[test]
    fn current_state_text() {
        let t = task("a", 1, TaskState::Running, TaskState::Running, 10_000, "");
        assert_eq!(current_state(&t, Millis(13_000)), "Running 3 seconds ago");
        assert_eq!(
            current_state(&t, Millis(10_400)),
            "Running less than a second ago"
        );
        assert_eq!(current_state(&t, Millis(130_000)), "Running 2 minutes ago");
        let t = task("a", 1, TaskState::Preparing, TaskState::Running, 10_000, "");
        assert_eq!(
            current_state(&t, Millis(3_610_000)),
            "Preparing about an hour ago"
        );
        use shoal_types::health::Health;
        for (health, text) in [
            (Health::Starting, "Running 5 seconds ago (starting)"),
            (Health::Healthy, "Running 5 seconds ago (healthy)"),
            (Health::Unhealthy, "Running 5 seconds ago (unhealthy)"),
        ] {
            let mut t = task("a", 1, TaskState::Running, TaskState::Running, 10_000, "");
            t.task.status.health = Some(health);
            assert_eq!(current_state(&t, Millis(15_000)), text);
        }
        // A task that ended shows no health.
        let mut t = task("a", 1, TaskState::Failed, TaskState::Shutdown, 10_000, "");
        t.task.status.health = Some(Health::Unhealthy);
        assert_eq!(current_state(&t, Millis(15_000)), "Failed 5 seconds ago");
    }

    #[test]
    fn host_mode_ports_show_in_ps() {
        let mut v = view();
        v.service.spec.endpoint_spec.ports =
            vec![PortConfig::parse("published=8080,target=80,mode=host").unwrap()];
        let tasks = [task("a", 1, TaskState::Running, TaskState::Running, 0, "")];
        assert_eq!(
            cell(&task_rows(&tasks, &[v], Millis(0), false)[0], "Ports"),
            "*:8080->80/tcp"
        );
    }

    #[test]
    fn ps_shows_a_pinned_image_as_docker_does() {
        let d = format!("sha256:{}", "a".repeat(64));
        let mut cs = fixtures::spec("vote", 1).task_template.container_spec;
        assert_eq!(task_image(&cs, false), "");
        cs.image = Some(format!("127.0.0.1:5000/lab/busybox:1@{d}"));
        assert_eq!(task_image(&cs, false), "127.0.0.1:5000/lab/busybox:1");
        assert_eq!(
            task_image(&cs, true),
            format!("127.0.0.1:5000/lab/busybox:1@{d}")
        );
        cs.image = Some("busybox".into());
        assert_eq!(task_image(&cs, false), "busybox:latest");
    }

    #[test]
    fn a_containers_command_cell_starts_with_its_image() {
        let mut cs = shoal_types::service::ContainerSpec::host(vec!["httpd".into(), "-f".into()]);
        assert_eq!(what_runs(&cs), "httpd -f");
        cs.runtime = shoal_types::Runtime::Oci;
        cs.image = Some("busybox:1".into());
        assert_eq!(what_runs(&cs), "busybox:1 httpd -f");
    }
}
