//! The indexes beside the tasks (`index.rs`) against a rebuild from scratch, after every
//! command of a random walk through task lifecycles, and what their readers return.

use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::fixtures::*;
use crate::service::Limits;

fn net(n: u32) -> (String, Ipv4Addr) {
    (
        "net1".to_string(),
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + n),
    )
}

fn attachment(n: u32) -> Attachment {
    let (network_id, addr) = net(n);
    Attachment {
        network_id,
        addr: ipnet::Ipv4Net::new(addr, 16).unwrap(),
        aliases: vec![],
    }
}

/// A state with three nodes, one /16 network and two services on it.
fn base() -> ClusterState {
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2"), ("n3", "node3")]);
    st.apply(Command::CreateNetwork {
        network: network("net1", "ovl", "10.1.0.0/16", 4096),
    })
    .unwrap();
    for (id, name) in [("s1", "web"), ("s2", "db")] {
        st.apply(Command::CreateService {
            service: service(id, spec_on(name, 2, &["net1"])),
        })
        .unwrap();
    }
    st
}

/// One random command of a task's life (or a service's): some are refused by `apply`, which
/// must leave the indexes as they were.
fn random_command(st: &ClusterState, rng: &mut StdRng, next_id: &mut u32) -> Command {
    let ids: Vec<String> = st.tasks.keys().cloned().collect();
    let some_task = |rng: &mut StdRng| -> String {
        if ids.is_empty() || rng.random_bool(0.05) {
            "no-such-task".to_string()
        } else {
            ids[rng.random_range(0..ids.len())].clone()
        }
    };
    let node = |rng: &mut StdRng| format!("n{}", rng.random_range(1..=3));
    let state = |rng: &mut StdRng| {
        [
            TaskState::Assigned,
            TaskState::Running,
            TaskState::Complete,
            TaskState::Failed,
            TaskState::Shutdown,
        ][rng.random_range(0..5)]
    };
    let services: Vec<String> = st.services.keys().cloned().collect();
    match rng.random_range(0..10) {
        0 | 1 => {
            *next_id += 1;
            let service_id = if services.is_empty() {
                "s1".to_string()
            } else {
                services[rng.random_range(0..services.len())].clone()
            };
            let mut t = task(&format!("t{next_id:03}"), &service_id, "web");
            if rng.random_bool(0.3) {
                // A global task: made for its node, and Pending at once.
                t.node_id = Some(node(rng));
                t.status.state = TaskState::Pending;
            }
            if rng.random_bool(0.3) {
                t.spec.reservations = Limits {
                    nano_cpus: Some(rng.random_range(1..4) * 100_000_000),
                    memory_bytes: Some(rng.random_range(1..4) << 20),
                };
            }
            Command::CreateTasks { tasks: vec![t] }
        }
        2 => Command::AllocateTasks {
            allocations: vec![(some_task(rng), vec![attachment(rng.random_range(2..40))])],
            at: Millis(1),
        },
        3 => Command::AssignTasks {
            assignments: vec![(some_task(rng), node(rng))],
            at: Millis(2),
        },
        4 | 5 => {
            let id = some_task(rng);
            let node_id = st
                .tasks
                .get(&id)
                .and_then(|t| t.node_id.clone())
                .unwrap_or_else(|| node(rng));
            Command::UpdateTaskStatus {
                id,
                node_id,
                status: TaskStatus::new(state(rng), Millis(3), "x"),
            }
        }
        6 => Command::SetDesiredState {
            tasks: vec![some_task(rng)],
            state: [TaskState::Shutdown, TaskState::Remove][rng.random_range(0..2)],
            at: Millis(4),
        },
        7 => Command::DeleteTasks {
            tasks: vec![some_task(rng)],
        },
        8 => match services.first() {
            Some(id) => Command::SetVips {
                service_id: id.clone(),
                vips: vec![VirtualIp {
                    network_id: "net1".into(),
                    addr: attachment(rng.random_range(2..40)).addr,
                }],
            },
            None => Command::DeleteTasks { tasks: vec![] },
        },
        _ => {
            if rng.random_bool(0.3) && !services.is_empty() {
                Command::SetRegistryAuth {
                    id: services[rng.random_range(0..services.len())].clone(),
                    sealed: rng.random_bool(0.5).then(|| "sealed".to_string()),
                }
            } else if rng.random_bool(0.2) && !services.is_empty() {
                Command::RemoveService {
                    id: services[rng.random_range(0..services.len())].clone(),
                }
            } else {
                *next_id += 1;
                Command::CreateService {
                    service: service(
                        &format!("s{next_id:03}"),
                        spec_on(&format!("svc{next_id}"), 1, &["net1"]),
                    ),
                }
            }
        }
    }
}

#[test]
fn indexes_follow_every_command_as_a_rebuild_would() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut st = base();
        let mut next_id = 0;
        for step in 0..300 {
            let cmd = random_command(&st, &mut rng, &mut next_id);
            let shown = format!("{cmd:?}");
            // Applied alone or in a batch, as the leader proposes.
            let cmd = if rng.random_bool(0.3) {
                Command::Batch(vec![cmd])
            } else {
                cmd
            };
            let _ = st.apply(cmd);
            assert!(
                st.index_is_consistent(),
                "seed {seed}, step {step}: the indexes differ from a rebuild after {shown}"
            );
        }
        // A snapshot read back rebuilds them: the same state.
        let json = serde_json::to_string(&st).unwrap();
        let back: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st, "seed {seed}");
    }
}

#[test]
fn readers_answer_from_the_indexes() {
    let mut st = base();
    let mut big = task("t1", "s1", "web");
    big.spec.reservations.memory_bytes = Some(100 << 20);
    st.apply(Command::CreateTasks {
        tasks: vec![big, task("t2", "s1", "web"), task("t3", "s2", "db")],
    })
    .unwrap();
    let ids = |it: &mut dyn Iterator<Item = &Task>| it.map(|t| t.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&mut st.waiting(TaskState::New)), ["t1", "t2", "t3"]);
    assert!(st.waiting(TaskState::Running).next().is_none());

    st.apply(Command::AllocateTasks {
        allocations: vec![
            ("t1".into(), vec![attachment(5)]),
            ("t2".into(), vec![attachment(6)]),
        ],
        at: Millis(1),
    })
    .unwrap();
    assert_eq!(ids(&mut st.waiting(TaskState::New)), ["t3"]);
    assert_eq!(ids(&mut st.waiting(TaskState::Pending)), ["t1", "t2"]);
    let (n, a5) = net(5);
    assert!(st.address_taken(&n, a5));
    assert!(
        st.address_taken(&n, Ipv4Addr::new(10, 1, 0, 1)),
        "the gateway"
    );
    assert!(!st.address_taken(&n, net(7).1));
    // The same address again is refused, and t3 stays New.
    let err = st
        .apply(Command::AllocateTasks {
            allocations: vec![("t3".into(), vec![attachment(5)])],
            at: Millis(1),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 10.1.0.5 on network ovl is already in use"
    );
    assert_eq!(ids(&mut st.waiting(TaskState::New)), ["t3"]);

    st.apply(Command::AssignTasks {
        assignments: vec![("t1".into(), "n2".into()), ("t2".into(), "n2".into())],
        at: Millis(2),
    })
    .unwrap();
    assert_eq!(
        st.node_load("n2"),
        NodeLoad {
            tasks: 2,
            nano_cpus: 0,
            memory_bytes: 100 << 20
        }
    );
    assert_eq!(st.live_tasks_on("s1", "n2"), 2);
    assert_eq!(st.live_tasks_on("s2", "n2"), 0);
    assert_eq!(st.node_load("n1"), NodeLoad::default());

    // t1 fails: it leaves the node's load and frees its address.
    st.apply(Command::UpdateTaskStatus {
        id: "t1".into(),
        node_id: "n2".into(),
        status: TaskStatus::new(TaskState::Failed, Millis(3), "exit 1"),
    })
    .unwrap();
    assert_eq!(st.node_load("n2").tasks, 1);
    assert_eq!(st.node_load("n2").memory_bytes, 0);
    assert_eq!(st.live_tasks_on("s1", "n2"), 1);
    assert!(!st.address_taken(&n, a5));
    // t2 is told to shut down: no longer live, but it holds its address until it ends.
    st.apply(Command::SetDesiredState {
        tasks: vec!["t2".into()],
        state: TaskState::Shutdown,
        at: Millis(4),
    })
    .unwrap();
    assert_eq!(st.node_load("n2"), NodeLoad::default());
    assert!(st.address_taken(&n, net(6).1));
    assert_eq!(
        st.addresses_in_use("net1").into_iter().collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 1, 0, 1), net(6).1]
    );
    assert!(st.index_is_consistent());

    // Services by name, and those with a registry login.
    assert_eq!(st.service_by_name("db").map(|s| s.id.as_str()), Some("s2"));
    assert!(st.service_by_name("nope").is_none());
    st.apply(Command::SetRegistryAuth {
        id: "s2".into(),
        sealed: Some("sealed".into()),
    })
    .unwrap();
    let with_login = |st: &ClusterState| {
        st.services_with_login()
            .map(|s| s.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(with_login(&st), ["s2"]);
    st.apply(Command::RemoveService { id: "s2".into() })
        .unwrap();
    assert!(with_login(&st).is_empty());
    assert!(st.service_by_name("db").is_none());
    assert!(st.index_is_consistent());
}
