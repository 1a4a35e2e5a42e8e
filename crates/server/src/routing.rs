//! The operations that change where traffic goes: set the table, roll back, delete a
//! revision. The route table follows the store on its own (`routes`).

use std::collections::BTreeMap;
use std::sync::Arc;

use updraft_gateway::{host_for, tag_host_for};
use updraft_model::traffic::{all_to, resolve, rollback, validate_traffic, Routing, TrafficTarget};
use updraft_model::Service;
use updraft_runtime::clock::now_us;

use crate::platform::Platform;
use crate::views::ServiceView;
use crate::ApiError;

/// The URL a host is reached at through the gateway on `port`.
pub fn host_url(scheme: &str, host: &str, port: u16) -> String {
    match (scheme, port) {
        ("http", 80) | ("https", 443) => format!("{scheme}://{host}"),
        (_, port) => format!("{scheme}://{host}:{port}"),
    }
}

impl Platform {
    /// Where a service's requests go at `now_us`.
    pub fn routing(&self, svc: &Service, now_us: i64) -> Routing {
        resolve(
            &svc.config.traffic,
            &svc.latest_revision,
            svc.config.rollout.as_ref(),
            now_us,
        )
    }

    pub fn url(&self, service: &str, namespace: &str) -> String {
        host_url(
            self.config.scheme(),
            &host_for(service, namespace, &self.config.domain),
            self.config.gateway_addr.port(),
        )
    }

    pub fn tag_url(&self, tag: &str, service: &str, namespace: &str) -> String {
        host_url(
            self.config.scheme(),
            &tag_host_for(tag, service, namespace, &self.config.domain),
            self.config.gateway_addr.port(),
        )
    }

    /// The service, in a namespace that must exist (each missing one is a 404 naming it).
    pub async fn find_service(&self, namespace: &str, name: &str) -> Result<Service, ApiError> {
        self.require_namespace(namespace).await?;
        self.existing_service(namespace, name).await
    }

    pub async fn existing_service(&self, namespace: &str, name: &str) -> Result<Service, ApiError> {
        self.store
            .service(namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("service {name:?} does not exist in namespace {namespace:?}")))
    }

    /// Replaces a service's traffic table; a rollout under way ends.
    pub async fn set_traffic(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        traffic: Vec<TrafficTarget>,
    ) -> Result<ServiceView, ApiError> {
        let lock = self.locks.service(namespace, name);
        let _held = lock.lock().await;
        let svc = self.existing_service(namespace, name).await?;
        let revisions = self.store.revisions(namespace, name).await?;
        let names: Vec<&str> = revisions.iter().map(|r| r.name.as_str()).collect();
        validate_traffic("traffic", name, &traffic, Some(&names))?;
        let mut config = svc.config.clone();
        config.traffic = traffic;
        config.rollout = None;
        let svc = self
            .store
            .update_service_config(namespace, name, &config, svc.resource_version, now_us())
            .await?;
        self.applied.routes(&*self.store).await;
        self.service_view(&svc, true).await.map_err(ApiError::internal)
    }

    /// Sends all traffic to the revision before the one that serves most now (or to
    /// `to`), keeping tags.
    pub async fn rollback(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        to: Option<String>,
    ) -> Result<ServiceView, ApiError> {
        let table = {
            let svc = self.existing_service(namespace, name).await?;
            let revisions = self.store.revisions(namespace, name).await?;
            let generations: BTreeMap<String, u32> = revisions.iter().map(|r| (r.name.clone(), r.generation)).collect();
            match to {
                Some(to) => all_to(&svc.config.traffic, &to),
                None => {
                    let routing = self.routing(&svc, now_us());
                    rollback(&svc.config.traffic, &routing, &generations)
                        .map_err(|e| ApiError::new(axum::http::StatusCode::CONFLICT, e))?
                        .1
                }
            }
        };
        self.set_traffic(namespace, name, table).await
    }

    /// Deletes a revision nothing routes to and that is not its service's latest.
    pub async fn delete_revision(self: &Arc<Self>, namespace: &str, revision: &str) -> Result<(), ApiError> {
        let rev = self.store.revision(namespace, revision).await?.ok_or_else(|| {
            ApiError::not_found(format!(
                "revision {revision:?} does not exist in namespace {namespace:?}"
            ))
        })?;
        let lock = self.locks.service(namespace, &rev.service);
        let _held = lock.lock().await;
        let svc = self.existing_service(namespace, &rev.service).await?;
        let conflict = |why: String| ApiError::new(axum::http::StatusCode::CONFLICT, why);
        if svc.latest_revision == revision {
            return Err(conflict(format!(
                "revision {revision} is the latest of service {}; deploy a newer one first, or delete the service",
                svc.name
            )));
        }
        let routing = self.routing(&svc, now_us());
        if routing.routes_to(revision)
            || svc
                .config
                .traffic
                .iter()
                .any(|t| t.revision.as_deref() == Some(revision))
        {
            return Err(conflict(format!(
                "revision {revision} has traffic ({}% and tags [{}]); move its traffic with `updraft traffic {}` first",
                routing.percent_of(revision),
                routing.tags_of(revision).join(", "),
                svc.name
            )));
        }
        self.store.delete_revision(namespace, revision).await?;
        self.applied.all(&*self.store).await;
        self.deployer
            .discard_package_if_unused(&rev.config.package_digest)
            .await;
        Ok(())
    }
}
