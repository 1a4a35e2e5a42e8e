//! Watching the store: every write bumps a store-wide revision and is kept in a
//! bounded change log, so a follower lists once and then streams what changed after
//! the revision its list saw, as it would from etcd.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use updraft_model::{Namespace, Revision, Service, StagedRevision};

use crate::records::{BrokerRecord, TriggerRecord};
use crate::{Result, Store, StoreError};
use updraft_model::domain::DomainMapping;

/// The kinds of resource the change log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Namespace,
    Service,
    Revision,
    /// A revision whose deploy waits for its first instance.
    Staged,
    Trigger,
    Broker,
    DomainMapping,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Revision,
        Kind::Staged,
        Kind::Trigger,
        Kind::Broker,
        Kind::DomainMapping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Service => "service",
            Kind::Revision => "revision",
            Kind::Staged => "staged",
            Kind::Trigger => "trigger",
            Kind::Broker => "broker",
            Kind::DomainMapping => "domainmapping",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A resource as it was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    Service(Box<Service>),
    Revision(Box<Revision>),
    Staged(Box<StagedRevision>),
    Trigger(TriggerRecord),
    Broker(BrokerRecord),
    DomainMapping(DomainMapping),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::Service(_) => Kind::Service,
            Resource::Revision(_) => Kind::Revision,
            Resource::Staged(_) => Kind::Staged,
            Resource::Trigger(_) => Kind::Trigger,
            Resource::Broker(_) => Kind::Broker,
            Resource::DomainMapping(_) => Kind::DomainMapping,
        }
    }

    pub(crate) fn to_json(&self) -> serde_json::Result<String> {
        match self {
            Resource::Namespace(r) => serde_json::to_string(r),
            Resource::Service(r) => serde_json::to_string(r),
            Resource::Revision(r) => serde_json::to_string(r),
            Resource::Staged(r) => serde_json::to_string(r),
            Resource::Trigger(r) => serde_json::to_string(r),
            Resource::Broker(r) => serde_json::to_string(r),
            Resource::DomainMapping(r) => serde_json::to_string(r),
        }
    }

    pub(crate) fn from_json(kind: Kind, text: &str) -> serde_json::Result<Resource> {
        Ok(match kind {
            Kind::Namespace => Resource::Namespace(serde_json::from_str(text)?),
            Kind::Service => Resource::Service(serde_json::from_str(text)?),
            Kind::Revision => Resource::Revision(serde_json::from_str(text)?),
            Kind::Staged => Resource::Staged(serde_json::from_str(text)?),
            Kind::Trigger => Resource::Trigger(serde_json::from_str(text)?),
            Kind::Broker => Resource::Broker(serde_json::from_str(text)?),
            Kind::DomainMapping => Resource::DomainMapping(serde_json::from_str(text)?),
        })
    }
}

/// One change in the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Resource),
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
    },
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Change::Put(resource) => resource.kind(),
            Change::Delete { kind, .. } => *kind,
        }
    }
}

/// A change and the store revision that made it; changes of one write share it.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub revision: u64,
    pub change: Change,
}

/// Which changes a watcher wants: some kinds, a namespace, or both (no kinds and no
/// namespace is everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    pub kinds: Vec<Kind>,
    pub namespace: Option<String>,
}

impl WatchFilter {
    pub fn kind(kind: Kind) -> Self {
        Self::kinds(&[kind])
    }

    pub fn kinds(kinds: &[Kind]) -> Self {
        WatchFilter {
            kinds: kinds.to_vec(),
            namespace: None,
        }
    }

    pub fn wants(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// What a watch read next: a change it wants, or how far it read past changes it does
/// not want, so a follower can say it is current up to there.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchStep {
    Event(WatchEvent),
    Skipped { through: u64 },
}

/// Everything a follower lists at start, and the revision it was read at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: u64,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub revisions: Vec<Revision>,
    /// Revisions whose deploys are under way.
    pub staged: Vec<StagedRevision>,
    pub domain_mappings: Vec<DomainMapping>,
}

/// One read of the change log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangePage {
    /// The changes that matched the filter, in order.
    pub events: Vec<WatchEvent>,
    /// The last revision read, matched or not; the next read starts after it.
    pub through: u64,
}

/// How many changes one read of the log returns at most.
const PAGE: usize = 512;

/// Changes after a revision, in order, from any [`Store`]; waits when there are none.
///
/// A watcher that falls behind the change log gets [`StoreError::Compacted`] and
/// must list again.
pub struct Watch {
    store: Arc<dyn Store>,
    filter: WatchFilter,
    after: u64,
    ready: VecDeque<WatchEvent>,
    written: watch::Receiver<u64>,
}

impl Watch {
    /// Follows changes made after revision `after` (the one a list saw).
    pub fn new(store: Arc<dyn Store>, filter: WatchFilter, after: u64) -> Watch {
        let written = store.subscribe();
        Watch {
            store,
            filter,
            after,
            ready: VecDeque::new(),
            written,
        }
    }

    /// The revision of the last change handed out (or the start).
    pub fn revision(&self) -> u64 {
        self.after
    }

    /// Whether changes already read wait to be handed out: the last one handed out
    /// may share its revision with them.
    pub fn has_buffered(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next change the filter wants, waiting for one.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if let WatchStep::Event(event) = self.step().await? {
                return Ok(event);
            }
        }
    }

    /// The next change the filter wants, or word that writes it does not want were
    /// read past; waits while there is neither.
    pub async fn step(&mut self) -> Result<WatchStep> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(WatchStep::Event(event));
            }
            // Marked seen before the read: a write after it wakes the wait below.
            self.written.borrow_and_update();
            let page = self.store.changes_after(self.after, &self.filter, PAGE).await?;
            if page.through > self.after {
                self.after = page.through;
                if page.events.is_empty() {
                    return Ok(WatchStep::Skipped { through: page.through });
                }
                self.ready.extend(page.events);
                continue;
            }
            if self.written.changed().await.is_err() {
                return Err(StoreError::Unavailable("the store was closed".into()));
            }
        }
    }
}
