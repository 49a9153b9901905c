//! The HTTP plumbing end to end: a fake [`Backend`] served on a Unix socket in a temporary
//! directory, driven through [`Client`]. The fake only records and answers; what is tested is
//! that every call reaches the right method with its arguments and that answers and errors
//! come back intact.

use std::sync::{Arc, Mutex};

use shoal_api::*;
use shoal_types::{
    Action, Actor, Event, EventType, Millis, Network, Node, NodeRole, ServiceSpec, Task, TaskState,
    TaskStatus, fixtures,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    /// The live side of `events` (made by the first subscriber).
    events: Mutex<Option<tokio::sync::broadcast::Sender<Event>>>,
}

fn event(kind: EventType, action: Action, id: &str, name: &str, ms: u64) -> Event {
    Event {
        kind,
        action,
        actor: Actor {
            id: id.into(),
            attributes: [("name".to_string(), name.to_string())].into(),
        },
        time: Millis(ms),
    }
}

/// What the fake manager kept: a service made at 1 s, its task at 2 s, a node down at 3 s.
fn kept() -> Vec<Event> {
    vec![
        event(EventType::Service, Action::Create, "s1", "web", 1_000),
        event(EventType::Task, Action::Create, "t1", "web.1", 2_000),
        event(EventType::Node, Action::Update, "n1", "node1", 3_000),
    ]
}

impl Fake {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

fn task(id: &str, slot: u64) -> Task {
    Task {
        id: id.into(),
        service_id: "s1".into(),
        service_name: "vote".into(),
        slot,
        node_id: Some("n1".into()),
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Running, Millis(1_000), "started"),
        spec_version: 1,
        networks: Vec::new(),
        ports: Vec::new(),
        restarts: 0,
        started_at: None,
        ready_at: None,
        spec: fixtures::spec("vote", 1).task_template.container_spec,
        created_at: Millis(0),
        updated_at: Millis(0),
    }
}

fn view() -> ServiceView {
    ServiceView {
        service: fixtures::service("s1", fixtures::spec("vote", 2)),
        status: ServiceStatus {
            running_tasks: 1,
            desired_tasks: 2,
            endpoint_nodes_synced: 2,
            endpoint_nodes: 3,
        },
    }
}

impl Backend for Fake {
    async fn info(&self) -> ApiResult<Info> {
        Ok(Info {
            node_id: "n1".into(),
            hostname: "node1".into(),
            role: "manager".into(),
            cluster_id: "c1".into(),
            node_addr: "10.0.0.1".into(),
            managers: vec!["10.0.0.1:2377".into()],
        })
    }
    async fn init(&self, req: InitRequest) -> ApiResult<InitResponse> {
        self.record(format!(
            "init {:?} {:?}",
            req.advertise_addr, req.ingress_subnet
        ));
        Ok(InitResponse {
            node_id: "n1".into(),
            worker_token: "wt".into(),
            manager_token: "mt".into(),
            manager_addr: "10.0.0.1:2377".into(),
            ingress_subnet: req.ingress_subnet.unwrap_or("10.0.0.0/24".into()),
            notes: vec!["ingress network: 10.0.0.0/24".into()],
        })
    }
    async fn join(&self, req: JoinRequest) -> ApiResult<JoinResponse> {
        if req.token == "bad" {
            return Err(ApiError::bad_request(
                "the join token was not accepted; get a new one with `shoal join-token worker`",
            ));
        }
        Ok(JoinResponse {
            node_id: "n2".into(),
            role: NodeRole::Worker,
        })
    }
    async fn leave(&self, force: bool) -> ApiResult<()> {
        self.record(format!("leave {force}"));
        Ok(())
    }
    async fn join_token(&self, role: NodeRole) -> ApiResult<JoinToken> {
        Ok(JoinToken {
            token: format!("token-{role}"),
            manager_addr: "10.0.0.1:2377".into(),
        })
    }
    async fn nodes(&self) -> ApiResult<Vec<Node>> {
        Ok(vec![
            fixtures::node("n1", "node1"),
            fixtures::node("n2", "node2"),
        ])
    }
    async fn node(&self, key: String) -> ApiResult<Node> {
        match key.as_str() {
            "node1" => Ok(fixtures::node("n1", "node1")),
            _ => Err(ApiError::not_found(format!("no such node: {key}"))),
        }
    }
    async fn update_node(&self, key: String, update: NodeUpdate) -> ApiResult<()> {
        self.record(format!(
            "update_node {key} {:?} {:?} {:?} {:?}",
            update.availability, update.label_add, update.label_rm, update.role
        ));
        Ok(())
    }
    async fn remove_node(&self, key: String, force: bool) -> ApiResult<()> {
        self.record(format!("remove_node {key} {force}"));
        Ok(())
    }
    async fn services(&self) -> ApiResult<Vec<ServiceView>> {
        Err(ApiError::not_a_manager())
    }
    async fn service(&self, key: String) -> ApiResult<ServiceView> {
        self.record(format!("service {key}"));
        Ok(view())
    }
    async fn create_service(&self, spec: ServiceSpec) -> ApiResult<CreateResponse> {
        if spec.name == "taken" {
            return Err(ApiError::conflict(
                "service name \"taken\" is already in use",
            ));
        }
        Ok(CreateResponse {
            id: format!("id-of-{}", spec.name),
        })
    }
    async fn update_service(&self, key: String, spec: ServiceSpec) -> ApiResult<()> {
        self.record(format!("update_service {key} {:?}", spec.replicas()));
        Ok(())
    }
    async fn remove_service(&self, key: String) -> ApiResult<()> {
        self.record(format!("remove_service {key}"));
        Ok(())
    }
    async fn tasks(&self, filter: TaskFilter) -> ApiResult<Vec<TaskView>> {
        self.record(format!("tasks {:?} {:?}", filter.service, filter.node));
        Ok(vec![TaskView {
            task: task("t1", 1),
            node_hostname: "node1".into(),
        }])
    }
    async fn task(&self, key: String) -> ApiResult<TaskView> {
        Ok(TaskView {
            task: task(&key, 2),
            node_hostname: "node1".into(),
        })
    }
    async fn service_logs(&self, key: String) -> ApiResult<Vec<LogLine>> {
        Ok(vec![LogLine {
            task: format!("{key}.1.t1"),
            node: "node1".into(),
            line: "hello".into(),
            timestamp: None,
        }])
    }
    async fn local_task_pid(&self, key: String) -> ApiResult<Pid> {
        match key.as_str() {
            "vote.1" => Ok(Pid {
                pid: 4242,
                ..Pid::default()
            }),
            _ => Err(ApiError::conflict(format!(
                "task {key} runs on node2; run shoal exec on node2"
            ))),
        }
    }
    async fn networks(&self) -> ApiResult<Vec<Network>> {
        Ok(vec![
            fixtures::network("w1", "ingress", "10.0.0.0/24", 4096),
            fixtures::network("w2", "front", "10.0.1.0/24", 4097),
        ])
    }
    async fn network(&self, key: String) -> ApiResult<Network> {
        match key.as_str() {
            "front" => Ok(fixtures::network("w2", "front", "10.0.1.0/24", 4097)),
            _ => Err(ApiError::not_found(format!("no such network: {key}"))),
        }
    }
    async fn create_network(&self, req: NetworkCreate) -> ApiResult<CreateResponse> {
        self.record(format!(
            "create_network {} {} {:?} {:?} {} {:?}",
            req.name, req.driver, req.subnet, req.gateway, req.attachable, req.labels
        ));
        if req.name == "front" {
            return Err(ApiError::conflict(
                "network name \"front\" is already in use",
            ));
        }
        Ok(CreateResponse {
            id: format!("id-of-{}", req.name),
        })
    }
    async fn remove_network(&self, key: String) -> ApiResult<()> {
        self.record(format!("remove_network {key}"));
        if key == "ingress" {
            return Err(ApiError::conflict(
                "the ingress network can't be removed: it carries the routing mesh",
            ));
        }
        Ok(())
    }
    async fn endpoint_stats(&self) -> ApiResult<EndpointStats> {
        Ok(EndpointStats {
            count: 7,
            p50_ms: 12,
            p99_ms: 40,
            max_ms: 41,
        })
    }
    async fn reset_endpoint_stats(&self) -> ApiResult<()> {
        self.record("reset_endpoint_stats".into());
        Ok(())
    }
    async fn events(&self) -> ApiResult<EventFeed> {
        let mut tx = self.events.lock().unwrap();
        let tx = tx.get_or_insert_with(|| tokio::sync::broadcast::channel(16).0);
        Ok(EventFeed {
            past: kept(),
            live: tx.subscribe(),
        })
    }
}

struct Daemon {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    fake: Arc<Fake>,
    client: Client,
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shoal.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let fake = Arc::new(Fake::default());
    tokio::spawn(serve(listener, router(fake.clone())));
    let client = Client::new(&format!("unix://{}", socket.display())).unwrap();
    Daemon {
        _dir: dir,
        socket,
        fake,
        client,
    }
}

fn calls(d: &Daemon) -> Vec<String> {
    std::mem::take(&mut *d.fake.calls.lock().unwrap())
}

#[tokio::test]
async fn swarm_calls_round_trip() {
    let d = start();
    let c = &d.client;
    assert_eq!(c.info().await.unwrap().hostname, "node1");
    let init = c
        .init(&InitRequest {
            advertise_addr: Some("10.0.0.1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(init.worker_token, "wt");
    let joined = c
        .join(&JoinRequest {
            token: "t".into(),
            remote_addr: "10.0.0.1:2377".into(),
            advertise_addr: None,
        })
        .await
        .unwrap();
    assert_eq!(joined.role, NodeRole::Worker);
    c.leave(true).await.unwrap();
    assert_eq!(
        c.join_token(NodeRole::Manager).await.unwrap().token,
        "token-manager"
    );
    assert_eq!(init.ingress_subnet, "10.0.0.0/24");
    assert_eq!(init.notes, ["ingress network: 10.0.0.0/24"]);
    let init = c
        .init(&InitRequest {
            ingress_subnet: Some("10.9.0.0/16".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(init.ingress_subnet, "10.9.0.0/16");
    assert_eq!(
        calls(&d),
        [
            "init Some(\"10.0.0.1\") None",
            "leave true",
            "init None Some(\"10.9.0.0/16\")"
        ]
    );
}

#[tokio::test]
async fn node_calls_round_trip() {
    let d = start();
    let c = &d.client;
    let nodes = c.nodes().await.unwrap();
    assert_eq!(
        nodes,
        vec![fixtures::node("n1", "node1"), fixtures::node("n2", "node2")]
    );
    assert_eq!(c.node("node1").await.unwrap().id, "n1");
    let update = NodeUpdate {
        availability: Some(shoal_types::Availability::Drain),
        label_add: vec!["zone=east".into()],
        label_rm: vec!["old".into()],
        role: Some(shoal_types::NodeRole::Manager),
    };
    c.update_node("node 2", &update).await.unwrap();
    c.remove_node("node2", false).await.unwrap();
    assert_eq!(
        calls(&d),
        [
            "update_node node 2 Some(Drain) [\"zone=east\"] [\"old\"] Some(Manager)",
            "remove_node node2 false"
        ]
    );
}

#[tokio::test]
async fn service_and_task_calls_round_trip() {
    let d = start();
    let c = &d.client;
    assert_eq!(c.service("vote").await.unwrap(), view());
    assert_eq!(
        c.create_service(&fixtures::spec("web", 1))
            .await
            .unwrap()
            .id,
        "id-of-web"
    );
    c.update_service("vote", &fixtures::spec("vote", 3))
        .await
        .unwrap();
    c.remove_service("vote").await.unwrap();
    let filter = TaskFilter {
        service: Some("vote".into()),
        node: Some("node1".into()),
    };
    let tasks = c.tasks(&filter).await.unwrap();
    assert_eq!(tasks[0].task, task("t1", 1));
    assert_eq!(tasks[0].node_hostname, "node1");
    c.tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(c.task("t9").await.unwrap().task.slot, 2);
    assert_eq!(c.service_logs("vote").await.unwrap()[0].task, "vote.1.t1");
    assert_eq!(c.local_task_pid("vote.1").await.unwrap().pid, 4242);
    assert_eq!(
        calls(&d),
        [
            "service vote",
            "update_service vote Some(3)",
            "remove_service vote",
            "tasks Some(\"vote\") Some(\"node1\")",
            "tasks None None",
        ]
    );
}

#[tokio::test]
async fn errors_carry_status_and_message() {
    let d = start();
    let c = &d.client;
    let check = |r: ClientError, status: u16, message: &str| {
        assert_eq!(r.status(), Some(status));
        assert_eq!(r.to_string(), message);
    };
    check(
        c.services().await.unwrap_err(),
        503,
        "this node is not a manager; run it on a manager",
    );
    check(c.node("nope").await.unwrap_err(), 404, "no such node: nope");
    check(
        c.create_service(&fixtures::spec("taken", 1))
            .await
            .unwrap_err(),
        409,
        "service name \"taken\" is already in use",
    );
    check(
        c.local_task_pid("vote.2").await.unwrap_err(),
        409,
        "task vote.2 runs on node2; run shoal exec on node2",
    );
    let bad = JoinRequest {
        token: "bad".into(),
        remote_addr: "x:1".into(),
        advertise_addr: None,
    };
    check(
        c.join(&bad).await.unwrap_err(),
        400,
        "the join token was not accepted; get a new one with `shoal join-token worker`",
    );
}

#[tokio::test]
async fn network_and_endpoint_calls_round_trip() {
    let d = start();
    let c = &d.client;
    let nets = c.networks().await.unwrap();
    assert_eq!(
        nets.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["ingress", "front"]
    );
    assert_eq!(
        c.network("front").await.unwrap(),
        fixtures::network("w2", "front", "10.0.1.0/24", 4097)
    );
    let mut req = NetworkCreate::new("back");
    req.subnet = Some("10.0.2.0/24".into());
    req.gateway = Some("10.0.2.254".into());
    req.attachable = true;
    req.labels.insert("tier".into(), "db".into());
    assert_eq!(c.create_network(&req).await.unwrap().id, "id-of-back");
    c.create_network(&NetworkCreate::new("plain"))
        .await
        .unwrap();
    c.remove_network("back net").await.unwrap();
    assert_eq!(
        c.endpoint_stats().await.unwrap(),
        EndpointStats {
            count: 7,
            p50_ms: 12,
            p99_ms: 40,
            max_ms: 41
        }
    );
    c.reset_endpoint_stats().await.unwrap();
    assert_eq!(
        calls(&d),
        [
            "create_network back overlay Some(\"10.0.2.0/24\") Some(\"10.0.2.254\") true {\"tier\": \"db\"}",
            "create_network plain overlay None None false {}",
            "remove_network back net",
            "reset_endpoint_stats",
        ]
    );
}

#[tokio::test]
async fn network_errors_and_wire_defaults() {
    let d = start();
    let c = &d.client;
    let e = c.network("nope").await.unwrap_err();
    assert_eq!(
        (e.status(), e.to_string()),
        (Some(404), "no such network: nope".into())
    );
    let e = c
        .create_network(&NetworkCreate::new("front"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    let e = c.remove_network("ingress").await.unwrap_err();
    assert_eq!(e.status(), Some(409));
    calls(&d);

    // Only Name is required on the wire: Driver defaults to overlay, the rest to empty.
    let body = r#"{"Name": "bare"}"#;
    let req = format!(
        "POST /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = raw(&d, &req).await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert!(r.ends_with(r#"{"ID":"id-of-bare"}"#), "{r}");
    assert_eq!(
        calls(&d),
        ["create_network bare overlay None None false {}"]
    );

    let r = raw(
        &d,
        "DELETE /v1/endpoints/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = raw(
        &d,
        "GET /v1/endpoints/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.ends_with(r#"{"Count":7,"P50Ms":12,"P99Ms":40,"MaxMs":41}"#),
        "{r}"
    );
}

#[test]
fn new_fields_are_optional_on_the_wire() {
    // An older daemon's answers still decode.
    let status: ServiceStatus =
        serde_json::from_str(r#"{"RunningTasks": 1, "DesiredTasks": 2}"#).unwrap();
    assert_eq!(
        (status.endpoint_nodes_synced, status.endpoint_nodes),
        (0, 0)
    );
    assert!(status.endpoints_synced());
    let init: InitResponse = serde_json::from_str(
        r#"{"NodeID": "n1", "WorkerToken": "w", "ManagerToken": "m", "ManagerAddr": "a:1"}"#,
    )
    .unwrap();
    assert!(init.ingress_subnet.is_empty() && init.notes.is_empty());
    let status = ServiceStatus {
        endpoint_nodes_synced: 2,
        endpoint_nodes: 3,
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&status).unwrap(),
        r#"{"RunningTasks":0,"DesiredTasks":0,"EndpointNodesSynced":2,"EndpointNodes":3}"#
    );
    assert!(!status.endpoints_synced());
    assert_eq!(
        serde_json::to_value(InitRequest::default()).unwrap(),
        serde_json::json!({})
    );
}

/// Sends one raw HTTP/1.1 request and returns the whole response.
async fn raw(d: &Daemon, request: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn bad_requests_get_json_messages() {
    let d = start();
    let r = raw(
        &d,
        "GET /v1/swarm/join-token/boss HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.ends_with(r#"{"message":"invalid role \"boss\": expected worker or manager"}"#),
        "{r}"
    );

    let body = "{\"Name\": 3}";
    let req = format!(
        "POST /v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = raw(&d, &req).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains(r#"{"message":"invalid request body: "#), "{r}");

    let r = raw(
        &d,
        "GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("no such API route"), "{r}");

    let r = raw(&d, "POST /v1/swarm/leave?force HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(calls(&d), ["leave true"]);
}

#[tokio::test]
async fn connection_failure_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("missing.sock");
    let c = Client::new(&format!("unix://{}", socket.display())).unwrap();
    let e = c.info().await.unwrap_err();
    assert_eq!(e.status(), None);
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to the shoal daemon at {}: is shoald running?",
            socket.display()
        )
    );
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let d = start();
    let doc = d.client.openapi().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("get", "/v1/info"),
        ("post", "/v1/swarm/init"),
        ("post", "/v1/swarm/join"),
        ("post", "/v1/swarm/leave"),
        ("get", "/v1/swarm/join-token/{role}"),
        ("post", "/v1/swarm/join-token/{role}/rotate"),
        ("get", "/v1/swarm/ca"),
        ("post", "/v1/swarm/ca/rotate"),
        ("get", "/v1/nodes"),
        ("get", "/v1/nodes/{key}"),
        ("delete", "/v1/nodes/{key}"),
        ("post", "/v1/nodes/{key}/update"),
        ("get", "/v1/services"),
        ("post", "/v1/services"),
        ("get", "/v1/services/{key}"),
        ("delete", "/v1/services/{key}"),
        ("post", "/v1/services/{key}/update"),
        ("post", "/v1/services/{key}/rollback"),
        ("get", "/v1/services/{key}/logs"),
        ("get", "/v1/images"),
        ("delete", "/v1/images/{name}"),
        ("post", "/v1/images/prune"),
        ("get", "/v1/tasks"),
        ("get", "/v1/tasks/{key}"),
        ("get", "/v1/tasks/{key}/pid"),
        ("get", "/v1/networks"),
        ("post", "/v1/networks"),
        ("get", "/v1/networks/{key}"),
        ("delete", "/v1/networks/{key}"),
        ("get", "/v1/endpoints/stats"),
        ("delete", "/v1/endpoints/stats"),
        ("get", "/v1/events"),
        ("get", "/v1/openapi.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert_eq!(doc, serde_json::to_value(openapi()).unwrap());
}

#[test]
fn every_response_has_a_description() {
    let doc = serde_json::to_value(openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, resp) in op["responses"].as_object().unwrap() {
                assert!(
                    resp["description"].is_string(),
                    "{method} {path} {status} has no description"
                );
            }
        }
    }
}

/// `shoal events` through the client: what a query returns and when the stream ends.
async fn events_of(d: &Daemon, q: EventQuery) -> Vec<String> {
    let mut got = Vec::new();
    d.client
        .events(&q, |e| {
            got.push(format!("{} {} {}", e.kind, e.action, e.actor.id));
            true
        })
        .await
        .unwrap();
    got
}

#[tokio::test]
async fn events_are_bounded_filtered_and_live() {
    let d = start();
    // --since/--until in the past: the kept events in the range, then the stream ends.
    let q = |since, until, filters: Option<&str>| EventQuery {
        since,
        until,
        filters: filters.map(String::from),
    };
    assert_eq!(
        events_of(&d, q(Some(0), Some(2_500), None)).await,
        ["service create s1", "task create t1"]
    );
    assert_eq!(
        events_of(&d, q(Some(1_500), Some(3_000), None)).await,
        ["task create t1", "node update n1"]
    );
    assert_eq!(
        events_of(&d, q(None, Some(1_000), None)).await,
        ["service create s1"]
    );
    assert_eq!(
        events_of(
            &d,
            q(Some(0), Some(3_000), Some(r#"{"type":["node","service"]}"#))
        )
        .await,
        ["service create s1", "node update n1"]
    );
    let err = d
        .client
        .events(&q(None, None, Some(r#"{"type":["container"]}"#)), |_| true)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains(
            "invalid filter 'type=container': events are of type service, node, task or network"
        ),
        "{err}"
    );

    // Live: with no --since, none of the kept ones, then what happens.
    let client = d.client.clone();
    let live = tokio::spawn(async move {
        let mut got = Vec::new();
        client
            .events(&EventQuery::default(), |e| {
                got.push(e.actor.id);
                got.len() < 2
            })
            .await
            .unwrap();
        got
    });
    let tx = loop {
        let tx = d.fake.events.lock().unwrap().clone();
        match tx {
            Some(tx) if tx.receiver_count() > 0 => break tx,
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    tx.send(event(
        EventType::Service,
        Action::Remove,
        "s1",
        "web",
        9_000,
    ))
    .unwrap();
    tx.send(event(
        EventType::Network,
        Action::Create,
        "net9",
        "front",
        9_001,
    ))
    .unwrap();
    assert_eq!(live.await.unwrap(), ["s1", "net9"]);

    // docker's /events: its shape and timestamps, no task events.
    let out = raw(
        &d,
        "GET /v1.41/events?since=0&until=3.000000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    // Chunked: the chunks' sizes are lines too.
    let lines: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect();
    let types: Vec<&str> = lines.iter().map(|e| e["Type"].as_str().unwrap()).collect();
    assert_eq!(types, ["service", "node"], "{out}");
    assert_eq!(lines[0]["scope"], "swarm");
    assert_eq!(lines[0]["timeNano"], 1_000_000_000u64);
    assert_eq!(lines[0]["Actor"]["Attributes"]["name"], "web");
}
