//! A task that runs but is not ready (issue 11): listed by `tasks.<svc>` only, and only when
//! the service publishes such tasks; never by the service's name or its SRV records.

use super::*;

fn not_ready_zone() -> Sandbox {
    let mut starting = task("db", 2, "bbbbbbbbbbbbbbbbbbbbbbbb", [10, 0, 0, 12]);
    starting.ready = false;
    let net = NetworkView {
        name: "overlay1".to_string(),
        services: vec![ServiceView {
            name: "db".to_string(),
            dnsrr: true,
            ttl: 5,
            task_ttl: 5,
            ports: vec![SrvPort {
                name: None,
                protocol: Protocol::Tcp,
                target_port: 5432,
            }],
            tasks: vec![
                task("db", 1, "aaaaaaaaaaaaaaaaaaaaaaaa", [10, 0, 0, 11]),
                starting,
            ],
            ..Default::default()
        }],
    };
    sandbox(vec![net])
}

fn answers(name: &str, qtype: RecordType) -> Vec<String> {
    run(&not_ready_zone(), &request(name, qtype), 1)
        .lines()
        .filter(|l| l.starts_with("an "))
        .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn tasks_dot_lists_a_task_that_is_not_ready_the_name_does_not() {
    let mut all = answers("tasks.db.", RecordType::A);
    all.sort();
    assert_eq!(all, ["10.0.0.11", "10.0.0.12"]);
    assert_eq!(answers("db.", RecordType::A), ["10.0.0.11"]);
    let srv = answers("_5432._tcp.db.", RecordType::SRV);
    assert_eq!(srv.len(), 1, "{srv:?}");
    assert!(srv[0].starts_with("db.1."), "{srv:?}");
}
