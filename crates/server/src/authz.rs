//! Every API request is authenticated and authorised here, before its handler runs.
//!
//! [`POLICY`] names, for each route, what a token must hold. A route missing from it
//! is refused (deny by default), and a test checks that every route of the OpenAPI
//! document is in it. Handlers of [`Need::Signed`] routes narrow what they answer to
//! the caller's namespaces themselves (listings, usage, metrics, apply).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use updraft_model::auth::{parse_token, Action, AuditEntry, Caller, Grant};
use updraft_store::Store;

use crate::ApiError;

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, no token: liveness and the API's document.
    Public,
    /// Any valid token; the handler answers with the caller's namespaces only.
    Signed,
    /// The action in the namespace the path names (`{ns}`).
    In(Action),
    /// The action in at least one namespace (shared stores: packages, images).
    Somewhere(Action),
    /// An admin token.
    Admin,
}

const ANY: &str = "*";

/// Method, route as the router matched it, and what it needs.
pub const POLICY: &[(&str, &str, Need)] = &[
    ("GET", "/healthz", Need::Public),
    ("GET", "/v1/openapi.json", Need::Public),
    ("GET", "/v1/info", Need::Signed),
    ("GET", "/v1/whoami", Need::Signed),
    ("GET", "/metrics", Need::Signed),
    ("GET", "/v1/usage", Need::Signed),
    ("POST", "/v1/apply", Need::Signed),
    ("GET", "/v1/namespaces", Need::Signed),
    ("POST", "/v1/namespaces", Need::Admin),
    ("GET", "/v1/namespaces/{ns}", Need::In(Action::Read)),
    ("PUT", "/v1/namespaces/{ns}", Need::Admin),
    ("DELETE", "/v1/namespaces/{ns}", Need::Admin),
    ("GET", "/v1/tokens", Need::Admin),
    ("POST", "/v1/tokens", Need::Admin),
    ("DELETE", "/v1/tokens/{id}", Need::Admin),
    ("GET", "/v1/audit", Need::Admin),
    ("GET", "/v1/registries", Need::Admin),
    ("POST", "/v1/registries", Need::Admin),
    ("DELETE", "/v1/registries/{registry}", Need::Admin),
    ("POST", "/v1/packages", Need::Somewhere(Action::Write)),
    ("POST", "/v1/images", Need::Somewhere(Action::Write)),
    ("POST", "/v1/images/pull", Need::Somewhere(Action::Write)),
    ("GET", "/v1/namespaces/{ns}/services", Need::In(Action::Read)),
    ("GET", "/v1/namespaces/{ns}/top", Need::In(Action::Read)),
    ("GET", "/v1/namespaces/{ns}/services/{name}", Need::In(Action::Read)),
    ("PUT", "/v1/namespaces/{ns}/services/{name}", Need::In(Action::Write)),
    ("DELETE", "/v1/namespaces/{ns}/services/{name}", Need::In(Action::Write)),
    (
        "GET",
        "/v1/namespaces/{ns}/services/{name}/manifest",
        Need::In(Action::Read),
    ),
    (
        "GET",
        "/v1/namespaces/{ns}/services/{name}/revisions",
        Need::In(Action::Read),
    ),
    (
        "GET",
        "/v1/namespaces/{ns}/services/{name}/events",
        Need::In(Action::Read),
    ),
    (
        "PUT",
        "/v1/namespaces/{ns}/services/{name}/traffic",
        Need::In(Action::Write),
    ),
    (
        "POST",
        "/v1/namespaces/{ns}/services/{name}/rollback",
        Need::In(Action::Write),
    ),
    (
        "DELETE",
        "/v1/namespaces/{ns}/revisions/{revision}",
        Need::In(Action::Write),
    ),
    (
        "GET",
        "/v1/namespaces/{ns}/services/{name}/logs",
        Need::In(Action::Logs),
    ),
    (
        "*",
        "/v1/namespaces/{ns}/services/{name}/invoke",
        Need::In(Action::Invoke),
    ),
    (
        "*",
        "/v1/namespaces/{ns}/services/{name}/invoke/",
        Need::In(Action::Invoke),
    ),
    (
        "*",
        "/v1/namespaces/{ns}/services/{name}/invoke/{*path}",
        Need::In(Action::Invoke),
    ),
    ("GET", "/v1/namespaces/{ns}/triggers", Need::In(Action::Read)),
    ("GET", "/v1/namespaces/{ns}/triggers/{name}", Need::In(Action::Read)),
    ("PUT", "/v1/namespaces/{ns}/triggers/{name}", Need::In(Action::Write)),
    ("DELETE", "/v1/namespaces/{ns}/triggers/{name}", Need::In(Action::Write)),
    (
        "GET",
        "/v1/namespaces/{ns}/triggers/{name}/manifest",
        Need::In(Action::Read),
    ),
    ("GET", "/v1/namespaces/{ns}/secrets", Need::In(Action::Read)),
    ("POST", "/v1/namespaces/{ns}/secrets", Need::In(Action::Write)),
    ("GET", "/v1/namespaces/{ns}/secrets/{name}", Need::In(Action::Read)),
    ("PUT", "/v1/namespaces/{ns}/secrets/{name}", Need::In(Action::Write)),
    ("DELETE", "/v1/namespaces/{ns}/secrets/{name}", Need::In(Action::Write)),
    ("GET", "/v1/namespaces/{ns}/domainmappings", Need::In(Action::Read)),
    (
        "GET",
        "/v1/namespaces/{ns}/domainmappings/{name}",
        Need::In(Action::Read),
    ),
    (
        "PUT",
        "/v1/namespaces/{ns}/domainmappings/{name}",
        Need::In(Action::Write),
    ),
    (
        "DELETE",
        "/v1/namespaces/{ns}/domainmappings/{name}",
        Need::In(Action::Write),
    ),
    ("GET", "/v1/namespaces/{ns}/brokers", Need::In(Action::Read)),
    ("PUT", "/v1/namespaces/{ns}/brokers/{name}", Need::In(Action::Write)),
    ("DELETE", "/v1/namespaces/{ns}/brokers/{name}", Need::In(Action::Write)),
    (
        "POST",
        "/v1/namespaces/{ns}/brokers/{name}/events",
        Need::In(Action::Invoke),
    ),
    // A provider holds no token: the handler checks the request's signature instead.
    ("POST", "/v1/namespaces/{ns}/webhooks/{name}", Need::Public),
];

/// What `method` on `route` needs; `None` when the policy has no rule for it.
pub fn need(method: &Method, route: &str) -> Option<Need> {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    POLICY
        .iter()
        .find(|(m, r, _)| *r == route && (*m == ANY || *m == method))
        .map(|(_, _, need)| *need)
}

/// The namespace a path names where its route has `{ns}`, percent-decoded as the
/// handler's extractor reads it, so both see the same name.
pub fn path_namespace(route: &str, path: &str) -> Option<String> {
    let index = route.split('/').position(|segment| segment == "{ns}")?;
    let raw = path.split('/').nth(index)?;
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Whether a request goes into the audit log: every change, and every refusal of
/// one; invocations and events are data, counted by the access log instead.
fn audited(method: &Method, need: Option<Need>, status: StatusCode) -> bool {
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match need {
        Some(Need::In(Action::Invoke)) => changes && refused,
        _ => changes,
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn grants_text(grants: &[Grant]) -> String {
    grants.iter().map(Grant::to_string).collect::<Vec<_>>().join(", ")
}

/// What the store keeps of a token's secret.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The caller behind the request's bearer token, or why there is none.
pub async fn authenticate(store: &dyn Store, headers: &HeaderMap, now_us: i64) -> Result<Caller, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        unauthorized(
            "this route needs a token: send `Authorization: Bearer updraft_…`; the CLI takes --token, UPDRAFT_TOKEN or a context from `updraft login`",
        )
    })?;
    let text = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must read `Bearer updraft_…`"))?;
    let presented = parse_token(text.trim()).map_err(unauthorized)?;
    let invalid = || unauthorized("the token is not valid: it is unknown, revoked, or its secret is wrong");
    let record = store.token(presented.id).await?.ok_or_else(invalid)?;
    let stored = hex::decode(&record.secret_sha256).unwrap_or_default();
    if !bool::from(secret_digest(presented.secret).as_slice().ct_eq(&stored)) {
        return Err(invalid());
    }
    if record.expired(now_us) {
        return Err(unauthorized(format!(
            "token {:?} ({}) expired at {}; ask an admin for a new one",
            record.name,
            record.id,
            crate::views::rfc3339_us(record.expires_at_us.unwrap_or_default())
        )));
    }
    Ok(Caller {
        token_id: record.id,
        token_name: record.name,
        grants: record.grants,
    })
}

/// Why `caller` may not do what `need` asks, if it may not.
pub fn refuse(caller: &Caller, need: Need, namespace: Option<&str>) -> Option<ApiError> {
    // Said only on a refusal: an allowed request formats nothing.
    let refusal = |what: String| {
        let who = format!(
            "token {:?} ({}, holding {})",
            caller.token_name,
            caller.token_id,
            grants_text(&caller.grants)
        );
        Some(ApiError::new(StatusCode::FORBIDDEN, format!("{who} {what}")))
    };
    match need {
        Need::Public | Need::Signed => None,
        Need::Admin if caller.is_admin() => None,
        Need::Admin => refusal("is not an admin; this route needs an admin token".into()),
        Need::Somewhere(action) if caller.may_somewhere(action) => None,
        Need::Somewhere(action) => refusal(format!("may not {} any namespace", action.as_str())),
        Need::In(action) => match namespace {
            Some(ns) if caller.may(ns, action) => None,
            Some(ns) => refusal(format!("may not {} namespace {ns:?}", action.as_str())),
            None => Some(ApiError::internal("the route names no namespace to authorise")),
        },
    }
}

/// A method the route does not serve is 405 with the methods it does; a route with no
/// rule at all is refused, whatever the router would have done with it.
fn no_rule(method: &Method, route: &str) -> Response {
    let served: Vec<&str> = POLICY
        .iter()
        .filter(|(_, r, _)| *r == route)
        .map(|(m, _, _)| *m)
        .collect();
    if served.is_empty() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{method} {route} has no permission rule, so no token may call it"),
        )
        .into_response();
    }
    let allow = served.join(", ");
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{route} takes {allow}, not {method}"),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The layer in front of every route.
pub async fn authorise(State(store): State<Arc<dyn Store>>, mut request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let namespace = path_namespace(&route, &path);
    let need = need(&method, &route);
    let now_us = updraft_runtime::clock::now_us();
    let (caller, response) = match need {
        Some(Need::Public) => return next.run(request).await,
        None => (None, no_rule(&method, &route)),
        Some(need) => match authenticate(&*store, request.headers(), now_us).await {
            Err(e) => {
                let mut response = e.into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"updraft\""),
                );
                (None, response)
            }
            Ok(caller) => match refuse(&caller, need, namespace.as_deref()) {
                Some(e) => (Some(caller.token_id), e.into_response()),
                None => {
                    let id = caller.token_id.clone();
                    request.extensions_mut().insert(caller);
                    (Some(id), next.run(request).await)
                }
            },
        },
    };
    if audited(&method, need, response.status()) {
        let entry = AuditEntry {
            seq: 0,
            at_us: now_us,
            token_id: caller,
            method: method.to_string(),
            path,
            namespace,
            status: response.status().as_u16(),
        };
        // Written before the answer goes out, so an answered change is in the log.
        if let Err(e) = store.append_audit(&entry).await {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
    response
}

/// The gateway's door to private services: an `Authorization` token that may invoke
/// in the service's namespace.
pub struct TokenGuard(pub Arc<dyn Store>);

impl updraft_gateway::InvokeGuard for TokenGuard {
    fn may_invoke<'a>(&'a self, headers: &'a HeaderMap, namespace: &'a str) -> updraft_gateway::GuardFuture<'a> {
        Box::pin(async move {
            let caller = authenticate(&*self.0, headers, updraft_runtime::clock::now_us())
                .await
                .map_err(|e| (e.status, e.message))?;
            match refuse(&caller, Need::In(Action::Invoke), Some(namespace)) {
                Some(e) => Err((e.status, e.message)),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_model::auth::Role;

    #[test]
    fn every_documented_route_has_a_rule() {
        let (_, doc) = crate::api::documented_routes();
        let mut missing = Vec::new();
        for (path, item) in &doc.paths.paths {
            // The document writes axum's `{*path}` as `{path}`.
            let route = path.replace("{path}", "{*path}");
            for method in ["get", "put", "post", "delete", "patch"] {
                let has = serde_json::to_value(item).unwrap().get(method).is_some();
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                if has && need(&method, &route).is_none() {
                    missing.push(format!("{method} {route}"));
                }
            }
        }
        assert!(missing.is_empty(), "routes without a permission rule: {missing:?}");
    }

    #[test]
    fn the_namespace_is_read_where_the_route_names_it() {
        let route = "/v1/namespaces/{ns}/services/{name}";
        assert_eq!(
            path_namespace(route, "/v1/namespaces/team/services/a").as_deref(),
            Some("team")
        );
        assert_eq!(
            path_namespace(route, "/v1/namespaces/te%61m/services/a").as_deref(),
            Some("team")
        );
        assert_eq!(path_namespace("/v1/usage", "/v1/usage"), None);
        assert_eq!(
            need(&Method::HEAD, "/v1/namespaces/{ns}/services"),
            Some(Need::In(Action::Read))
        );
        assert_eq!(
            need(&Method::PATCH, "/v1/namespaces/{ns}/services/{name}/invoke/{*path}"),
            Some(Need::In(Action::Invoke))
        );
        assert_eq!(need(&Method::PATCH, "/v1/namespaces/{ns}/services/{name}"), None);
    }

    #[test]
    fn refusals_say_who_and_what() {
        let caller = Caller {
            token_id: "abcdefghijkl".into(),
            token_name: "ci".into(),
            grants: vec![Grant::in_namespace(Role::Viewer, "a")],
        };
        assert!(refuse(&caller, Need::In(Action::Read), Some("a")).is_none());
        let e = refuse(&caller, Need::In(Action::Write), Some("a")).unwrap();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message
                .contains("\"ci\" (abcdefghijkl, holding viewer=a) may not change namespace \"a\""),
            "{}",
            e.message
        );
        assert!(refuse(&caller, Need::Admin, None)
            .unwrap()
            .message
            .contains("not an admin"));
        assert!(refuse(&caller, Need::Somewhere(Action::Write), None).is_some());
        assert!(refuse(&caller, Need::Signed, None).is_none());
    }

    #[test]
    fn changes_and_refused_changes_are_audited_reads_and_invocations_not() {
        let write = Some(Need::In(Action::Write));
        let invoke = Some(Need::In(Action::Invoke));
        assert!(audited(&Method::PUT, write, StatusCode::OK));
        assert!(audited(&Method::DELETE, write, StatusCode::FORBIDDEN));
        assert!(audited(&Method::POST, None, StatusCode::FORBIDDEN));
        assert!(!audited(&Method::GET, Some(Need::Admin), StatusCode::OK));
        assert!(!audited(&Method::POST, invoke, StatusCode::OK));
        assert!(audited(&Method::POST, invoke, StatusCode::UNAUTHORIZED));
    }
}
