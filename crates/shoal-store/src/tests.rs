//! Real redb files in temp dirs; the multi-manager test runs real gRPC on 127.0.0.1.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal_types::{ApplyError, ClusterState, Command, CommandResult, Millis, fixtures};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{ManagerStatus, Store, StoreConfig, StoreError};

const WAIT: Duration = Duration::from_secs(15);

fn fast(snapshot_every: u64) -> StoreConfig {
    StoreConfig {
        heartbeat_ms: 50,
        election_min_ms: 200,
        election_max_ms: 400,
        snapshot_every,
        ..StoreConfig::default()
    }
}

fn init_cluster() -> Command {
    Command::InitCluster {
        info: fixtures::info(),
        node: fixtures::node("n1", "manager-1"),
    }
}

fn create_service(id: &str, name: &str) -> Command {
    Command::CreateService {
        service: fixtures::service(id, fixtures::spec(name, 2)),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_state(
    store: &Store,
    what: &str,
    pred: impl Fn(&ClusterState) -> bool,
) -> Arc<ClusterState> {
    let mut rx = store.state();
    let res = tokio::time::timeout(WAIT, async {
        rx.wait_for(|s| pred(s)).await.map(|s| s.clone())
    })
    .await;
    match res {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("state channel closed while waiting until {what}"),
        Err(_) => panic!(
            "timed out waiting until {what}; state is {:?}",
            store.state().borrow()
        ),
    }
}

async fn propose_ok(store: &Store, cmd: Command) {
    assert_eq!(store.propose(cmd).await, Ok(CommandResult::Ok));
}

/// Starts `store`'s Raft service on `listener`.
fn serve(store: &Store, listener: TcpListener) -> JoinHandle<()> {
    let svc = store.grpc_service();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            panic!("raft grpc server failed: {e}");
        }
    })
}

#[tokio::test]
async fn a_fresh_store_has_no_state_and_no_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1, "127.0.0.1:1".into(), fast(1000))
        .await
        .expect("open");
    assert!(!store.has_state());
    assert!(!store.is_leader());
    assert!(store.members().is_empty());
    let err = store
        .propose(init_cluster())
        .await
        .expect_err("no cluster yet");
    assert_eq!(err, StoreError::NotLeader { leader: None });
    assert!(err.is_retryable());
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_restarted_manager_comes_back_with_every_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1, "127.0.0.1:4001".into(), fast(1000))
        .await
        .expect("open");
    store.initialize().await.expect("initialize");
    assert!(store.is_leader());
    assert!(store.has_state());
    assert_eq!(store.leader(), Some((1, "127.0.0.1:4001".to_string())));
    assert_eq!(store.members(), vec![(1, "127.0.0.1:4001".to_string())]);
    // A second initialize is a no-op.
    store.initialize().await.expect("initialize again");

    let mut rx = store.state();
    rx.mark_unchanged();
    propose_ok(&store, init_cluster()).await;
    assert!(
        rx.has_changed().expect("sender alive"),
        "applying a command publishes a new state"
    );
    propose_ok(&store, create_service("s1", "web")).await;
    propose_ok(&store, create_service("s2", "db")).await;
    // The apply error comes back as the command's result, and changes nothing.
    assert_eq!(
        store.propose(create_service("s3", "web")).await,
        Ok(CommandResult::Err(ApplyError::ServiceNameInUse(
            "web".into()
        )))
    );
    propose_ok(
        &store,
        Command::UpdateService {
            id: "s1".into(),
            spec: fixtures::spec("web", 5),
            at: Millis(7),
            expected_version: None,
        },
    )
    .await;
    let before = store.state().borrow().clone();
    assert_eq!(before.services.len(), 2);
    store.shutdown().await.expect("shutdown");
    drop(store);

    // No initialize: a one-member group elects itself from what is on disk.
    let store = Store::open(dir.path(), 1, "127.0.0.1:4001".into(), fast(1000))
        .await
        .expect("reopen");
    assert!(store.has_state());
    eventually("the restarted manager leads again", || async {
        store.is_leader()
    })
    .await;
    let after = wait_state(&store, "the log is re-applied", |s| {
        s.version == before.version
    })
    .await;
    assert_eq!(*after, *before);
    assert_eq!(
        after.services["s1"].spec.mode,
        shoal_types::ServiceMode::Replicated { replicas: 5 }
    );
    // And it keeps working.
    propose_ok(&store, create_service("s4", "cache")).await;
    assert!(store.state().borrow().services.contains_key("s4"));
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_restart_after_the_log_was_purged_restores_from_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 1, "127.0.0.1:4002".into(), fast(4))
        .await
        .expect("open");
    store.initialize().await.expect("initialize");
    propose_ok(&store, init_cluster()).await;
    for i in 0..20 {
        propose_ok(&store, create_service(&format!("s{i}"), &format!("svc{i}"))).await;
    }
    // Entries before the snapshot (less the 4 kept) are gone from the log.
    store
        .inner
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 8), "log purged")
        .await
        .expect("log purged after snapshots");
    let before = store.state().borrow().clone();
    store.shutdown().await.expect("shutdown");
    drop(store);

    let store = Store::open(dir.path(), 1, "127.0.0.1:4002".into(), fast(4))
        .await
        .expect("reopen");
    // Restored from the snapshot before any election.
    assert!(
        store.state().borrow().services.len() >= 8,
        "state comes from the snapshot at open"
    );
    eventually("the restarted manager leads again", || async {
        store.is_leader()
    })
    .await;
    let after = wait_state(&store, "the log after the snapshot is re-applied", |s| {
        s.version == before.version
    })
    .await;
    assert_eq!(*after, *before);
    assert_eq!(after.services.len(), 20);
    store.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn three_managers_on_loopback_replicate_and_fail_over() {
    // A small snapshot interval so the two new managers catch up by InstallSnapshot over gRPC.
    let config = fast(4);
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let store = Store::open(dir.path(), i as u64 + 1, addr.clone(), config.clone())
            .await
            .expect("open");
        servers.push(serve(&store, listener));
        stores.push(store);
        addrs.push(addr);
    }
    let (s1, s2, s3) = (&stores[0], &stores[1], &stores[2]);

    s1.initialize().await.expect("initialize");
    propose_ok(s1, init_cluster()).await;
    for i in 0..12 {
        propose_ok(s1, create_service(&format!("s{i}"), &format!("svc{i}"))).await;
    }
    s1.inner
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some(), "log purged")
        .await
        .expect("leader purged its log");

    s1.add_manager(2, addrs[1].clone())
        .await
        .expect("add manager 2");
    s1.add_manager(3, addrs[2].clone())
        .await
        .expect("add manager 3");
    let want: Vec<_> = (1..=3).zip(addrs.iter().cloned()).collect();
    assert_eq!(s1.members(), want);
    eventually("every manager sees three voters", || async {
        stores.iter().all(|s| s.members() == want)
    })
    .await;
    for s in [s2, s3] {
        assert!(!s.is_leader());
        assert_eq!(s.leader(), Some((1, addrs[0].clone())));
    }

    // A command proposed on the leader reaches every state.
    propose_ok(s1, create_service("late", "late-svc")).await;
    let leader_state = s1.state().borrow().clone();
    for s in &stores {
        let st = wait_state(s, "the new service is replicated", |st| {
            st.services.contains_key("late")
        })
        .await;
        assert_eq!(*st, *leader_state);
    }

    // A follower refuses writes and names the leader.
    assert_eq!(
        s2.propose(create_service("x", "x")).await,
        Err(StoreError::NotLeader {
            leader: Some((1, addrs[0].clone()))
        })
    );
    assert_eq!(
        s3.add_manager(9, "127.0.0.1:9".into()).await,
        Err(StoreError::NotLeader {
            leader: Some((1, addrs[0].clone()))
        })
    );

    eventually("the leader hears from both followers", || async {
        s1.manager_status()
            .iter()
            .all(|m| m.reachable == Some(true))
    })
    .await;
    let status = s1.manager_status();
    assert_eq!(
        status
            .iter()
            .filter(|m| m.leader)
            .map(|m| m.id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(
        s2.manager_status().iter().all(|m| m.reachable.is_none()),
        "a follower can't tell"
    );

    // The leader goes away: the other two elect one of themselves and carry on.
    s1.shutdown().await.expect("shutdown 1");
    servers[0].abort();
    eventually("a new leader is elected", || async {
        s2.is_leader() || s3.is_leader()
    })
    .await;
    let (new_leader, other) = if s2.is_leader() { (s2, s3) } else { (s3, s2) };
    propose_ok(new_leader, create_service("after", "after-failover")).await;
    wait_state(other, "the write after failover is replicated", |st| {
        st.services.contains_key("after")
    })
    .await;
    let down: Vec<ManagerStatus> = new_leader
        .manager_status()
        .into_iter()
        .filter(|m| m.id == 1)
        .collect();
    assert_eq!(down.len(), 1);
    eventually("the old leader shows as unreachable", || async {
        new_leader
            .manager_status()
            .iter()
            .any(|m| m.id == 1 && m.reachable == Some(false))
    })
    .await;

    new_leader
        .remove_manager(1)
        .await
        .expect("remove manager 1");
    let ids: Vec<_> = new_leader.members().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![2, 3]);

    for (s, server) in stores.iter().zip(servers).skip(1) {
        s.shutdown().await.expect("shutdown");
        server.abort();
    }
}

/// A Raft log that cannot be written (its disk is full) stops Raft on that manager for good,
/// and says so: the failed write, every later proposal at once, and `failed` for the
/// daemon, which stops the manager role on it (it is never left up with a dead Raft).
#[test]
fn a_full_disk_stops_raft_and_says_so() {
    // A thread of its own: the tmpfs lives in its mount namespace, which ends with it.
    std::thread::spawn(|| {
        shoal_testns::private_mounts();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(mounted.success(), "mount a tmpfs on {}", path.display());
        // Built on this thread, so its threads share the mount namespace.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = Store::open(&path, 1, "127.0.0.1:4009".into(), fast(1000))
                .await
                .expect("open");
            store.initialize().await.expect("initialize");
            propose_ok(&store, init_cluster()).await;
            assert_eq!(store.failure(), None);
            // Fill the disk.
            let mut filler = std::fs::File::create(path.join("filler")).expect("filler");
            let chunk = vec![0u8; 64 << 10];
            while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
            // Entries of 64 KiB, until one cannot be written.
            let mut failed = None;
            for i in 0..200 {
                let mut spec = fixtures::spec(&format!("s{i}"), 1);
                spec.labels.insert("pad".into(), "x".repeat(64 << 10));
                let cmd = Command::CreateService {
                    service: fixtures::service(&format!("id{i}"), spec),
                };
                match tokio::time::timeout(WAIT, store.propose(cmd)).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Err(_) => panic!("a write on a full disk hung"),
                }
            }
            let err = failed.expect("a write failed on the full disk");
            let why = tokio::time::timeout(WAIT, store.failed())
                .await
                .expect("failed() returns once raft has stopped");
            assert!(why.contains("No space left on device"), "{why}");
            assert_eq!(err, StoreError::Stopped(why.clone()), "{err}");
            assert_eq!(
                err.to_string(),
                format!(
                    "this manager's raft has stopped: {why}; fix the cause (the data \
                     directory's disk) and restart shoald"
                )
            );
            assert!(!err.is_retryable());
            assert!(!store.is_leader());
            assert_eq!(store.failure(), Some(why.clone()));
            // Later proposals are refused at once.
            let later = tokio::time::timeout(
                Duration::from_secs(1),
                store.propose(create_service("late", "late")),
            )
            .await
            .expect("refused at once");
            assert_eq!(later, Err(StoreError::Stopped(why)));
        });
        drop(rt);
        let _ = std::process::Command::new("umount").arg(&path).status();
    })
    .join()
    .expect("the test's thread");
}

#[tokio::test]
async fn a_survivor_forced_into_a_new_cluster_keeps_its_state_and_leads_alone() {
    let config = fast(1000);
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut stores = Vec::new();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let store = Store::open(dir.path(), i as u64 + 1, addr.clone(), config.clone())
            .await
            .expect("open");
        servers.push(serve(&store, listener));
        stores.push(store);
        addrs.push(addr);
    }
    stores[0].initialize().await.expect("initialize");
    propose_ok(&stores[0], init_cluster()).await;
    stores[0]
        .add_manager(2, addrs[1].clone())
        .await
        .expect("add 2");
    stores[0]
        .add_manager(3, addrs[2].clone())
        .await
        .expect("add 3");
    propose_ok(&stores[0], create_service("s1", "web")).await;
    let survivor = wait_state(&stores[2], "manager 3 has the service", |s| {
        s.services.contains_key("s1")
    })
    .await;

    // Managers 1 and 2 are lost: 3 alone has no quorum and elects no one.
    for (s, server) in stores.iter().zip(&servers).take(2) {
        s.shutdown().await.expect("shutdown");
        server.abort();
    }
    let s3 = stores.pop().expect("store 3");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!s3.is_leader());
    s3.shutdown().await.expect("shutdown 3");
    servers[2].abort();
    drop(s3);

    // A store that is open is not rewritten under it.
    let open = Store::open(dirs[2].path(), 3, addrs[2].clone(), config.clone())
        .await
        .expect("open 3");
    let err = Store::force_new_cluster(dirs[2].path(), 3, addrs[2].clone(), vec![])
        .await
        .expect_err("open elsewhere");
    assert!(err.to_string().contains("is still open"), "{err}");
    open.shutdown().await.expect("shutdown");
    drop(open);

    // A node with no raft state has nothing to keep.
    let empty = tempfile::tempdir().expect("tempdir");
    let err = Store::force_new_cluster(empty.path(), 9, "127.0.0.1:9".into(), vec![])
        .await
        .expect_err("nothing on disk");
    assert!(err.to_string().contains("no raft state"), "{err}");

    Store::force_new_cluster(
        dirs[2].path(),
        3,
        addrs[2].clone(),
        vec![create_service("s2", "forced")],
    )
    .await
    .expect("force a new cluster");
    let s3 = Store::open(dirs[2].path(), 3, addrs[2].clone(), config.clone())
        .await
        .expect("reopen 3");
    eventually("the survivor leads alone", || async { s3.is_leader() }).await;
    assert_eq!(s3.members(), vec![(3, addrs[2].clone())]);
    let st = wait_state(&s3, "the kept log and the forced command applied", |s| {
        s.services.contains_key("s2")
    })
    .await;
    assert_eq!(st.services["s1"], survivor.services["s1"]);
    // And it takes changes again.
    propose_ok(&s3, create_service("s3", "after")).await;
    s3.shutdown().await.expect("shutdown");
}
