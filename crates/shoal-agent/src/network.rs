//! This node's part of the overlay networks and of DNS: an overlay namespace (bridge and
//! VXLAN device) per network the node takes part in, a veth into each local task's sandbox,
//! static forwarding entries for every remote task, and a DNS server in each sandbox that
//! answers from the node's one set of DNS zones (`zone::Zones`), through its own networks.
//!
//! The agent knows what it programmed (`Overlay::current`), so a change costs the
//! difference only; after a failure it reads the kernel state back before planning again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use shoal_dns::{DnsRuntime, DnsServer, Upstream};
use shoal_net::overlay::plan::{Attachment as NetAttachment, Current, Desired, Remote, Shadowed};
use shoal_net::overlay::{self, OverlaySpec};
use shoal_types::Task;
use shoal_types::endpoint::{EndpointView, TaskEndpoint};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::guard::Guard;
use crate::mesh::{self, LocalTask, Mesh, MeshPathChoice, MeshPathInfo};
use crate::vip::{VipBalancer, VipBalancerInfo};
use crate::zone::Zones;

/// An endpoint table that waited this long for the network lock is logged (debug).
const LOCK_WAIT_SAID: Duration = Duration::from_millis(5);

pub struct NetworkAgent {
    node_id: String,
    vtep: Ipv4Addr,
    upstream: Upstream,
    /// The threads that serve every sandbox's DNS sockets: a few for the node, none per
    /// sandbox, and apart from the daemon's runtime so DNS load never delays heartbeats.
    dns: DnsRuntime,
    /// The node's VIP balancer (eBPF, or nftables in each sandbox): `crate::vip`.
    vip: Arc<VipBalancer>,
    /// The routing mesh's path, chosen once when the agent starts.
    mesh_path: MeshPathInfo,
    // Held across netlink calls (an async mutex): one change at a time, in order.
    inner: Mutex<Inner>,
}

struct Inner {
    view: Arc<EndpointView>,
    overlays: BTreeMap<String, Overlay>,
    sandboxes: BTreeMap<String, Sandbox>,
    /// Each network's local attachments by address, kept as sandboxes come and go: an
    /// overlay's change is planned from the difference with what it was programmed from
    /// (a persistent map, so the walk costs the change, not the node's tasks).
    locals: BTreeMap<String, imbl::OrdMap<Ipv4Addr, NetAttachment>>,
    mesh: Mesh,
    /// The node's guard table (`crate::guard`): made before the gateway or an overlay.
    guard: Guard,
    /// Set by `leave`: a view that arrives after it (the session is not stopped yet) must
    /// not set the data plane up again.
    left: bool,
    /// The last `publish` from `apply_view` failed: the next view publishes whatever changed.
    publish_failed: bool,
    /// The node's DNS zones, which every sandbox's DNS server follows.
    zones: Zones,
}

struct Overlay {
    spec: OverlaySpec,
    /// What this agent has programmed; `None` after a failure (read back before planning).
    current: Option<Current>,
    /// What `current` was programmed from: the local attachments and the network's tasks
    /// (the view's persistent map). With the same attachments, the next change is planned
    /// from the difference between the two task maps alone.
    synced: Option<Synced>,
}

/// What an overlay's programming was made from.
struct Synced {
    attachments: imbl::OrdMap<Ipv4Addr, NetAttachment>,
    tasks: imbl::OrdMap<String, TaskEndpoint>,
    /// Remote endpoints hidden by a local attachment at their address.
    shadowed: Shadowed,
}

struct Sandbox {
    netns: String,
    /// (network id, address, interface name in the sandbox).
    attachments: Vec<(String, Ipv4Net, String)>,
    dns: Option<DnsServer>,
    /// Its address on the gateway bridge (its way out, and `mode=host` ports).
    gw_addr: Option<Ipv4Addr>,
    task: Task,
    /// The worker found the task ready (`NetworkAgent::set_ready`): its `mode=host` and
    /// `traffic=local` ports reach it from then on.
    ready: bool,
}

impl NetworkAgent {
    pub fn new(
        node_id: String,
        vtep: Ipv4Addr,
        upstream: Upstream,
        vip: Arc<VipBalancer>,
        mesh_path: MeshPathChoice,
        dns_metrics: Arc<shoal_dns::DnsMetrics>,
        dns_steer_by_cpu: bool,
    ) -> NetworkAgent {
        let mesh = Mesh::new(&node_id, vtep, mesh_path);
        NetworkAgent {
            mesh_path: mesh.info(),
            node_id,
            vtep,
            upstream,
            dns: {
                let dns = DnsRuntime::default().with_metrics(dns_metrics);
                if dns_steer_by_cpu {
                    dns.steered_by_cpu()
                } else {
                    dns
                }
            },
            vip,
            inner: Mutex::new(Inner {
                view: Arc::new(EndpointView::default()),
                overlays: BTreeMap::new(),
                sandboxes: BTreeMap::new(),
                locals: BTreeMap::new(),
                mesh,
                guard: Guard::default(),
                left: false,
                publish_failed: false,
                zones: Zones::new(),
            }),
        }
    }

    /// The VIP balancer this node uses, and why if it is the nftables fallback (for `shoal
    /// node inspect`).
    pub fn vip_balancer_kind(&self) -> VipBalancerInfo {
        self.vip.info()
    }

    /// What the node's data plane counted per backend (`crate::counts`), read now.
    pub async fn dataplane_counts(&self) -> crate::counts::DataplaneCounts {
        let vip = self.vip.connection_counts().await;
        let inner = self.inner.lock().await;
        let local: std::collections::HashMap<Ipv4Addr, String> = inner
            .sandboxes
            .values()
            .filter_map(|s| Some((s.gw_addr?, s.task.name())))
            .collect();
        let mesh = crate::counts::label_mesh(&inner.mesh.connection_counts(), &local);
        crate::counts::DataplaneCounts {
            vip_balancer: self.vip.kind(),
            mesh_path: self.mesh_path.kind,
            vip,
            mesh,
        }
    }

    /// The routing mesh's path on this node, and why if it is the nftables fallback.
    pub fn mesh_path(&self) -> MeshPathInfo {
        self.mesh_path.clone()
    }

    /// Overlay namespace names must be unique on the machine (lab nodes share one kernel).
    fn overlay_netns(&self, network_id: &str) -> String {
        format!(
            "shoal-ov-{}-{}",
            &self.node_id[..12.min(self.node_id.len())],
            &network_id[..12.min(network_id.len())]
        )
    }

    /// Before a task's process starts: plug it into each of its networks and start its DNS
    /// server. On error nothing of the task's is left behind.
    pub async fn prepare_task(&self, task: &Task, netns: &str) -> Result<(), String> {
        let mut inner = self.inner.lock().await;
        let held = Instant::now();
        if inner.left {
            return Err("the node has left the cluster".into());
        }
        let mut attachments = Vec::new();
        for (i, a) in task.networks.iter().enumerate() {
            let info = inner
                .view
                .networks
                .get(&a.network_id)
                .map(|n| n.info.clone())
                .ok_or_else(|| {
                    format!(
                        "network {} is not in this node's endpoint table yet",
                        a.network_id
                    )
                })?;
            self.ensure_overlay(&mut inner, &a.network_id, info.vni, info.subnet)
                .await?;
            attachments.push((a.network_id.clone(), a.addr, format!("eth{i}")));
        }
        let zones = inner.zones.subscribe();
        for (net, addr, ifname) in &attachments {
            inner.locals.entry(net.clone()).or_default().insert(
                addr.addr(),
                NetAttachment {
                    addr: *addr,
                    sandbox: netns.to_string(),
                    ifname: ifname.clone(),
                },
            );
        }
        inner.sandboxes.insert(
            task.id.clone(),
            Sandbox {
                netns: netns.to_string(),
                attachments: attachments.clone(),
                dns: None,
                gw_addr: None,
                task: task.clone(),
                // An adopted task the manager already knew ready stays so.
                ready: task.status.state == shoal_types::TaskState::Running && task.status.ready,
            },
        );
        let mut result = Ok(());
        for (net, _, _) in &attachments {
            if let Err(e) = self.reconcile(&mut inner, net).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            let nets = attachments.iter().map(|a| a.0.clone()).collect();
            match DnsServer::start(&self.dns, netns, zones, nets, self.upstream.clone()).await {
                Ok(dns) => {
                    if let Some(s) = inner.sandboxes.get_mut(&task.id) {
                        s.dns = Some(dns);
                    }
                }
                Err(e) => result = Err(format!("failed to start the task's DNS server: {e}")),
            }
        }
        if result.is_ok() {
            let nets: Vec<String> = attachments.iter().map(|a| a.0.clone()).collect();
            result = self
                .vip
                .attach_sandbox(&task.id, netns, &nets, &inner.view)
                .await;
        }
        if result.is_ok() {
            result = self.attach_gateway(&mut inner, &task.id, netns).await;
        }
        if result.is_err() {
            drop(inner);
            self.release_task(&task.id).await;
            return result;
        }
        // A task that publishes no port is not in the mesh's input (`MeshInput` reads local
        // tasks only for their published ports): nothing to remake, at no cost per local task.
        if publishes(task)
            && let Err(e) = self.publish(&mut inner).await
        {
            warn!("failed to update published ports: {e}");
        }
        debug!(
            task = %task.id,
            held_ms = held.elapsed().as_millis() as u64,
            "plugged the task into its networks"
        );
        result
    }

    /// The task's way out through the node, and its address for local published ports.
    async fn attach_gateway(
        &self,
        inner: &mut Inner,
        task_id: &str,
        netns: &str,
    ) -> Result<(), String> {
        let overlays = subnets(&inner.view);
        ensure_mesh(inner, &overlays).await?;
        let addr = inner
            .mesh
            .take_addr()
            .ok_or("the gateway bridge has no free address")?;
        if let Some(s) = inner.sandboxes.get_mut(task_id) {
            s.gw_addr = Some(addr);
        }
        shoal_net::gateway::attach_gateway(
            &inner.mesh.gateway,
            netns,
            mesh::TASK_GW_IF,
            addr,
            true,
        )
        .await
        .map_err(|e| format!("failed to attach the task to the gateway bridge: {e}"))?;
        inner.mesh.task_attached(addr)
    }

    /// Programs the published ports from the endpoint table and the local tasks.
    async fn publish(&self, inner: &mut Inner) -> Result<(), String> {
        if !inner.mesh.ready {
            return Ok(());
        }
        let local: Vec<LocalTask<'_>> = inner
            .sandboxes
            .values()
            .filter_map(|s| {
                s.gw_addr.map(|gw_addr| LocalTask {
                    service_id: &s.task.service_id,
                    gw_addr,
                    task: &s.task,
                    ready: s.ready,
                })
            })
            .collect();
        let input = inner.mesh.input(&inner.view, &self.node_id, &local);
        inner.mesh.apply(&input).await
    }

    /// The worker found a local task ready (or no longer): its node-local published ports
    /// follow. Cluster-wide paths follow the manager's endpoint table, except the flows other
    /// nodes forward here: they go to a task ready here even before this node's table says so,
    /// since another node may apply the table first and forward a connection before this one
    /// has (with no rule here, the node would answer it with a reset).
    pub async fn set_ready(&self, task_id: &str, ready: bool) {
        let mut inner = self.inner.lock().await;
        let Some(sandbox) = inner.sandboxes.get_mut(task_id) else {
            return;
        };
        if sandbox.ready == ready {
            return;
        }
        sandbox.ready = ready;
        let published = publishes(&sandbox.task);
        if published && let Err(e) = self.publish(&mut inner).await {
            warn!("failed to update published ports: {e}");
        }
    }

    /// After a task's process has exited: unplug it and stop its DNS server.
    ///
    /// In three steps, so that the slow part holds no lock: deleting a veth waits in the
    /// kernel (tens of ms on a busy node, `bench/scale/README.md`), and a table that waited
    /// for the lock meanwhile reached the node's clients that much later.
    /// 1. Locked: the task leaves the node's state, its VIPs, DNS and published ports.
    /// 2. Unlocked: its veths are deleted from the sandbox's end. Those names are the
    ///    sandbox's own, so this cannot touch a newer task's veth; the host ends' names
    ///    (made from the addresses) stay reserved meanwhile, as below.
    /// 3. Locked again: the gateway address is freed and the overlays reconciled. What
    ///    step 2 could not delete is deleted here by name, as before.
    pub async fn release_task(&self, task_id: &str) {
        let mut inner = self.inner.lock().await;
        let Some(mut sandbox) = inner.sandboxes.remove(task_id) else {
            return;
        };
        let held = Instant::now();
        self.vip.release_sandbox(task_id).await;
        if let Some(dns) = sandbox.dns.take() {
            dns.stop().await;
        }
        if let Some(addr) = sandbox.gw_addr {
            // Its address stays taken until its veth is gone (`gateway::gw_ifname`).
            inner.mesh.task_detached(addr);
        }
        if publishes(&sandbox.task)
            && let Err(e) = self.publish(&mut inner).await
        {
            warn!("failed to update published ports: {e}");
        }
        // Its overlay attachments stay in `locals` meanwhile: a reconcile in between plans
        // nothing for them, and a newer task given the same address replaces them there
        // (its veth made after the old one is deleted by name, under the lock).
        let first = held.elapsed();
        drop(inner);

        let mut ifnames: Vec<&str> = sandbox.attachments.iter().map(|a| a.2.as_str()).collect();
        if sandbox.gw_addr.is_some() {
            ifnames.push(mesh::TASK_GW_IF);
        }
        let unplugged = Instant::now();
        if !ifnames.is_empty()
            && let Err(e) = unplug(&sandbox.netns, &ifnames).await
        {
            debug!(task = task_id, "veths left to delete by name: {e}");
        }
        let unplugged = unplugged.elapsed();

        let mut inner = self.inner.lock().await;
        let held = Instant::now();
        if let Some(addr) = sandbox.gw_addr {
            // Gone with the sandbox's end unless that failed: then deleted here.
            if let Err(e) = shoal_net::gateway::detach_gateway(addr).await {
                warn!(
                    task = task_id,
                    "failed to detach the task from the gateway bridge: {e}"
                );
            }
            inner.mesh.free_addr(addr);
        }
        for (net, addr, _) in &sandbox.attachments {
            if let Some(locals) = inner.locals.get_mut(net) {
                // Another sandbox's attachment at the same address (the table moved it) stays.
                if locals
                    .get(&addr.addr())
                    .is_some_and(|a| a.sandbox == sandbox.netns)
                {
                    locals.remove(&addr.addr());
                }
                if locals.is_empty() {
                    inner.locals.remove(net);
                }
            }
        }
        for (net, _, _) in &sandbox.attachments {
            if let Err(e) = self.reconcile(&mut inner, net).await {
                warn!(task = task_id, network = %net, "failed to detach task: {e}");
            }
        }
        debug!(
            task = task_id,
            held_ms = (first + held.elapsed()).as_millis() as u64,
            unlocked_ms = unplugged.as_millis() as u64,
            "released the task's networks"
        );
    }

    /// A new endpoint table: overlays for its networks, forwarding entries for remote
    /// tasks, and the node's DNS zones. Returns once the kernel and DNS have it, with what
    /// failed (empty when all of it applied): the session acks only a whole apply.
    pub async fn apply_view(&self, view: Arc<EndpointView>) -> Vec<String> {
        let mut failed = Vec::new();
        let asked = Instant::now();
        let mut inner = self.inner.lock().await;
        // A task's start or release holds the lock across its kernel work, and the table
        // waits: said, so that a slow apply can be told from a slow kernel.
        let waited = asked.elapsed();
        if waited >= LOCK_WAIT_SAID {
            debug!(
                waited_ms = waited.as_millis() as u64,
                version = view.version,
                "the endpoint table waited for the node's network lock"
            );
        }
        if inner.left {
            return failed;
        }
        let old_view = std::mem::replace(&mut inner.view, Arc::clone(&view));
        // The nodes' VXLAN is let in before forwarding entries point at them (the members
        // first: a table made now starts with them).
        if let Err(e) = inner.guard.follow(&view).await {
            warn!("{e}");
            failed.push(e.to_string());
        }
        if let Err(e) = inner.guard.ensure().await {
            warn!("{e}");
            failed.push(e.to_string());
        }
        // The gateway bridge carries published ports to local tasks.
        if view.networks.values().any(|n| n.info.ingress)
            && let Err(e) = ensure_mesh(&mut inner, &subnets(&view)).await
        {
            warn!("failed to set up the routing mesh: {e}");
            failed.push(format!("failed to set up the routing mesh: {e}"));
        }
        // Names and VIPs first: a task that leaves gets no new flow from here before its
        // forwarding entries go below (a connect that picked it in between would send its
        // SYN into a missing neighbour entry and hang until it timed out).
        // Once for the node, not per sandbox: every DNS server reads the same zones.
        inner.zones.update(&view);
        // eBPF: a few map writes for what changed, once for the node; nftables: each sandbox.
        self.vip.apply(&view).await;
        for (id, n) in &view.networks {
            if let Err(e) = self
                .ensure_overlay(&mut inner, id, n.info.vni, n.info.subnet)
                .await
            {
                warn!(network = %n.info.name, "failed to set up the overlay network: {e}");
                failed.push(format!(
                    "failed to set up overlay network {}: {e}",
                    n.info.name
                ));
            }
        }
        let ids: Vec<String> = inner.overlays.keys().cloned().collect();
        for id in ids {
            let dropped = !view.networks.contains_key(&id) && !inner.locals.contains_key(&id);
            if dropped {
                if let Some(ov) = inner.overlays.remove(&id) {
                    info!(netns = %ov.spec.netns, "removing overlay network this node no longer takes part in");
                    if let Err(e) = overlay::remove_overlay(&ov.spec.netns).await {
                        warn!(netns = %ov.spec.netns, "failed to remove overlay: {e}");
                    }
                }
                continue;
            }
            if let Err(e) = self.reconcile(&mut inner, &id).await {
                warn!(network = %id, "failed to update forwarding entries: {e}");
                failed.push(format!(
                    "failed to update the forwarding entries of network {id}: {e}"
                ));
            }
        }
        // Published ports follow the ingress network and the local tasks, whose changes
        // publish on their own (`prepare_task`, `set_ready`, `release_task`): a change of
        // another network leaves them as they are, and making the mesh's input walks every
        // local task. Again after a failure, until one succeeds.
        if inner.publish_failed || ingress_of(&old_view) != ingress_of(&view) {
            match self.publish(&mut inner).await {
                Ok(()) => inner.publish_failed = false,
                Err(e) => {
                    inner.publish_failed = true;
                    warn!("failed to update published ports: {e}");
                    failed.push(format!("failed to update published ports: {e}"));
                }
            }
        }
        failed
    }

    /// The node leaves the cluster, its tasks gone: no published port, `route_localnet` off
    /// again, then the guard removed (kept if either step fails: what it guards is still on).
    pub async fn leave(&self) {
        let mut inner = self.inner.lock().await;
        inner.left = true;
        // The overlays go too: a namespace left behind keeps its VXLAN device, and the node
        // joining again (a new node id, so a new namespace name) could not make one with
        // the same VNI.
        for (_, ov) in std::mem::take(&mut inner.overlays) {
            if let Err(e) = overlay::remove_overlay(&ov.spec.netns).await {
                warn!(netns = %ov.spec.netns, "failed to remove an overlay of a node that left: {e}");
            }
        }
        if inner.mesh.ready {
            let none = inner
                .mesh
                .input(&EndpointView::default(), &self.node_id, &[]);
            if let Err(e) = inner.mesh.apply(&none).await {
                warn!("failed to remove the published ports of a node that left: {e}");
                return;
            }
            if let Err(e) = shoal_net::gateway::release_route_localnet() {
                warn!("failed to turn route_localnet off on a node that left: {e}");
                return;
            }
            inner.mesh.ready = false;
        }
        if let Err(e) = inner.guard.remove().await {
            warn!("{e}");
        }
    }

    async fn ensure_overlay(
        &self,
        inner: &mut Inner,
        id: &str,
        vni: u32,
        subnet: Ipv4Net,
    ) -> Result<(), String> {
        if inner
            .overlays
            .get(id)
            .is_some_and(|o| o.spec.vni == vni && o.spec.subnet == subnet)
        {
            return Ok(());
        }
        // No VXLAN socket without the guard that keeps it to the cluster's nodes.
        inner.guard.ensure().await?;
        let spec = OverlaySpec::new(self.overlay_netns(id), vni, subnet, self.vtep);
        overlay::ensure_overlay(&spec)
            .await
            .map_err(|e| e.to_string())?;
        info!(netns = %spec.netns, vni, %subnet, "overlay network ready");
        inner.overlays.insert(
            id.to_string(),
            Overlay {
                spec,
                current: None,
                synced: None,
            },
        );
        Ok(())
    }

    /// Brings one overlay's veths and forwarding entries to what the sandboxes and the
    /// endpoint table say: from the difference with what it was programmed from when it
    /// knows that, from the whole (read back from the kernel after a failure) otherwise.
    async fn reconcile(&self, inner: &mut Inner, network_id: &str) -> Result<(), String> {
        let locals = inner.locals.get(network_id).cloned().unwrap_or_default();
        let tasks = inner
            .view
            .networks
            .get(network_id)
            .map(|n| n.tasks.clone())
            .unwrap_or_default();
        let Some(ov) = inner.overlays.get_mut(network_id) else {
            return Ok(());
        };
        if let (Some(current), Some(synced)) = (ov.current.as_mut(), ov.synced.as_mut()) {
            let mut gone = BTreeSet::new();
            let mut came = Vec::new();
            for (addr, was, is) in shoal_types::diff::changes(&synced.attachments, &locals) {
                if was.is_some() {
                    gone.insert(*addr);
                }
                came.extend(is.cloned());
            }
            let mut ops = overlay::plan::plan_locals(current, &synced.shadowed, &gone, &came);
            synced.shadowed.locals_changed(current, &gone, &came);
            current.record(&ops);
            let changes = remote_changes(&synced.tasks, &tasks, &self.node_id);
            let remote_ops = overlay::plan::plan_remotes(current, &changes);
            current.record(&remote_ops);
            synced.shadowed.remotes_changed(current, &changes);
            ops.extend(remote_ops);
            synced.attachments = locals;
            synced.tasks = tasks;
            if !ops.is_empty()
                && let Err(e) = overlay::apply(&ov.spec, &ops).await
            {
                ov.current = None;
                ov.synced = None;
                return Err(format!("failed to program overlay {}: {e}", ov.spec.netns));
            }
            return Ok(());
        }
        let desired = Desired {
            remotes: remotes(&tasks, &self.node_id),
            attachments: locals.values().cloned().collect(),
        };
        let current = match ov.current.take() {
            Some(c) => c,
            None => overlay::observe(&ov.spec)
                .await
                .map_err(|e| e.to_string())?,
        };
        let ops = overlay::plan::plan(&current, &desired);
        ov.synced = None;
        match overlay::apply(&ov.spec, &ops).await {
            Ok(()) => {
                ov.current = Some(programmed(&desired));
                ov.synced = Some(Synced {
                    attachments: locals,
                    tasks,
                    shadowed: Shadowed::of(&desired),
                });
                Ok(())
            }
            Err(e) => Err(format!("failed to program overlay {}: {e}", ov.spec.netns)),
        }
    }
}

/// Deletes a sandbox's veths from its own end (each takes its host end with it).
async fn unplug(netns: &str, ifnames: &[&str]) -> Result<(), shoal_net::NetError> {
    let nl = shoal_net::Netlink::in_netns(netns).await?;
    for name in ifnames {
        nl.delete_link_if_present(name).await?;
    }
    Ok(())
}

/// The gateway bridge, behind the guard: `route_localnet` is not turned on without it.
async fn ensure_mesh(inner: &mut Inner, overlays: &[Ipv4Net]) -> Result<(), String> {
    if !inner.mesh.ready {
        inner.guard.ensure().await?;
    }
    inner.mesh.ensure(overlays).await?;
    inner.guard.set_gateway(inner.mesh.gateway.subnet).await
}

/// The remote endpoints whose entry may differ between two versions of a network's tasks,
/// with the VTEP each should be reached through now (`None`: no remote endpoint now).
fn remote_changes(
    old: &imbl::OrdMap<String, TaskEndpoint>,
    new: &imbl::OrdMap<String, TaskEndpoint>,
    node_id: &str,
) -> BTreeMap<Ipv4Addr, Option<Ipv4Addr>> {
    let remote = |t: &TaskEndpoint| t.node_id != node_id;
    let mut gone = Vec::new();
    let mut now = Vec::new();
    for (_, was, is) in shoal_types::diff::changes(old, new) {
        gone.extend(was.filter(|t| remote(t)).map(|t| t.addr.addr()));
        now.extend(is.filter(|t| remote(t)).map(|t| (t.addr.addr(), t.vtep)));
    }
    // An address that left one task and came to another is the newcomer's.
    let mut changes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> =
        gone.into_iter().map(|a| (a, None)).collect();
    changes.extend(now.into_iter().map(|(a, v)| (a, Some(v))));
    changes
}

/// The view's ingress network, if any (compared between versions: the maps are persistent,
/// so an unchanged network compares equal at once).
fn ingress_of(view: &EndpointView) -> Option<&shoal_types::endpoint::NetworkEndpoints> {
    view.networks.values().find(|n| n.info.ingress)
}

fn subnets(view: &EndpointView) -> Vec<Ipv4Net> {
    view.networks.values().map(|n| n.info.subnet).collect()
}

/// The network's tasks on other nodes.
fn remotes(tasks: &imbl::OrdMap<String, TaskEndpoint>, node_id: &str) -> Vec<Remote> {
    tasks
        .values()
        .filter(|t| t.node_id != node_id)
        .map(|t| Remote {
            addr: t.addr.addr(),
            vtep: t.vtep,
        })
        .collect()
}

/// What the kernel holds after `desired` was applied in full.
fn programmed(desired: &Desired) -> Current {
    let local: std::collections::BTreeSet<Ipv4Addr> =
        desired.attachments.iter().map(|a| a.addr.addr()).collect();
    let remotes: BTreeMap<Ipv4Addr, Ipv4Addr> = desired
        .remotes
        .iter()
        .filter(|r| !local.contains(&r.addr))
        .map(|r| (r.addr, r.vtep))
        .collect();
    Current {
        attached: local,
        neighbours: remotes.keys().copied().collect(),
        fdb: remotes,
    }
}

/// Whether the task publishes a port: only then is it part of the mesh's input.
fn publishes(task: &Task) -> bool {
    task.ports.iter().any(|p| p.published_port.is_some())
}
