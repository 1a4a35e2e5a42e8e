//! A typed client of the REST API: one method per operation, taking and returning the
//! wire types of this crate, with errors that say whether the API was unreachable,
//! broke off, or refused (and which field).

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;
use updraft_events::trigger::TriggerSpec;
use updraft_model::{DeploySpec, NamespaceLimits, TrafficTarget};

use crate::requests::{
    AuditQuery, BrokerRequest, CreateNamespace, CreateSecretRequest, CreateTokenRequest, DomainMappingRequest,
    LoginRequest, LogsQuery, PullRequest, RollbackRequest, SecretDataRequest, TrafficRequest, UsageQuery,
};
use crate::views::{
    AccessLineView, AppliedView, ApplyResult, AuditView, BrokerView, CreatedTokenView, DomainMappingView, ErrorBody,
    ImageView, InfoView, LogLineView, NamespaceView, PackageView, RegistryView, RevisionView, SecretView, ServiceView,
    TokenView, TopView, TriggerDetailView, TriggerView, UsageView,
};

/// A request or response body: any stream of bytes.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered at the address.
    #[error(
        "cannot reach the Updraft API at {base} ({cause}); is `updraft server` running? (set --api or UPDRAFT_API)"
    )]
    Unreachable { base: String, cause: String },
    /// The API was reached and the connection broke before an answer came.
    #[error("the Updraft API at {base} closed the connection before it answered ({cause})")]
    Broken { base: String, cause: String },
    /// The API answered with an error.
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        /// The input the API refused, when it named one.
        field: Option<String>,
    },
    /// The answer was not what the API's document promises.
    #[error("unexpected reply from the API: {0}")]
    Reply(String),
    /// The request could not be built (a name or header no HTTP request can carry).
    #[error("bad request: {0}")]
    Request(String),
}

impl Error {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A whole answer, for the operations whose body is not JSON (invoke, events).
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// What may stay as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A name as one URL path segment, so a user's `../x` or `a/b` stays one segment the
/// API validates instead of changing the route.
pub fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

fn service_path(ns: &str, name: &str) -> String {
    format!("/v1/namespaces/{}/services/{}", encode(ns), encode(name))
}

fn named_path(ns: &str, collection: &str, name: &str) -> String {
    format!("/v1/namespaces/{}/{collection}/{}", encode(ns), encode(name))
}

/// A service's log path, the query's filters with the reading asked for.
fn logs_path(ns: &str, name: &str, q: &LogsQuery, follow: bool, requests: bool) -> Result<String> {
    let q = LogsQuery {
        follow,
        requests,
        ..q.clone()
    };
    query(format!("{}/logs", service_path(ns, name)), &q)
}

fn query<Q: Serialize>(path: String, query: &Q) -> Result<String> {
    let text = serde_urlencoded::to_string(query).map_err(|e| Error::Request(e.to_string()))?;
    Ok(if text.is_empty() {
        path
    } else {
        format!("{path}?{text}")
    })
}

/// Reads a JSON answer, or the API's error.
pub fn decode<T: DeserializeOwned>(reply: Reply) -> Result<T> {
    if reply.status.is_success() {
        let bytes = if reply.body.is_empty() {
            Bytes::from_static(b"null")
        } else {
            reply.body
        };
        return serde_json::from_slice(&bytes).map_err(|e| Error::Reply(e.to_string()));
    }
    let (message, field) = match serde_json::from_slice::<ErrorBody>(&reply.body) {
        Ok(body) => (body.error.message, body.error.field),
        Err(_) if reply.body.trim_ascii().is_empty() => {
            (format!("the API answered {} with no detail", reply.status), None)
        }
        Err(_) => (String::from_utf8_lossy(&reply.body).trim().to_string(), None),
    };
    Err(Error::Api {
        status: reply.status,
        message,
        field,
    })
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct Client {
    base: String,
    /// Sent as `Authorization: Bearer …` on every request.
    token: Option<String>,
    http: hyper_util::client::legacy::Client<Connector, Body>,
}

/// `http://` as it is, `https://` verified against the Mozilla roots and `extra` (a
/// server's own certificate or its CA).
fn connector(extra: Vec<rustls::pki_types::CertificateDer<'static>>) -> Result<Connector> {
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert)
            .map_err(|e| Error::Request(format!("the CA certificate: {e}")))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Request(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:8081`).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(connector(Vec::new()).expect("the Mozilla roots make a client configuration")),
        }
    }

    /// The same client, also trusting the certificates in `pem` (a PEM file's text):
    /// a server's self-signed certificate or its private CA.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Request(format!("the CA certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Request("the CA file holds no certificate".into()));
        }
        self.http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector(certs)?);
        Ok(self)
    }

    /// The same client, authenticating with `token` (`updraft_<id>_<secret>`).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request_failed(&self, e: &hyper_util::client::legacy::Error) -> Error {
        let cause = std::error::Error::source(e).map_or_else(|| e.to_string(), |s| s.to_string());
        let base = self.base.clone();
        if e.is_connect() {
            Error::Unreachable { base, cause }
        } else {
            Error::Broken { base, cause }
        }
    }

    async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Body,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let mut request = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(body).map_err(|e| Error::Request(e.to_string()))?;
        self.http.request(request).await.map_err(|e| self.request_failed(&e))
    }

    /// Any request, its answer read whole.
    pub async fn send(&self, method: Method, path: &str, headers: &[(String, String)], body: Body) -> Result<Reply> {
        let (parts, body) = self.open(method, path, headers, body).await?.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Error::Broken {
                base: self.base.clone(),
                cause: e.to_string(),
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A request whose answer is read as it arrives (server-sent events, NDJSON); an
    /// error answer is read whole and returned as the error it is.
    async fn streamed(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Body,
    ) -> Result<hyper::body::Incoming> {
        let (parts, body) = self.open(method, path, headers, body).await?.into_parts();
        if parts.status.is_success() {
            return Ok(body);
        }
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Err(decode::<()>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
        .err()
        .unwrap_or_else(|| Error::Reply(format!("{} with no error", parts.status))))
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<T> {
        let (headers, body) = match body {
            Some(value) => (
                vec![("content-type".to_string(), "application/json".to_string())],
                full(serde_json::to_vec(value).map_err(|e| Error::Request(e.to_string()))?),
            ),
            None => (vec![], empty()),
        };
        decode(self.send(method, path, &headers, body).await?)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, path, None::<&()>)
            .await
            .map(drop)
    }

    /// A body of `len` bytes, streamed.
    async fn post_body<T: DeserializeOwned>(&self, path: &str, body: Body, len: u64) -> Result<T> {
        let headers = [
            ("content-type".to_string(), "application/octet-stream".to_string()),
            ("content-length".to_string(), len.to_string()),
        ];
        decode(self.send(Method::POST, path, &headers, body).await?)
    }

    pub async fn whoami(&self) -> Result<TokenView> {
        self.get("/v1/whoami").await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        self.get("/v1/tokens").await
    }

    pub async fn create_token(&self, request: &CreateTokenRequest) -> Result<CreatedTokenView> {
        self.call(Method::POST, "/v1/tokens", Some(request)).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenView> {
        self.call(Method::DELETE, &format!("/v1/tokens/{}", encode(id)), None::<&()>)
            .await
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditView>> {
        self.get(&query("/v1/audit".to_string(), q)?).await
    }

    pub async fn info(&self) -> Result<InfoView> {
        self.get("/v1/info").await
    }

    pub async fn namespaces(&self) -> Result<Vec<NamespaceView>> {
        self.get("/v1/namespaces").await
    }

    /// One namespace with what it uses of its quotas.
    pub async fn namespace(&self, name: &str) -> Result<NamespaceView> {
        self.get(&format!("/v1/namespaces/{}", encode(name))).await
    }

    pub async fn create_namespace(&self, name: &str) -> Result<NamespaceView> {
        let body = CreateNamespace { name: name.to_string() };
        self.call(Method::POST, "/v1/namespaces", Some(&body)).await
    }

    /// Deletes a namespace; with `force`, its services too.
    pub async fn delete_namespace(&self, name: &str, force: bool) -> Result<()> {
        let query = if force { "?force=true" } else { "" };
        self.delete(&format!("/v1/namespaces/{}{query}", encode(name))).await
    }

    pub async fn set_namespace_limits(&self, ns: &str, limits: &NamespaceLimits) -> Result<NamespaceView> {
        self.call(Method::PUT, &format!("/v1/namespaces/{}", encode(ns)), Some(limits))
            .await
    }

    /// Stores a package archive (or a `.wasm` component) of `len` bytes.
    pub async fn upload_package(&self, body: Body, len: u64) -> Result<PackageView> {
        self.post_body("/v1/packages", body, len).await
    }

    /// Imports an OCI archive or `docker save` tar; `tag` picks one image of several.
    pub async fn import_image(&self, body: Body, len: u64, tag: Option<&str>) -> Result<ImageView> {
        let path = query("/v1/images".to_string(), &[("tag", tag)])?;
        self.post_body(&path, body, len).await
    }

    /// Pulls an image: NDJSON lines of `PullLine`, as they come.
    pub async fn pull(&self, reference: &str) -> Result<hyper::body::Incoming> {
        let body = PullRequest {
            reference: reference.to_string(),
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Request(e.to_string()))?;
        let headers = [("content-type".to_string(), "application/json".to_string())];
        self.streamed(Method::POST, "/v1/images/pull", &headers, full(bytes))
            .await
    }

    pub async fn registries(&self) -> Result<Vec<RegistryView>> {
        self.get("/v1/registries").await
    }

    pub async fn logout(&self, registry: &str) -> Result<()> {
        self.delete(&format!("/v1/registries/{}", encode(registry))).await
    }

    pub async fn login(&self, login: &LoginRequest) -> Result<RegistryView> {
        self.call(Method::POST, "/v1/registries", Some(login)).await
    }

    /// Applies one Knative manifest (YAML or JSON text).
    pub async fn apply(&self, manifest: &str, namespace: Option<&str>) -> Result<ApplyResult> {
        let path = query("/v1/apply".to_string(), &[("namespace", namespace)])?;
        let headers = [("content-type".to_string(), "application/yaml".to_string())];
        decode(
            self.send(Method::POST, &path, &headers, full(manifest.to_string()))
                .await?,
        )
    }

    pub async fn services(&self, ns: &str) -> Result<Vec<ServiceView>> {
        self.get(&format!("/v1/namespaces/{}/services", encode(ns))).await
    }

    pub async fn service(&self, ns: &str, name: &str) -> Result<ServiceView> {
        self.get(&service_path(ns, name)).await
    }

    /// Deploys and answers once the new revision is ready.
    pub async fn deploy(&self, ns: &str, name: &str, spec: &DeploySpec) -> Result<ServiceView> {
        self.call(Method::PUT, &service_path(ns, name), Some(spec)).await
    }

    /// Deploys, answering with the steps as JSON lines (`DeployEventView`) while the
    /// deploy runs.
    pub async fn deploy_watched(&self, ns: &str, name: &str, spec: &DeploySpec) -> Result<hyper::body::Incoming> {
        let headers = [
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/x-ndjson".to_string()),
        ];
        let body = full(serde_json::to_vec(spec).map_err(|e| Error::Request(e.to_string()))?);
        let path = format!("{}?watch=true", service_path(ns, name));
        self.streamed(Method::PUT, &path, &headers, body).await
    }

    pub async fn delete_service(&self, ns: &str, name: &str) -> Result<()> {
        self.delete(&service_path(ns, name)).await
    }

    /// The service as a manifest: `format` is `yaml` or `json`.
    pub async fn manifest(&self, ns: &str, name: &str, format: &str, knative: bool) -> Result<Reply> {
        let path = query(
            format!("{}/manifest", service_path(ns, name)),
            &[("format", Some(format)), ("knative", knative.then_some("true"))],
        )?;
        self.text(&path).await
    }

    /// A trigger as a Knative PingSource or Trigger: `format` is `yaml` or `json`.
    pub async fn trigger_manifest(&self, ns: &str, name: &str, format: &str) -> Result<Reply> {
        let path = query(
            format!("{}/manifest", named_path(ns, "triggers", name)),
            &[("format", format)],
        )?;
        self.text(&path).await
    }

    /// A GET whose answer is taken as it is (a manifest), unless it is an error.
    async fn text(&self, path: &str) -> Result<Reply> {
        let reply = self.send(Method::GET, path, &[], empty()).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(decode::<()>(reply)
                .err()
                .unwrap_or_else(|| Error::Reply("an error status without an error".into())))
        }
    }

    pub async fn revisions(&self, ns: &str, name: &str) -> Result<Vec<RevisionView>> {
        self.get(&format!("{}/revisions", service_path(ns, name))).await
    }

    pub async fn set_traffic(&self, ns: &str, name: &str, traffic: Vec<TrafficTarget>) -> Result<ServiceView> {
        let body = TrafficRequest { traffic };
        self.call(Method::PUT, &format!("{}/traffic", service_path(ns, name)), Some(&body))
            .await
    }

    pub async fn rollback(&self, ns: &str, name: &str, to: Option<String>) -> Result<ServiceView> {
        let body = RollbackRequest { to };
        self.call(
            Method::POST,
            &format!("{}/rollback", service_path(ns, name)),
            Some(&body),
        )
        .await
    }

    pub async fn delete_revision(&self, ns: &str, revision: &str) -> Result<()> {
        self.delete(&named_path(ns, "revisions", revision)).await
    }

    /// A request to the service through the gateway; any method, any answer.
    pub async fn invoke(
        &self,
        ns: &str,
        name: &str,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Body,
    ) -> Result<Reply> {
        let path = format!("{}/invoke/{}", service_path(ns, name), path.trim_start_matches('/'));
        self.send(method, &path, headers, body).await
    }

    pub async fn logs(&self, ns: &str, name: &str, q: &LogsQuery) -> Result<Vec<LogLineView>> {
        self.get(&logs_path(ns, name, q, false, false)?).await
    }

    pub async fn access_log(&self, ns: &str, name: &str, q: &LogsQuery) -> Result<Vec<AccessLineView>> {
        self.get(&logs_path(ns, name, q, false, true)?).await
    }

    /// The log as server-sent events (`line`, `dropped`), as they come.
    pub async fn follow_logs(&self, ns: &str, name: &str, q: &LogsQuery) -> Result<hyper::body::Incoming> {
        let path = logs_path(ns, name, q, true, false)?;
        let headers = [("accept".to_string(), "text/event-stream".to_string())];
        self.streamed(Method::GET, &path, &headers, empty()).await
    }

    pub async fn top(&self, ns: &str) -> Result<Vec<TopView>> {
        self.get(&format!("/v1/namespaces/{}/top", encode(ns))).await
    }

    pub async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageView>> {
        self.get(&query("/v1/usage".to_string(), q)?).await
    }

    pub async fn triggers(&self, ns: &str) -> Result<Vec<TriggerView>> {
        self.get(&format!("/v1/namespaces/{}/triggers", encode(ns))).await
    }

    /// A trigger with its latest `limit` deliveries.
    pub async fn trigger(&self, ns: &str, name: &str, limit: u32) -> Result<TriggerDetailView> {
        self.get(&query(named_path(ns, "triggers", name), &[("limit", limit)])?)
            .await
    }

    pub async fn put_trigger(&self, ns: &str, name: &str, spec: &TriggerSpec) -> Result<AppliedView> {
        self.call(Method::PUT, &named_path(ns, "triggers", name), Some(spec))
            .await
    }

    pub async fn delete_trigger(&self, ns: &str, name: &str) -> Result<()> {
        self.delete(&named_path(ns, "triggers", name)).await
    }

    pub async fn secrets(&self, ns: &str) -> Result<Vec<SecretView>> {
        self.get(&format!("/v1/namespaces/{}/secrets", encode(ns))).await
    }

    pub async fn create_secret(&self, ns: &str, body: &CreateSecretRequest) -> Result<SecretView> {
        let path = format!("/v1/namespaces/{}/secrets", encode(ns));
        self.call(Method::POST, &path, Some(body)).await
    }

    pub async fn replace_secret(&self, ns: &str, name: &str, body: &SecretDataRequest) -> Result<SecretView> {
        self.call(Method::PUT, &named_path(ns, "secrets", name), Some(body))
            .await
    }

    pub async fn delete_secret(&self, ns: &str, name: &str) -> Result<()> {
        self.delete(&named_path(ns, "secrets", name)).await
    }

    pub async fn domain_mappings(&self, ns: &str) -> Result<Vec<DomainMappingView>> {
        self.get(&format!("/v1/namespaces/{}/domainmappings", encode(ns))).await
    }

    pub async fn put_domain_mapping(&self, ns: &str, domain: &str, body: &DomainMappingRequest) -> Result<AppliedView> {
        self.call(Method::PUT, &named_path(ns, "domainmappings", domain), Some(body))
            .await
    }

    pub async fn delete_domain_mapping(&self, ns: &str, domain: &str) -> Result<()> {
        self.delete(&named_path(ns, "domainmappings", domain)).await
    }

    pub async fn brokers(&self, ns: &str) -> Result<Vec<BrokerView>> {
        self.get(&format!("/v1/namespaces/{}/brokers", encode(ns))).await
    }

    pub async fn put_broker(&self, ns: &str, name: &str, body: &BrokerRequest) -> Result<AppliedView> {
        self.call(Method::PUT, &named_path(ns, "brokers", name), Some(body))
            .await
    }

    pub async fn delete_broker(&self, ns: &str, name: &str) -> Result<()> {
        self.delete(&named_path(ns, "brokers", name)).await
    }

    /// Posts CloudEvents to a broker's ingress as they are (binary mode: `ce-*` headers).
    pub async fn publish(&self, ns: &str, broker: &str, headers: &[(String, String)], body: Body) -> Result<Reply> {
        let path = format!("{}/events", named_path(ns, "brokers", broker));
        self.send(Method::POST, &path, headers, body).await
    }
}
