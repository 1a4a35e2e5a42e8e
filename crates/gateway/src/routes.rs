use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use updraft_model::traffic::weighted_slots;

use crate::{RateLimiter, RevisionEndpoints};

/// `{service}.{namespace}.{domain}`, Knative's host naming.
pub fn host_for(service: &str, namespace: &str, domain: &str) -> String {
    format!("{service}.{namespace}.{domain}")
}

/// `{tag}-{service}.{namespace}.{domain}`: a tagged revision's own host.
pub fn tag_host_for(tag: &str, service: &str, namespace: &str, domain: &str) -> String {
    host_for(&format!("{tag}-{service}"), namespace, domain)
}

/// The host a request is for: its one `Host` header, or the authority of an
/// absolute-form target when it has none (HTTP/1.0). A second `Host`, or one that is
/// no host with an optional port, is refused (RFC 9112 §3.2: 400).
pub fn request_host(headers: &http::HeaderMap, uri: &http::Uri) -> Result<String, String> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let value = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("the request has more than one Host header; send one".into()),
        (Some(value), None) => value
            .to_str()
            .map_err(|_| "the Host header is not ASCII text".to_string())?
            .to_string(),
        (None, _) => uri.authority().map(|a| a.to_string()).unwrap_or_default(),
    };
    if value.is_empty() {
        return Ok(value);
    }
    let (name, port) = match value.strip_prefix('[') {
        Some(literal) => match literal.split_once(']') {
            Some((_, rest)) => (&value[..value.len() - rest.len()], rest.strip_prefix(':')),
            None => return Err(format!("Host {value:?} opens an IPv6 literal it never closes")),
        },
        None => match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value.as_str(), None),
        },
    };
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(literal) => {
            !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        }
        None => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    if !name_ok {
        return Err(format!("Host {value:?} is not a host name"));
    }
    if let Some(port) = port {
        let valid = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !valid || port.parse::<u16>().is_err() {
            return Err(format!(
                "Host {value:?} has no valid port (1 to 65535 digits after ':')"
            ));
        }
    }
    Ok(name.to_string())
}

/// What one host leads to: revisions with their shares, and the rate limits that
/// apply before any of them is chosen.
pub struct ServiceRoute {
    targets: Vec<Arc<RevisionEndpoints>>,
    /// One round of choices, each share as often as its percent, evenly interleaved.
    slots: Vec<u8>,
    next: AtomicUsize,
    pub limiters: Vec<Arc<RateLimiter>>,
    /// A private service's namespace: only callers allowed to invoke there get in.
    pub private_to: Option<String>,
}

impl ServiceRoute {
    /// A route splitting by weight; weights of zero are left out. Weights are in percent
    /// and usually add up to 100, but any positive total works.
    pub fn split(weighted: Vec<(Arc<RevisionEndpoints>, u32)>, limiters: Vec<Arc<RateLimiter>>) -> Self {
        let weighted: Vec<_> = weighted.into_iter().filter(|(_, w)| *w > 0).collect();
        let weights: Vec<u32> = weighted.iter().map(|(_, w)| *w).collect();
        ServiceRoute {
            slots: weighted_slots(&weights),
            targets: weighted.into_iter().map(|(t, _)| t).collect(),
            next: AtomicUsize::new(0),
            limiters,
            private_to: None,
        }
    }

    /// The same route, answering only callers allowed to invoke in `namespace`.
    pub fn private_to(mut self, namespace: Option<String>) -> Self {
        self.private_to = namespace;
        self
    }

    pub fn single(target: Arc<RevisionEndpoints>, limiters: Vec<Arc<RateLimiter>>) -> Self {
        Self::split(vec![(target, 100)], limiters)
    }

    /// The revision for the next request.
    pub fn pick(&self) -> Option<&Arc<RevisionEndpoints>> {
        match self.targets.len() {
            0 => None,
            1 => self.targets.first(),
            _ => {
                let slot = self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
                self.targets.get(usize::from(slot))
            }
        }
    }

    pub fn targets(&self) -> &[Arc<RevisionEndpoints>] {
        &self.targets
    }
}

/// Host name → route, as one immutable value: a change makes a new map sharing all
/// unchanged hosts with the old one, and lookups never wait for it.
pub type HostMap = imbl::HashMap<String, Arc<ServiceRoute>>;

/// The hosts the gateway serves, swapped whole on change.
#[derive(Default)]
pub struct RouteTable {
    hosts: ArcSwap<HostMap>,
}

impl RouteTable {
    pub fn lookup(&self, host: &str) -> Option<Arc<ServiceRoute>> {
        // Hosts are case-insensitive and may carry a port.
        let host = host
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let hosts = self.hosts.load();
        match hosts.get(host) {
            Some(route) => Some(route.clone()),
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => hosts.get(&host.to_ascii_lowercase()).cloned(),
            None => None,
        }
    }

    pub fn replace(&self, hosts: HostMap) {
        self.hosts.store(Arc::new(hosts));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{RevisionKey, RevisionLimits};

    fn revision(name: &str) -> Arc<RevisionEndpoints> {
        RevisionEndpoints::new(
            RevisionKey {
                namespace: "default".into(),
                service: "hello".into(),
                revision: name.into(),
            },
            RevisionLimits::default(),
        )
    }

    #[test]
    fn the_host_is_one_header_naming_a_host_and_maybe_a_port() {
        let host = |values: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for v in values {
                headers.append(http::header::HOST, http::HeaderValue::from_str(v).unwrap());
            }
            request_host(&headers, &http::Uri::from_static("/"))
        };
        assert_eq!(
            host(&["hello.default.localhost:8080"]).unwrap(),
            "hello.default.localhost"
        );
        assert_eq!(host(&["Hello.Default.localhost"]).unwrap(), "Hello.Default.localhost");
        assert_eq!(host(&["[::1]:8080"]).unwrap(), "[::1]");
        assert_eq!(host(&[]).unwrap(), "", "HTTP/1.0 without a Host");
        assert!(host(&["a.localhost", "b.localhost"])
            .unwrap_err()
            .contains("more than one Host"));
        for bad in [
            "a.localhost:99999",
            "a.localhost:",
            "a.localhost:8o",
            ":80",
            "a b",
            "a.localhost:80:80",
            "[::1",
        ] {
            assert!(host(&[bad]).is_err(), "{bad}");
        }
        let absolute = http::Uri::from_static("http://hello.default.localhost:8080/x");
        assert_eq!(
            request_host(&http::HeaderMap::new(), &absolute).unwrap(),
            "hello.default.localhost"
        );
    }

    #[test]
    fn lookup_ignores_port_and_case() {
        let table = RouteTable::default();
        let route = Arc::new(ServiceRoute::single(revision("hello-00001"), vec![]));
        table.replace(HostMap::unit(host_for("hello", "default", "localhost"), route));
        assert!(table.lookup("hello.default.localhost:8080").is_some());
        assert!(table.lookup("Hello.Default.localhost").is_some());
        assert!(table.lookup("other.default.localhost").is_none());
        assert_eq!(
            tag_host_for("canary", "hello", "default", "localhost"),
            "canary-hello.default.localhost"
        );
    }

    #[test]
    fn a_split_gives_each_revision_its_share() {
        let route = ServiceRoute::split(
            vec![(revision("a"), 90), (revision("b"), 10), (revision("c"), 0)],
            vec![],
        );
        assert_eq!(route.targets().len(), 2);
        let mut counts = HashMap::new();
        for _ in 0..1000 {
            *counts.entry(route.pick().unwrap().key.revision.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 900);
        assert_eq!(counts["b"], 100);
    }
}
