use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::RevisionEndpoints;

/// `{service}.{namespace}.{domain}`, Knative's host naming.
pub fn host_for(service: &str, namespace: &str, domain: &str) -> String {
    format!("{service}.{namespace}.{domain}")
}

/// Host name → the revision that serves it. Rebuilt from the store and swapped whole.
#[derive(Default)]
pub struct RouteTable {
    hosts: ArcSwap<HashMap<String, Arc<RevisionEndpoints>>>,
}

impl RouteTable {
    pub fn lookup(&self, host: &str) -> Option<Arc<RevisionEndpoints>> {
        // Hosts are case-insensitive and may carry a port.
        let host = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let hosts = self.hosts.load();
        match hosts.get(host) {
            Some(rev) => Some(rev.clone()),
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => hosts.get(&host.to_ascii_lowercase()).cloned(),
            None => None,
        }
    }

    pub fn replace(&self, hosts: HashMap<String, Arc<RevisionEndpoints>>) {
        self.hosts.store(Arc::new(hosts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RevisionKey;

    #[test]
    fn lookup_ignores_port_and_case() {
        let table = RouteTable::default();
        let rev = RevisionEndpoints::new(RevisionKey {
            namespace: "default".into(),
            service: "hello".into(),
            revision: "hello-00001".into(),
        });
        table.replace(HashMap::from([(host_for("hello", "default", "localhost"), rev)]));
        assert!(table.lookup("hello.default.localhost:8080").is_some());
        assert!(table.lookup("Hello.Default.localhost").is_some());
        assert!(table.lookup("other.default.localhost").is_none());
    }
}
