use super::*;
use crate::orchestrator::reconcile;
use shoal_types::fixtures::*;
use shoal_types::{ApplyError, TaskStatus};

fn with_overlay() -> ClusterState {
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
    st.apply(Command::CreateNetwork {
        network: network("net1", "overlay1", "10.0.0.0/24", 4096),
    })
    .unwrap();
    st
}

/// Orchestrate and allocate once.
fn step(st: &mut ClusterState, now: u64) {
    let mut n = st.tasks.len();
    let mut ids = || {
        n += 1;
        format!("t{n:03}")
    };
    for cmd in reconcile(st, Millis(now), &mut ids) {
        st.apply(cmd).unwrap();
    }
    for cmd in allocate(st, Millis(now)) {
        st.apply(cmd).unwrap();
    }
}

fn addrs(st: &ClusterState) -> Vec<String> {
    let mut v: Vec<String> = st
        .tasks
        .values()
        .flat_map(|t| t.networks.iter().map(|a| a.addr.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn tasks_get_distinct_addresses_and_services_a_vip() {
    let mut st = with_overlay();
    st.apply(Command::CreateService {
        service: service("s1", spec_on("vote", 2, &["net1"])),
    })
    .unwrap();
    step(&mut st, 0);
    let vip = &st.services["s1"].endpoint.virtual_ips;
    assert_eq!(vip.len(), 1);
    assert_eq!(
        vip[0].addr.to_string(),
        "10.0.0.2/24",
        "the gateway .1 is skipped"
    );
    assert_eq!(addrs(&st), ["10.0.0.3/24", "10.0.0.4/24"]);
    assert!(
        st.tasks
            .values()
            .all(|t| t.status.state == TaskState::Pending)
    );
}

#[test]
fn dnsrr_services_have_no_vip() {
    let mut st = with_overlay();
    let mut s = spec_on("vote", 2, &["net1"]);
    s.endpoint_spec.mode = EndpointMode::Dnsrr;
    st.apply(Command::CreateService {
        service: service("s1", s),
    })
    .unwrap();
    step(&mut st, 0);
    assert!(st.services["s1"].endpoint.virtual_ips.is_empty());
    assert_eq!(addrs(&st).len(), 2);
}

#[test]
fn a_freed_address_is_not_reused_at_once() {
    let mut st = with_overlay();
    let mut s = spec_on("vote", 1, &["net1"]);
    s.task_template.restart_policy.delay_ms = 0;
    st.apply(Command::CreateService {
        service: service("s1", s),
    })
    .unwrap();
    step(&mut st, 0);
    let first = st.tasks.values().next().unwrap().clone();
    st.apply(Command::AssignTasks {
        assignments: vec![(first.id.clone(), "n1".into())],
        at: Millis(1),
    })
    .unwrap();
    st.apply(Command::UpdateTaskStatus {
        id: first.id.clone(),
        node_id: "n1".into(),
        status: TaskStatus::new(TaskState::Failed, Millis(2), "died"),
    })
    .unwrap();
    step(&mut st, 3);
    let second = st.tasks.values().find(|t| t.id != first.id).unwrap();
    assert_ne!(second.networks[0].addr, first.networks[0].addr);
    assert_eq!(second.networks[0].addr.to_string(), "10.0.0.4/24");
}

#[test]
fn apply_refuses_an_address_in_use() {
    let mut st = with_overlay();
    st.apply(Command::CreateService {
        service: service("s1", spec_on("vote", 2, &["net1"])),
    })
    .unwrap();
    let mut n = 0;
    for cmd in reconcile(&st, Millis(0), &mut || {
        n += 1;
        format!("t{n}")
    }) {
        st.apply(cmd).unwrap();
    }
    let addr: Ipv4Net = "10.0.0.7/24".parse().unwrap();
    let att = || {
        vec![Attachment {
            network_id: "net1".into(),
            addr,
            aliases: vec![],
        }]
    };
    let err = st
        .apply(Command::AllocateTasks {
            allocations: vec![("t1".into(), att()), ("t2".into(), att())],
            at: Millis(1),
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::AddressInUse { .. }), "{err}");
    assert_eq!(st.tasks["t1"].status.state, TaskState::Pending);
    assert_eq!(
        st.tasks["t2"].status.state,
        TaskState::New,
        "the second claim of .7 was refused"
    );
}

#[test]
fn subnets_skip_networks_and_the_host() {
    let st = with_overlay();
    let pool: Ipv4Net = DEFAULT_POOL.parse().unwrap();
    assert_eq!(
        choose_subnet(&st, pool, 24, &[]).unwrap().to_string(),
        "10.0.1.0/24"
    );
    let host: Vec<Ipv4Net> = vec![
        "10.0.0.0/23".parse().unwrap(),
        "10.0.2.7/32".parse().unwrap(),
    ];
    assert_eq!(
        choose_subnet(&st, pool, 24, &host).unwrap().to_string(),
        "10.0.3.0/24"
    );
    assert_eq!(next_vni(&st), 4097);
}

#[test]
fn a_network_in_use_cannot_be_removed() {
    let mut st = with_overlay();
    st.apply(Command::CreateService {
        service: service("s1", spec_on("vote", 1, &["net1"])),
    })
    .unwrap();
    let err = st
        .apply(Command::RemoveNetwork { id: "net1".into() })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "network overlay1 is in use by service(s) vote; remove them first"
    );
    let err = st
        .apply(Command::CreateNetwork {
            network: network("net2", "other", "10.0.0.128/25", 4097),
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("overlaps network overlay1"),
        "{err}"
    );
}

#[test]
fn a_full_network_says_why_its_tasks_wait() {
    let mut st = cluster(&[("n1", "node1")]);
    // A /29: 8 addresses, 5 usable after network, broadcast and gateway. The VIP takes
    // one, so 4 of 6 replicas get an address.
    st.apply(Command::CreateNetwork {
        network: network("net1", "small", "10.0.9.0/29", 4096),
    })
    .unwrap();
    st.apply(Command::CreateService {
        service: service("s1", spec_on("web", 6, &["net1"])),
    })
    .unwrap();
    step(&mut st, 0);
    let waiting: Vec<&shoal_types::Task> = st
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::New)
        .map(|t| &**t)
        .collect();
    assert_eq!(waiting.len(), 2);
    for t in waiting {
        assert_eq!(
            t.status.err,
            "no available IPv4 address in network small (10.0.9.0/29): 5 of 5 in use"
        );
    }
    // Nothing new to say on the next pass: no command is proposed again.
    assert!(
        !allocate(&st, Millis(1))
            .iter()
            .any(|c| matches!(c, Command::SetTaskErrors { .. }))
    );
}
