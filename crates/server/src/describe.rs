//! Services and revisions as the API shows them: settings, traffic and live state.

use std::sync::atomic::Ordering;

use updraft_model::knative::{DesiredService, KService};
use updraft_model::quantity::{format_cpu, format_memory};
use updraft_model::traffic::Routing;
use updraft_model::{Revision, Service};
use updraft_runtime::clock::now_us;

use crate::platform::Platform;
use crate::revision_state::{ColdStart, RevisionState};
use crate::views::{rfc3339_us, CrashLoopView, RevisionView, RolloutView, RouteView, ScaleEventView, ServiceView};
use crate::ApiError;

impl Platform {
    pub async fn service_view(&self, svc: &Service, with_revisions: bool) -> anyhow::Result<ServiceView> {
        let now = now_us();
        let routing = self.routing(svc, now);
        let routed_states: Vec<_> = routing
            .percents
            .keys()
            .filter_map(|r| self.registry.get(&svc.namespace, r))
            .collect();
        let latest = self.registry.get(&svc.namespace, &svc.latest_revision);
        let mut routes: Vec<RouteView> = routing
            .percents
            .iter()
            .map(|(revision, percent)| (revision.clone(), *percent))
            .chain(
                routing
                    .tags
                    .values()
                    .filter(|r| !routing.percents.contains_key(*r))
                    .map(|r| (r.clone(), 0)),
            )
            .map(|(revision, percent)| {
                let tags = routing.tags_of(&revision);
                RouteView {
                    urls: tags
                        .iter()
                        .map(|t| self.tag_url(t, &svc.name, &svc.namespace))
                        .collect(),
                    tags,
                    revision,
                    percent,
                }
            })
            .collect();
        routes.dedup_by(|a, b| a.revision == b.revision);
        let mut view = ServiceView {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            url: self.url(&svc.name, &svc.namespace),
            latest_revision: svc.latest_revision.clone(),
            ready_instances: routed_states.iter().map(|s| s.endpoints.ready_count()).sum(),
            created_at: rfc3339_us(svc.created_at_us),
            updated_at: rfc3339_us(svc.updated_at_us),
            labels: svc.config.labels.clone(),
            annotations: svc.config.annotations.clone(),
            traffic: svc.config.traffic.clone(),
            routes,
            rollout: svc
                .config
                .rollout
                .as_ref()
                .filter(|r| !r.done(now))
                .map(|r| RolloutView {
                    from: r.from.clone(),
                    to: r.to.clone(),
                    percent: r.percent_at(now),
                    started_at: rfc3339_us(r.started_us),
                    duration: humantime::format_duration(std::time::Duration::from_micros(r.duration_us as u64))
                        .to_string(),
                }),
            revisions: Vec::new(),
            last_cold_start: latest.as_deref().and_then(last_cold_start),
        };
        if with_revisions {
            view.revisions = self.revision_views(svc, &routing).await?;
        }
        Ok(view)
    }

    pub async fn revision_views(&self, svc: &Service, routing: &Routing) -> anyhow::Result<Vec<RevisionView>> {
        Ok(self
            .store
            .revisions(&svc.namespace, &svc.name)
            .await?
            .iter()
            .map(|revision| {
                let state = self.registry.get(&revision.namespace, &revision.name);
                self.revision_view(revision, state.as_deref(), routing)
            })
            .collect())
    }

    fn revision_view(&self, revision: &Revision, state: Option<&RevisionState>, routing: &Routing) -> RevisionView {
        let config = &revision.config;
        RevisionView {
            name: revision.name.clone(),
            generation: revision.generation,
            created_at: rfc3339_us(revision.created_at_us),
            runtime: config.runtime.to_string(),
            image: revision.template.image.clone(),
            package: config.package_digest.clone(),
            command: config.command.clone(),
            command_source: config.command_source.clone(),
            env: config.env.clone(),
            memory: config.memory_bytes.map(format_memory),
            cpu: config.cpu_millis.map(format_cpu),
            scale_to_zero_after: humantime::format_duration(config.scale_to_zero_after()).to_string(),
            container_concurrency: revision.template.container_concurrency,
            timeout_seconds: revision.template.timeout_seconds,
            annotations: revision.template.annotations.clone(),
            traffic_percent: routing.percent_of(&revision.name),
            tags: routing.tags_of(&revision.name),
            routed: state.is_some_and(|s| s.routable.load(Ordering::Relaxed)),
            ready_instances: state.map_or(0, |s| s.endpoints.ready_count()),
            in_flight: state.map_or(0, |s| s.endpoints.in_flight()),
            waiting: state.map_or(0, |s| s.endpoints.waiting()),
            instances: state
                .map(|s| s.instances().iter().map(|m| m.view(self.cgroup_version)).collect())
                .unwrap_or_default(),
            last_cold_start: state.and_then(last_cold_start),
            scale_events: state.map(|s| scale_events(s, SHOWN_EVENTS)).unwrap_or_default(),
            crash_loop: state.and_then(crash_loop),
        }
    }

    /// Every scale event of a service's revisions, oldest first.
    pub async fn service_events(&self, svc: &Service) -> anyhow::Result<Vec<ScaleEventView>> {
        let mut events: Vec<ScaleEventView> = self
            .store
            .revisions(&svc.namespace, &svc.name)
            .await?
            .iter()
            .filter_map(|r| self.registry.get(&r.namespace, &r.name))
            .flat_map(|s| scale_events(&s, usize::MAX))
            .collect();
        events.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(events)
    }

    /// The service as a Knative manifest of its latest revision and traffic table, with
    /// a Knative-style `status` unless `for_knative` (then it is left out).
    pub async fn manifest(&self, svc: &Service, for_knative: bool) -> Result<KService, ApiError> {
        let latest = self
            .store
            .revision(&svc.namespace, &svc.latest_revision)
            .await?
            .ok_or_else(|| ApiError::internal(format!("latest revision {} is missing", svc.latest_revision)))?;
        let mut template = latest.template.clone();
        template.name = Some(latest.name.clone());
        let desired = DesiredService {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            labels: svc.config.labels.clone(),
            annotations: svc.config.annotations.clone(),
            template,
            traffic: Some(svc.config.traffic.clone()),
        };
        let mut manifest = KService::from_desired(&desired, &svc.config.traffic);
        if !for_knative {
            let routing = self.routing(svc, now_us());
            let traffic: Vec<serde_json::Value> = routing
                .percents
                .iter()
                .map(|(revision, percent)| serde_json::json!({"revisionName": revision, "percent": percent}))
                .chain(routing.tags.iter().map(|(tag, revision)| {
                    serde_json::json!({
                        "revisionName": revision,
                        "tag": tag,
                        "url": self.tag_url(tag, &svc.name, &svc.namespace),
                    })
                }))
                .collect();
            manifest.status = Some(serde_json::json!({
                "url": self.url(&svc.name, &svc.namespace),
                "latestCreatedRevisionName": svc.latest_revision,
                "latestReadyRevisionName": svc.latest_revision,
                "traffic": traffic,
            }));
        }
        Ok(manifest)
    }
}

/// Scale events a revision's description shows.
const SHOWN_EVENTS: usize = 10;

/// The last `n` scale events of a revision, oldest first.
fn scale_events(state: &RevisionState, n: usize) -> Vec<ScaleEventView> {
    let events = state.events.lock().unwrap_or_else(|p| p.into_inner());
    let skip = events.len().saturating_sub(n);
    events.iter().skip(skip).map(|e| e.view(&state.revision.name)).collect()
}

fn crash_loop(state: &RevisionState) -> Option<CrashLoopView> {
    let crash_loop = state.crash_loop.lock().unwrap_or_else(|p| p.into_inner());
    (crash_loop.failures > 0).then(|| CrashLoopView {
        failures: crash_loop.failures,
        last_failure: crash_loop.last_failure.clone().unwrap_or_default(),
        last_failure_at: rfc3339_us(crash_loop.last_failure_us),
        next_start_at: crash_loop
            .waiting_us(now_us())
            .map(|_| rfc3339_us(crash_loop.next_start_us)),
    })
}

fn last_cold_start(state: &RevisionState) -> Option<crate::views::ColdStartView> {
    state
        .last_cold_start
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(ColdStart::view)
}
