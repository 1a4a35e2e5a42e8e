//! The platform's eventing parts that hold no loop: the loops' wake-ups, and the
//! client deliveries to outside sinks go through. The queue and the routing are the
//! `events` crate's.

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use updraft_events::routing::RouteError;

use crate::error::ApiError;

/// Wake-ups for the trigger loops.
#[derive(Default)]
pub struct TriggerSignals {
    /// Something was queued or finished: the dispatcher looks again.
    pub(crate) queued: Notify,
    /// A trigger was created, changed or deleted: the scheduler and sources reload.
    pub(crate) changed: Notify,
}

impl TriggerSignals {
    pub fn triggers_changed(&self) {
        self.changed.notify_waiters();
        self.queued.notify_one();
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NoSuchNamespace(ns) => updraft_store::StoreError::NoSuchNamespace(ns).into(),
            RouteError::NoSuchBroker { .. } => ApiError::not_found(e.to_string()),
            RouteError::Encode(_) => ApiError::internal(e),
        }
    }
}

pub type SinkClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn sink_client() -> SinkClient {
    Client::builder(TokioExecutor::new()).build_http()
}
