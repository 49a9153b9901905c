//! The manager role switched on and off at run time (`node promote|demote`,
//! `init --force-new-cluster`), while the node's agent and its tasks keep running.
//!
//! Port 2377's router is built once, when the node becomes active, and always mounts the
//! `Cluster` and `Raft` services behind a [`Switch`]: while the node is not a manager they
//! answer "this node is not a manager" (UNAVAILABLE, so a caller tries the next manager),
//! and the role's services are put in or taken out without touching the listener or the
//! connections on it. [`ManagerSlot`] is the same switch for what reads the manager
//! directly (the gate's deny list).

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::manager::Manager;

/// The node's manager role, if it has it now.
#[derive(Clone, Default)]
pub struct ManagerSlot(Arc<RwLock<Option<Arc<Manager>>>>);

impl ManagerSlot {
    pub fn get(&self) -> Option<Arc<Manager>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, manager: Option<Arc<Manager>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = manager;
    }
}

type Grpc = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The gRPC name a [`Switch`] is mounted under.
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
}

pub enum ClusterName {}
impl ServiceName for ClusterName {
    const NAME: &'static str = shoal_rpc::cluster_server::SERVICE_NAME;
}

pub enum RaftName {}
impl ServiceName for RaftName {
    const NAME: &'static str = shoal_rpc::raft_server::SERVICE_NAME;
}

/// A gRPC service that is there only while the node is a manager.
pub struct Switch<N> {
    inner: Arc<RwLock<Option<Grpc>>>,
    name: PhantomData<fn() -> N>,
}

impl<N> Clone for Switch<N> {
    fn clone(&self) -> Self {
        Switch {
            inner: Arc::clone(&self.inner),
            name: PhantomData,
        }
    }
}

impl<N> Default for Switch<N> {
    fn default() -> Self {
        Switch {
            inner: Default::default(),
            name: PhantomData,
        }
    }
}

impl<N> Switch<N> {
    /// Serves `svc` from now on (every connection, the open ones too).
    pub fn on<S, B>(&self, svc: S)
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let svc = svc.map_response(|r: http::Response<B>| r.map(Body::new));
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) =
            Some(BoxCloneSyncService::new(svc));
    }

    /// Answers "this node is not a manager" from now on.
    pub fn off(&self) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl<N: ServiceName> NamedService for Switch<N> {
    const NAME: &'static str = N::NAME;
}

impl<N> tower::Service<http::Request<Body>> for Switch<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness is the inner service's, checked per call (it may change between calls).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner()).clone();
        match inner {
            Some(svc) => Box::pin(svc.oneshot(req)),
            None => Box::pin(std::future::ready(Ok(tonic::Status::unavailable(
                "this node is not a manager",
            )
            .into_http()))),
        }
    }
}

/// The two services of the manager role on port 2377.
#[derive(Clone, Default)]
pub struct Switches {
    pub cluster: Switch<ClusterName>,
    pub raft: Switch<RaftName>,
}

impl Switches {
    pub fn off(&self) {
        self.cluster.off();
        self.raft.off();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers every call with an empty 200.
    #[derive(Clone)]
    struct Answers;
    impl tower::Service<http::Request<Body>> for Answers {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    fn grpc_status(r: &http::Response<Body>) -> Option<(String, String)> {
        let h = r.headers();
        Some((
            h.get("grpc-status")?.to_str().ok()?.to_string(),
            h.get("grpc-message")?.to_str().ok()?.to_string(),
        ))
    }

    #[tokio::test]
    async fn a_switch_answers_not_a_manager_until_on_and_after_off() {
        let switch: Switch<ClusterName> = Switch::default();
        // A clone is what the router holds: turning the original on reaches it.
        let mounted = switch.clone();
        let call = || mounted.clone().oneshot(http::Request::new(Body::empty()));
        let off = call().await.unwrap();
        // 14 is UNAVAILABLE: a caller tries the next manager.
        assert_eq!(
            grpc_status(&off),
            Some(("14".into(), "this%20node%20is%20not%20a%20manager".into()))
        );
        switch.on(Answers);
        assert_eq!(grpc_status(&call().await.unwrap()), None);
        switch.off();
        assert_eq!(grpc_status(&call().await.unwrap()).unwrap().0, "14");
        assert_eq!(
            <Switch<ClusterName> as NamedService>::NAME,
            "shoal.v1.Cluster"
        );
        assert_eq!(<Switch<RaftName> as NamedService>::NAME, "shoal.v1.Raft");
    }
}
