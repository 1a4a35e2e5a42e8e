//! API tokens and the audit log, and the server's first admin token.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /v1/whoami` | the calling token (any token) |
//! | `GET, POST /v1/tokens` | list (never secrets); create `{"name", "grants", "expires_in"}`: the token is in the answer, once |
//! | `DELETE /v1/tokens/{id}` | revoke |
//! | `GET /v1/audit` | who changed what, when (`since`, `token`, `limit`) |

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use updraft_api::requests::{AuditQuery, CreateTokenRequest};
use updraft_model::auth::{
    format_token, from_random, validate_grants, validate_token_name, AuditEntry, Caller, Grant, TokenRecord,
    TOKEN_ID_ALPHABET, TOKEN_ID_LEN, TOKEN_SECRET_ALPHABET, TOKEN_SECRET_LEN,
};
use updraft_runtime::clock::now_us;
use updraft_store::{Store, StoreError};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, Path, Query};
use crate::platform::Platform;
use crate::views::{rfc3339_us, AuditView, CreatedTokenView, TokenView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

/// The file the first `updraft server` writes its admin token to, in the data
/// directory; the CLI on the same machine reads it when given no other token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
const MAX_AUDIT_LIMIT: usize = 10_000;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit))
}

fn random_text(alphabet: &[u8], len: usize) -> std::io::Result<String> {
    loop {
        let mut bytes = [0u8; 96];
        getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
        if let Some(text) = from_random(&bytes, alphabet, len) {
            return Ok(text);
        }
    }
}

/// A new token: the text to hand out once, and the record to store.
pub fn mint(
    name: &str,
    grants: Vec<Grant>,
    created_by: Option<String>,
    now_us: i64,
    expires_at_us: Option<i64>,
) -> std::io::Result<(String, TokenRecord)> {
    let id = random_text(TOKEN_ID_ALPHABET, TOKEN_ID_LEN)?;
    let secret = random_text(TOKEN_SECRET_ALPHABET, TOKEN_SECRET_LEN)?;
    let record = TokenRecord {
        secret_sha256: hex::encode(crate::authz::secret_digest(&secret)),
        id: id.clone(),
        name: name.to_string(),
        grants,
        created_at_us: now_us,
        created_by,
        expires_at_us,
    };
    Ok((format_token(&id, &secret), record))
}

/// Makes sure an admin can get in: when no admin token is valid (a new data
/// directory, or every admin token expired), a new one is written to
/// [`ADMIN_TOKEN_FILE`] (0600). Its path when it wrote one.
pub async fn ensure_admin_token(store: &dyn Store, data_dir: &FsPath) -> anyhow::Result<Option<PathBuf>> {
    let now = now_us();
    let tokens = store.tokens().await?;
    if tokens.iter().any(|t| t.is_valid_admin(now)) {
        return Ok(None);
    }
    let (text, record) = mint("admin", vec![Grant::admin()], None, now, None)?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let temporary = data_dir.join(format!("{ADMIN_TOKEN_FILE}.new"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    writeln!(file, "{text}")?;
    file.sync_all()?;
    // Stored before the file is in place: a crash between the two leaves a token no
    // one holds, and the next start writes another.
    store.create_token(&record).await?;
    std::fs::rename(&temporary, &path)?;
    Ok(Some(path))
}

fn token_view(record: &TokenRecord, now_us: i64) -> TokenView {
    TokenView {
        id: record.id.clone(),
        name: record.name.clone(),
        grants: record.grants.clone(),
        created_at: rfc3339_us(record.created_at_us),
        created_by: record.created_by.clone(),
        expires_at: record.expires_at_us.map(rfc3339_us),
        expired: record.expired(now_us),
    }
}

#[utoipa::path(get, path = "/v1/whoami", tag = "tokens",
    responses((status = 200, description = "The token this request carries", body = TokenView), ApiError))]
async fn whoami(State(p): Shared, Extension(caller): Extension<Caller>) -> Result<Json<TokenView>, ApiError> {
    let record = p
        .store
        .token(&caller.token_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the token was revoked meanwhile"))?;
    Ok(Json(token_view(&record, now_us())))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, description = "Every token, without secrets", body = Vec<TokenView>), ApiError))]
async fn list_tokens(State(p): Shared) -> Result<Json<Vec<TokenView>>, ApiError> {
    let now = now_us();
    Ok(Json(
        p.store.tokens().await?.iter().map(|t| token_view(t, now)).collect(),
    ))
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, description = "The new token, shown this once", body = CreatedTokenView), ApiError))]
async fn create_token(
    State(p): Shared,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedTokenView>), ApiError> {
    validate_token_name("name", &request.name)?;
    validate_grants("grants", &request.grants)?;
    let now = now_us();
    let expires_at_us = match request.expires_in.as_deref() {
        None => None,
        Some(text) => {
            let ttl = humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero() && d.as_secs() <= 10 * 365 * 24 * 3600)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "expires_in",
                        format!("{text:?} is not a duration from 1s to 10 years, such as 30d or 12h"),
                    )
                })?;
            Some(now + ttl.as_micros() as i64)
        }
    };
    for grant in &request.grants {
        if let Some(ns) = &grant.namespace {
            p.require_namespace(ns).await?;
        }
    }
    let (token, record) =
        mint(&request.name, request.grants, Some(caller.token_id), now, expires_at_us).map_err(ApiError::internal)?;
    p.store.create_token(&record).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenView {
            token,
            details: token_view(&record, now),
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TokenPath {
    /// The token's id: the 12 characters after `updraft_`.
    id: String,
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(TokenPath),
    responses((status = 200, description = "Revoked: it authenticates nothing from now on", body = TokenView), ApiError))]
async fn revoke_token(State(p): Shared, Path(TokenPath { id }): Path<TokenPath>) -> Result<Json<TokenView>, ApiError> {
    let now = now_us();
    let tokens = p.store.tokens().await?;
    let record = tokens.iter().find(|t| t.id == id).ok_or_else(|| {
        ApiError::from(StoreError::NotFound {
            kind: "token",
            namespace: String::new(),
            name: id.clone(),
        })
    })?;
    if record.is_valid_admin(now) && tokens.iter().filter(|t| t.is_valid_admin(now)).count() == 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("token {id:?} is the last valid admin token; create another admin token before revoking it"),
        ));
    }
    let revoked = p.store.revoke_token(&id).await?;
    Ok(Json(token_view(&revoked, now)))
}

#[utoipa::path(get, path = "/v1/audit", tag = "tokens", params(AuditQuery),
    responses((status = 200, description = "Audited requests, oldest first", body = Vec<AuditView>), ApiError))]
async fn audit(State(p): Shared, Query(q): Query<AuditQuery>) -> Result<Json<Vec<AuditView>>, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(|t| crate::observe_api::time_param("since", t))
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::bad_request(
            "limit",
            format!("{limit} is out of range; give 1 to {MAX_AUDIT_LIMIT}"),
        ));
    }
    let entries = p.store.audit(since.unwrap_or(0), q.token.as_deref(), limit).await?;
    Ok(Json(entries.into_iter().map(audit_view).collect()))
}

fn audit_view(e: AuditEntry) -> AuditView {
    AuditView {
        seq: e.seq,
        at: rfc3339_us(e.at_us),
        token_id: e.token_id,
        method: e.method,
        path: e.path,
        namespace: e.namespace,
        status: e.status,
    }
}
