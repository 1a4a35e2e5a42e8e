//! Sends the platform's own happenings (deployed, scaled, crashed, …) to the
//! namespace's `platform` sources, in the background: a deploy or a scaling decision
//! never waits on it, and a namespace that asked for none stores nothing.

use std::sync::Arc;

use cloudevents::{EventBuilder, EventBuilderV10};
use updraft_events::dispatch::Signals;
use updraft_events::queue::DeliveryQueue;
use updraft_events::routing::RoutingCache;
use updraft_store::events::Write;

pub struct Announcer {
    pub(crate) routing: Arc<RoutingCache>,
    pub(crate) queue: Arc<dyn DeliveryQueue>,
    pub(crate) signals: Arc<Signals>,
}

impl Announcer {
    /// Queues a `ty` event about `subject` (a service) with `data`, for the platform
    /// sources of `namespace` that want it.
    pub fn announce(self: &Arc<Self>, namespace: &str, ty: &'static str, subject: &str, data: serde_json::Value) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let namespace = namespace.to_string();
        let subject = subject.to_string();
        runtime.spawn(async move {
            if let Err(e) = this.send(&namespace, ty, &subject, data).await {
                tracing::warn!(namespace = %namespace, ty, "cannot queue a platform event: {e}");
            }
        });
    }

    async fn send(&self, namespace: &str, ty: &str, subject: &str, data: serde_json::Value) -> Result<(), String> {
        let routing = self.routing.current().await.map_err(|e| e.to_string())?;
        let event = EventBuilderV10::new()
            .id(uuid::Uuid::new_v4().to_string())
            .ty(ty)
            .source(format!("/apis/v1/namespaces/{namespace}/platform"))
            .subject(subject)
            .time(chrono::Utc::now())
            .data("application/json", data)
            .build()
            .map_err(|e| e.to_string())?;
        let Some(accepted) = routing.announce(namespace, &event).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        self.queue
            .submit(Write::Accept {
                namespace: namespace.to_string(),
                broker: String::new(),
                events: vec![accepted],
            })
            .stored()
            .await?;
        self.signals.queued.notify_one();
        Ok(())
    }
}
