use super::*;
use crate::fixtures::*;

#[test]
fn duplicate_service_name_is_refused_and_changes_nothing() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 2)),
    })
    .unwrap();
    let before = st.clone();
    let err = st
        .apply(Command::CreateService {
            service: service("s2", spec("web", 1)),
        })
        .unwrap_err();
    assert_eq!(err, ApplyError::ServiceNameInUse("web".into()));
    assert_eq!(st, before);
}

#[test]
fn commands_before_init_are_refused() {
    let mut st = ClusterState::default();
    let err = st
        .apply(Command::CreateService {
            service: service("s1", spec("web", 1)),
        })
        .unwrap_err();
    assert_eq!(err, ApplyError::NotInitialized);
}

#[test]
fn task_status_never_moves_backwards() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    let task = Task {
        id: "t1".into(),
        service_id: "s1".into(),
        service_name: "web".into(),
        slot: 1,
        node_id: None,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Pending, Millis(1), "pending"),
        spec_version: 1,
        spec: spec("web", 1).task_template.container_spec,
        networks: vec![],
        ports: vec![],
        restarts: 0,
        started_at: None,
        ready_at: None,
        created_at: Millis(1),
        updated_at: Millis(1),
    };
    st.apply(Command::CreateTasks { tasks: vec![task] })
        .unwrap();
    st.apply(Command::AssignTasks {
        assignments: vec![("t1".into(), "n1".into())],
        at: Millis(2),
    })
    .unwrap();
    let running = TaskStatus::new(TaskState::Running, Millis(3), "started");
    st.apply(Command::UpdateTaskStatus {
        id: "t1".into(),
        node_id: "n1".into(),
        status: running,
    })
    .unwrap();
    let stale = TaskStatus::new(TaskState::Starting, Millis(4), "late report");
    st.apply(Command::UpdateTaskStatus {
        id: "t1".into(),
        node_id: "n1".into(),
        status: stale,
    })
    .unwrap();
    assert_eq!(st.tasks["t1"].status.state, TaskState::Running);
    // A report from a node the task is not on is refused.
    let other = TaskStatus::new(TaskState::Failed, Millis(5), "x");
    assert!(
        st.apply(Command::UpdateTaskStatus {
            id: "t1".into(),
            node_id: "n2".into(),
            status: other
        })
        .is_err()
    );
    assert_eq!(st.find_task("web.1").map(|t| t.id.as_str()), Some("t1"));
}

#[test]
fn a_preparing_task_says_how_far_its_pull_is() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    let mut pending = task("t1", "s1", "web");
    pending.status = TaskStatus::new(TaskState::Pending, Millis(1), "pending");
    st.apply(Command::CreateTasks {
        tasks: vec![pending],
    })
    .unwrap();
    st.apply(Command::AssignTasks {
        assignments: vec![("t1".into(), "n1".into())],
        at: Millis(2),
    })
    .unwrap();
    let report = |st: &mut ClusterState, state, at, message| {
        st.apply(Command::UpdateTaskStatus {
            id: "t1".into(),
            node_id: "n1".into(),
            status: TaskStatus::new(state, Millis(at), message),
        })
        .unwrap();
        st.tasks["t1"].status.message.clone()
    };
    assert_eq!(
        report(&mut st, TaskState::Preparing, 3, "preparing"),
        "preparing"
    );
    let half = "pulling image: 17MB of 35MB";
    assert_eq!(report(&mut st, TaskState::Preparing, 4, half), half);
    // An older word (a resend after a reconnect) does not replace a newer one.
    assert_eq!(report(&mut st, TaskState::Preparing, 3, "preparing"), half);
    assert_eq!(
        report(&mut st, TaskState::Starting, 5, "starting"),
        "starting"
    );
    // Only preparing takes a newer word in the same state.
    assert_eq!(report(&mut st, TaskState::Starting, 6, "again"), "starting");
}

#[test]
fn removing_a_ready_worker_needs_force() {
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
    assert_eq!(
        st.apply(Command::RemoveNode {
            id: "n2".into(),
            force: false
        })
        .unwrap_err(),
        ApplyError::NodeNotDown("node2".into())
    );
    st.apply(Command::RemoveNode {
        id: "n2".into(),
        force: true,
    })
    .unwrap();
    assert!(st.find_node("node2").is_none());
}

#[test]
fn a_manager_is_removed_only_with_force_once_down() {
    let mut st = cluster(&[("n1", "node1"), ("n2", "node2")]);
    st.nodes.get_mut("n2").unwrap().spec.role = NodeRole::Manager;
    let rm = |force| Command::RemoveNode {
        id: "n2".into(),
        force,
    };
    let up = ApplyError::NodeIsManager("node2".into());
    assert_eq!(st.apply(rm(true)).unwrap_err(), up);
    st.apply(Command::SetNodeState {
        id: "n2".into(),
        state: NodeState::Down,
        message: "left".into(),
        at: Millis(1),
    })
    .unwrap();
    assert_eq!(st.apply(rm(false)).unwrap_err(), up);
    st.apply(rm(true)).unwrap();
    assert!(st.find_node("node2").is_none());
    assert!(st.cluster.as_ref().unwrap().removed_nodes.contains("n2"));
}

#[test]
fn version_moves_on_every_successful_change() {
    let mut st = cluster(&[("n1", "node1")]);
    let v = st.version;
    st.apply(Command::UpdateNodeSpec {
        id: "n1".into(),
        availability: Some(Availability::Drain),
        labels: None,
        at: Millis(1),
    })
    .unwrap();
    assert_eq!(st.version, v + 1);
}

#[test]
fn a_batch_may_initialise_the_cluster() {
    let mut st = ClusterState::default();
    st.apply(Command::Batch(vec![
        Command::InitCluster {
            info: info(),
            node: node("n1", "node1"),
        },
        Command::CreateNetwork {
            network: network("i", "ingress", "10.255.0.0/16", 4096),
        },
    ]))
    .unwrap();
    assert!(st.cluster.is_some() && st.find_network("ingress").is_some());
}

#[test]
fn a_published_port_belongs_to_one_service() {
    let mut st = cluster(&[("n1", "node1")]);
    let mut web = spec("web", 1);
    web.endpoint_spec.ports = vec![crate::PortConfig::parse("8080:80").unwrap()];
    st.apply(Command::CreateService {
        service: service("s1", web.clone()),
    })
    .unwrap();
    let mut api = spec("api", 1);
    api.endpoint_spec.ports =
        vec![crate::PortConfig::parse("published=8080,target=81,mode=host").unwrap()];
    let err = st
        .apply(Command::CreateService {
            service: service("s2", api),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 8080/tcp is already published by service web; publish another port or remove web"
    );
    // UDP 8080 is another port; and updating web itself is no conflict.
    let mut dns = spec("dns", 1);
    dns.endpoint_spec.ports = vec![crate::PortConfig::parse("8080:53/udp").unwrap()];
    st.apply(Command::CreateService {
        service: service("s3", dns),
    })
    .unwrap();
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: web,
        at: Millis(1),
        expected_version: None,
    })
    .unwrap();
}

#[test]
fn two_host_mode_services_cannot_share_a_port() {
    let mut st = cluster(&[("n1", "node1")]);
    let host = |name: &str, port: &str| {
        let mut s = spec(name, 1);
        s.endpoint_spec.ports = vec![crate::PortConfig::parse(port).unwrap()];
        s
    };
    st.apply(Command::CreateService {
        service: service("s1", host("web", "published=8080,target=80,mode=host")),
    })
    .unwrap();
    let before = st.clone();
    let err = st
        .apply(Command::CreateService {
            service: service("s2", host("api", "published=8080,target=81,mode=host")),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 8080/tcp is already published by service web; publish another port or remove web"
    );
    assert_eq!(st, before);
    // An update that moves another service onto the port is refused the same way.
    st.apply(Command::CreateService {
        service: service("s3", host("db", "published=9090,target=81,mode=host")),
    })
    .unwrap();
    let err = st
        .apply(Command::UpdateService {
            id: "s3".into(),
            spec: host("db", "published=8080,target=81,mode=host"),
            at: Millis(1),
            expected_version: None,
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::PortInUse { ref service, .. } if service == "web"));
    // The same port over UDP is another port.
    st.apply(Command::CreateService {
        service: service(
            "s4",
            host("dns", "published=8080,target=53,protocol=udp,mode=host"),
        ),
    })
    .unwrap();
}

/// `tasks_of` reads a service's tasks from an index kept by `apply` and rebuilt when a
/// state is read back (a snapshot): the same tasks as a pass over every task.
#[test]
fn tasks_of_follows_creation_deletion_and_a_snapshot() {
    use crate::fixtures::*;
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("vote", 2)),
    })
    .unwrap();
    st.apply(Command::CreateService {
        service: service("s2", spec("web", 1)),
    })
    .unwrap();
    let task = |id: &str, sid: &str| task(id, sid, sid);
    st.apply(Command::CreateTasks {
        tasks: vec![task("a", "s1"), task("b", "s2"), task("c", "s1")],
    })
    .unwrap();
    st.apply(Command::DeleteTasks {
        tasks: vec!["a".into()],
    })
    .unwrap();
    let ids =
        |st: &ClusterState, sid: &str| st.tasks_of(sid).map(|t| t.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&st, "s1"), ["c"]);
    assert_eq!(ids(&st, "s2"), ["b"]);
    assert!(ids(&st, "s3").is_empty());
    let back: ClusterState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
    assert_eq!(back, st, "the index is rebuilt, not stored");
    assert_eq!(ids(&back, "s1"), ["c"]);
    assert!(!serde_json::to_string(&st).unwrap().contains("by_service"));
}

#[test]
fn a_sealed_login_is_replaced_kept_by_updates_and_absent_from_older_services() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    // A service serialised before logins existed reads back without one, and one without
    // a login writes no field (an older log replays to the same bytes).
    let json = serde_json::to_string(&st.services["s1"]).unwrap();
    assert!(!json.contains("RegistryAuth"), "{json}");
    let back: Service = serde_json::from_str(&json).unwrap();
    assert_eq!(back.registry_auth, None);
    st.apply(Command::SetRegistryAuth {
        id: "s1".into(),
        sealed: Some("sealed-v1:abc".into()),
    })
    .unwrap();
    st.apply(Command::UpdateService {
        id: "s1".into(),
        spec: spec("web", 3),
        at: Millis(5),
        expected_version: None,
    })
    .unwrap();
    assert_eq!(
        st.services["s1"].registry_auth.as_deref(),
        Some("sealed-v1:abc")
    );
    assert_eq!(
        st.apply(Command::SetRegistryAuth {
            id: "nope".into(),
            sealed: None,
        }),
        Err(ApplyError::NoSuchService("nope".into()))
    );
}

#[test]
fn a_running_task_becomes_healthy_and_ready_and_keeps_its_start_time() {
    use crate::health::Health;
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    let mut pending = task("t1", "s1", "web");
    pending.status = TaskStatus::new(TaskState::Pending, Millis(1), "pending");
    st.apply(Command::CreateTasks {
        tasks: vec![pending],
    })
    .unwrap();
    st.apply(Command::AssignTasks {
        assignments: vec![("t1".into(), "n1".into())],
        at: Millis(2),
    })
    .unwrap();
    let report = |st: &mut ClusterState, at, health, ready| {
        let mut s = TaskStatus::new(TaskState::Running, Millis(at), "started");
        s.health = health;
        s.ready = ready;
        st.apply(Command::UpdateTaskStatus {
            id: "t1".into(),
            node_id: "n1".into(),
            status: s,
        })
        .unwrap();
        let s = &st.tasks["t1"].status;
        (s.timestamp, s.health, s.ready)
    };
    assert_eq!(
        report(&mut st, 10, Some(Health::Starting), false),
        (Millis(10), Some(Health::Starting), false)
    );
    assert_eq!(
        report(&mut st, 20, Some(Health::Healthy), true),
        (Millis(10), Some(Health::Healthy), true)
    );
    // The first report, resent after a reconnect, changes nothing.
    assert_eq!(
        report(&mut st, 10, Some(Health::Starting), false),
        (Millis(10), Some(Health::Healthy), true)
    );
    assert_eq!(
        report(&mut st, 30, Some(Health::Unhealthy), false),
        (Millis(10), Some(Health::Unhealthy), false)
    );
    // What a status without the fields (recorded before them) reads as: ready.
    let old: TaskStatus =
        serde_json::from_str(r#"{"Timestamp":1,"State":"running","Message":"started"}"#).unwrap();
    assert!(old.ready && old.health.is_none());
}

#[test]
fn of_two_updates_made_from_one_version_the_second_is_out_of_sequence() {
    let mut st = cluster(&[("n1", "node1")]);
    st.apply(Command::CreateService {
        service: service("s1", spec("web", 1)),
    })
    .unwrap();
    let read = st.services["s1"].version;
    let update = |replicas, expected_version| Command::UpdateService {
        id: "s1".into(),
        spec: spec("web", replicas),
        at: Millis(5),
        expected_version,
    };
    // Both clients read `read`; the log orders their updates and the first one wins.
    st.apply(update(3, Some(read))).unwrap();
    let before = st.clone();
    let err = st.apply(update(5, Some(read))).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "update out of sequence: service web is at version {} and this update was made from version {read}; read it again and retry",
            read + 1
        )
    );
    assert_eq!(st, before, "the refused update changed nothing");
    assert_eq!(
        st.services["s1"].spec.mode,
        crate::ServiceMode::Replicated { replicas: 3 }
    );
    // Made from the version now current, it applies; without a version, as before.
    st.apply(update(5, Some(read + 1))).unwrap();
    st.apply(update(6, None)).unwrap();
    assert_eq!(
        st.services["s1"].spec.mode,
        crate::ServiceMode::Replicated { replicas: 6 }
    );
    // A command logged before the field existed reads without it.
    let json = serde_json::to_string(&update(2, None)).unwrap();
    assert!(!json.contains("expected_version"), "{json}");
}
