//! The trait the daemon implements, and its object-safe twin that the router holds.
//!
//! Implementors write plain `async fn`s (Rust's return-position `impl Future` in traits); the
//! router needs one concrete state type, so [`DynBackend`] boxes each future and is
//! implemented for every [`Backend`]. Keys (`key` arguments) are what the user typed: an id,
//! an id prefix, or a name (hostname for nodes, service name, task name, network name).

use std::future::Future;
use std::pin::Pin;

use shoal_types::{Network, Node, NodeRole, ServiceSpec};

use crate::error::ApiResult;
use crate::types::*;

/// What shoald serves behind `/v1`. Every call returns [`crate::ApiError`] with a status
/// (400, 404, 409, 500, 503) and a message that says what to do.
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> impl Future<Output = ApiResult<Info>> + Send;
    fn init(&self, req: InitRequest) -> impl Future<Output = ApiResult<InitResponse>> + Send;
    fn join(&self, req: JoinRequest) -> impl Future<Output = ApiResult<JoinResponse>> + Send;
    fn leave(&self, force: bool) -> impl Future<Output = ApiResult<()>> + Send;
    fn join_token(&self, role: NodeRole) -> impl Future<Output = ApiResult<JoinToken>> + Send;
    /// `join-token --rotate`: a new token for `role`; the old one stops working.
    fn rotate_join_token(
        &self,
        role: NodeRole,
    ) -> impl Future<Output = ApiResult<JoinToken>> + Send {
        let _ = role;
        async {
            Err(crate::ApiError::new(
                503,
                "join tokens cannot be rotated here",
            ))
        }
    }
    /// `shoal ca`: the cluster's root CA.
    fn ca(&self) -> impl Future<Output = ApiResult<ClusterCa>> + Send {
        async { Err(crate::ApiError::new(503, "no cluster CA here")) }
    }
    /// `shoal ca --rotate`: starts moving the cluster to a new root CA; returns at once.
    fn rotate_ca(
        &self,
        _req: CaRotateRequest,
    ) -> impl Future<Output = ApiResult<ClusterCa>> + Send {
        async {
            Err(crate::ApiError::new(
                503,
                "the root CA cannot be rotated here",
            ))
        }
    }

    /// With `ManagerStatus.Leader` and `ManagerStatus.Reachability` filled in.
    fn nodes(&self) -> impl Future<Output = ApiResult<Vec<Node>>> + Send;
    fn node(&self, key: String) -> impl Future<Output = ApiResult<Node>> + Send;
    fn update_node(
        &self,
        key: String,
        update: NodeUpdate,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn remove_node(&self, key: String, force: bool) -> impl Future<Output = ApiResult<()>> + Send;

    fn services(&self) -> impl Future<Output = ApiResult<Vec<ServiceView>>> + Send;
    fn service(&self, key: String) -> impl Future<Output = ApiResult<ServiceView>> + Send;
    fn create_service(
        &self,
        spec: ServiceSpec,
    ) -> impl Future<Output = ApiResult<CreateResponse>> + Send;
    fn update_service(
        &self,
        key: String,
        spec: ServiceSpec,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn remove_service(&self, key: String) -> impl Future<Output = ApiResult<()>> + Send;

    /// `create_service` with the image options (pinning, registry login); by default the
    /// options are ignored.
    fn create_service_with(
        &self,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> impl Future<Output = ApiResult<ServiceCreated>> + Send {
        let _ = opts;
        async move {
            let r = self.create_service(spec).await?;
            Ok(ServiceCreated {
                id: r.id,
                warnings: vec![],
            })
        }
    }
    /// `update_service` with the image options; by default the options are ignored.
    fn update_service_with(
        &self,
        key: String,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> impl Future<Output = ApiResult<ServiceUpdated>> + Send {
        let _ = opts;
        async move {
            self.update_service(key, spec).await?;
            Ok(ServiceUpdated::default())
        }
    }

    /// `service rollback`: back to the previous spec, rolled out with its rollback config.
    fn rollback_service(&self, key: String) -> impl Future<Output = ApiResult<()>> + Send {
        async move {
            Err(crate::ApiError::new(
                503,
                format!("service {key} cannot be rolled back here"),
            ))
        }
    }

    /// The local node's images.
    fn images(&self) -> impl Future<Output = ApiResult<Vec<ImageSummary>>> + Send {
        async { Err(crate::ApiError::not_found("this daemon keeps no images")) }
    }
    /// Removes a local image (409 while a task uses it); `Untagged:`/`Deleted:` lines.
    fn remove_image(&self, name: String) -> impl Future<Output = ApiResult<Vec<String>>> + Send {
        async move { Err(crate::ApiError::not_found(format!("No such image: {name}"))) }
    }
    /// Removes the local images no task uses.
    fn prune_images(&self) -> impl Future<Output = ApiResult<ImagesPruned>> + Send {
        async { Err(crate::ApiError::not_found("this daemon keeps no images")) }
    }

    fn tasks(&self, filter: TaskFilter) -> impl Future<Output = ApiResult<Vec<TaskView>>> + Send;
    fn task(&self, key: String) -> impl Future<Output = ApiResult<TaskView>> + Send;
    fn service_logs(&self, key: String) -> impl Future<Output = ApiResult<Vec<LogLine>>> + Send;
    /// The host pid of a task running on *this* node (for `shoal exec`). A task elsewhere is
    /// an error naming the node that runs it.
    fn local_task_pid(&self, key: String) -> impl Future<Output = ApiResult<Pid>> + Send;
    /// The tasks *this* node runs or is starting (`docker ps` on any node, workers too).
    fn local_tasks(&self) -> impl Future<Output = ApiResult<Vec<shoal_types::Task>>> + Send {
        async { Err(crate::ApiError::unavailable("this daemon runs no tasks")) }
    }

    /// Every network, the ingress network included.
    fn networks(&self) -> impl Future<Output = ApiResult<Vec<Network>>> + Send;
    fn network(&self, key: String) -> impl Future<Output = ApiResult<Network>> + Send;
    /// Checks the driver, subnet and gateway; a name in use is a conflict (409).
    fn create_network(
        &self,
        req: NetworkCreate,
    ) -> impl Future<Output = ApiResult<CreateResponse>> + Send;
    /// A network that services use, or the ingress network, is a conflict (409).
    fn remove_network(&self, key: String) -> impl Future<Output = ApiResult<()>> + Send;

    /// The cluster's events (`shoal events`, docker's `/events`): managers only.
    fn events(&self) -> impl Future<Output = ApiResult<EventFeed>> + Send {
        async {
            Err(crate::ApiError::unavailable(
                "this daemon keeps no cluster events",
            ))
        }
    }

    /// How long endpoint-table changes took to reach every node.
    fn endpoint_stats(&self) -> impl Future<Output = ApiResult<EndpointStats>> + Send;
    /// Forgets the samples [`Backend::endpoint_stats`] summarises.
    fn reset_endpoint_stats(&self) -> impl Future<Output = ApiResult<()>> + Send;
}

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// [`Backend`] with boxed futures, so the router can hold `Arc<dyn DynBackend>`.
pub(crate) trait DynBackend: Send + Sync + 'static {
    fn info(&self) -> BoxFut<'_, Info>;
    fn init(&self, req: InitRequest) -> BoxFut<'_, InitResponse>;
    fn join(&self, req: JoinRequest) -> BoxFut<'_, JoinResponse>;
    fn leave(&self, force: bool) -> BoxFut<'_, ()>;
    fn join_token(&self, role: NodeRole) -> BoxFut<'_, JoinToken>;
    fn rotate_join_token(&self, role: NodeRole) -> BoxFut<'_, JoinToken>;
    fn ca(&self) -> BoxFut<'_, ClusterCa>;
    fn rotate_ca(&self, req: CaRotateRequest) -> BoxFut<'_, ClusterCa>;
    fn nodes(&self) -> BoxFut<'_, Vec<Node>>;
    fn node(&self, key: String) -> BoxFut<'_, Node>;
    fn update_node(&self, key: String, update: NodeUpdate) -> BoxFut<'_, ()>;
    fn remove_node(&self, key: String, force: bool) -> BoxFut<'_, ()>;
    fn services(&self) -> BoxFut<'_, Vec<ServiceView>>;
    fn service(&self, key: String) -> BoxFut<'_, ServiceView>;
    fn remove_service(&self, key: String) -> BoxFut<'_, ()>;
    fn create_service_with(
        &self,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> BoxFut<'_, ServiceCreated>;
    fn update_service_with(
        &self,
        key: String,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> BoxFut<'_, ServiceUpdated>;
    fn rollback_service(&self, key: String) -> BoxFut<'_, ()>;
    fn images(&self) -> BoxFut<'_, Vec<ImageSummary>>;
    fn remove_image(&self, name: String) -> BoxFut<'_, Vec<String>>;
    fn prune_images(&self) -> BoxFut<'_, ImagesPruned>;
    fn tasks(&self, filter: TaskFilter) -> BoxFut<'_, Vec<TaskView>>;
    fn task(&self, key: String) -> BoxFut<'_, TaskView>;
    fn service_logs(&self, key: String) -> BoxFut<'_, Vec<LogLine>>;
    fn local_task_pid(&self, key: String) -> BoxFut<'_, Pid>;
    fn local_tasks(&self) -> BoxFut<'_, Vec<shoal_types::Task>>;
    fn networks(&self) -> BoxFut<'_, Vec<Network>>;
    fn network(&self, key: String) -> BoxFut<'_, Network>;
    fn create_network(&self, req: NetworkCreate) -> BoxFut<'_, CreateResponse>;
    fn remove_network(&self, key: String) -> BoxFut<'_, ()>;
    fn events(&self) -> BoxFut<'_, EventFeed>;
    fn endpoint_stats(&self) -> BoxFut<'_, EndpointStats>;
    fn reset_endpoint_stats(&self) -> BoxFut<'_, ()>;
}

impl<B: Backend> DynBackend for B {
    fn info(&self) -> BoxFut<'_, Info> {
        Box::pin(Backend::info(self))
    }
    fn init(&self, req: InitRequest) -> BoxFut<'_, InitResponse> {
        Box::pin(Backend::init(self, req))
    }
    fn join(&self, req: JoinRequest) -> BoxFut<'_, JoinResponse> {
        Box::pin(Backend::join(self, req))
    }
    fn leave(&self, force: bool) -> BoxFut<'_, ()> {
        Box::pin(Backend::leave(self, force))
    }
    fn join_token(&self, role: NodeRole) -> BoxFut<'_, JoinToken> {
        Box::pin(Backend::join_token(self, role))
    }
    fn rotate_join_token(&self, role: NodeRole) -> BoxFut<'_, JoinToken> {
        Box::pin(Backend::rotate_join_token(self, role))
    }
    fn ca(&self) -> BoxFut<'_, ClusterCa> {
        Box::pin(Backend::ca(self))
    }
    fn rotate_ca(&self, req: CaRotateRequest) -> BoxFut<'_, ClusterCa> {
        Box::pin(Backend::rotate_ca(self, req))
    }
    fn nodes(&self) -> BoxFut<'_, Vec<Node>> {
        Box::pin(Backend::nodes(self))
    }
    fn node(&self, key: String) -> BoxFut<'_, Node> {
        Box::pin(Backend::node(self, key))
    }
    fn update_node(&self, key: String, update: NodeUpdate) -> BoxFut<'_, ()> {
        Box::pin(Backend::update_node(self, key, update))
    }
    fn remove_node(&self, key: String, force: bool) -> BoxFut<'_, ()> {
        Box::pin(Backend::remove_node(self, key, force))
    }
    fn services(&self) -> BoxFut<'_, Vec<ServiceView>> {
        Box::pin(Backend::services(self))
    }
    fn service(&self, key: String) -> BoxFut<'_, ServiceView> {
        Box::pin(Backend::service(self, key))
    }
    fn remove_service(&self, key: String) -> BoxFut<'_, ()> {
        Box::pin(Backend::remove_service(self, key))
    }
    fn create_service_with(
        &self,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> BoxFut<'_, ServiceCreated> {
        Box::pin(Backend::create_service_with(self, spec, opts))
    }
    fn update_service_with(
        &self,
        key: String,
        spec: ServiceSpec,
        opts: ServiceOptions,
    ) -> BoxFut<'_, ServiceUpdated> {
        Box::pin(Backend::update_service_with(self, key, spec, opts))
    }
    fn rollback_service(&self, key: String) -> BoxFut<'_, ()> {
        Box::pin(Backend::rollback_service(self, key))
    }
    fn images(&self) -> BoxFut<'_, Vec<ImageSummary>> {
        Box::pin(Backend::images(self))
    }
    fn remove_image(&self, name: String) -> BoxFut<'_, Vec<String>> {
        Box::pin(Backend::remove_image(self, name))
    }
    fn prune_images(&self) -> BoxFut<'_, ImagesPruned> {
        Box::pin(Backend::prune_images(self))
    }
    fn tasks(&self, filter: TaskFilter) -> BoxFut<'_, Vec<TaskView>> {
        Box::pin(Backend::tasks(self, filter))
    }
    fn task(&self, key: String) -> BoxFut<'_, TaskView> {
        Box::pin(Backend::task(self, key))
    }
    fn service_logs(&self, key: String) -> BoxFut<'_, Vec<LogLine>> {
        Box::pin(Backend::service_logs(self, key))
    }
    fn local_task_pid(&self, key: String) -> BoxFut<'_, Pid> {
        Box::pin(Backend::local_task_pid(self, key))
    }
    fn local_tasks(&self) -> BoxFut<'_, Vec<shoal_types::Task>> {
        Box::pin(Backend::local_tasks(self))
    }
    fn networks(&self) -> BoxFut<'_, Vec<Network>> {
        Box::pin(Backend::networks(self))
    }
    fn network(&self, key: String) -> BoxFut<'_, Network> {
        Box::pin(Backend::network(self, key))
    }
    fn create_network(&self, req: NetworkCreate) -> BoxFut<'_, CreateResponse> {
        Box::pin(Backend::create_network(self, req))
    }
    fn remove_network(&self, key: String) -> BoxFut<'_, ()> {
        Box::pin(Backend::remove_network(self, key))
    }
    fn events(&self) -> BoxFut<'_, EventFeed> {
        Box::pin(Backend::events(self))
    }
    fn endpoint_stats(&self) -> BoxFut<'_, EndpointStats> {
        Box::pin(Backend::endpoint_stats(self))
    }
    fn reset_endpoint_stats(&self) -> BoxFut<'_, ()> {
        Box::pin(Backend::reset_endpoint_stats(self))
    }
}
