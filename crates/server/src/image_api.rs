//! The REST API of OCI images and registry credentials.
//!
//! | method and path | what it does |
//! |---|---|
//! | `POST /v1/images?tag=` | import an OCI archive or `docker save` tar (body); `tag` picks one of several; returns the image |
//! | `POST /v1/images/pull` | pull `{"reference": …}`; answers NDJSON: progress lines, then the image or an error |
//! | `GET /v1/registries` | registries with stored credentials (user names only) |
//! | `POST /v1/registries` | store `{"registry", "username", "password"}` once the registry accepts them |
//! | `DELETE /v1/registries/{registry}` | forget a registry's credentials |

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use updraft_api::requests::{LoginRequest, PullRequest};
use updraft_runtime::clock::now_us;
use updraft_runtime::image::{Image, Progress, STORED_IMAGE_PREFIX};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::image_error;
use crate::extract::{JsonBody, Path, Query};
use crate::packages::{receive, Limit};
use crate::platform::Platform;
use crate::views::{ErrorBody, ErrorDetail, ImageView, PullLine, PullProgress, RegistryView};
use crate::ApiError;

type Shared = State<Arc<Platform>>;

pub fn routes() -> OpenApiRouter<Arc<Platform>> {
    OpenApiRouter::new()
        .routes(routes!(import_image))
        .routes(routes!(pull_image))
        .routes(routes!(list_registries, login))
        .routes(routes!(logout))
}

pub(crate) fn image_view(image: &Image) -> ImageView {
    let info = &image.info;
    ImageView {
        digest: info.digest.clone(),
        reference: format!("{STORED_IMAGE_PREFIX}{}", info.digest),
        entrypoint: info.entrypoint.clone(),
        cmd: info.cmd.clone(),
        env: info.env.clone(),
        working_dir: info.working_dir.clone(),
        user: info.user.clone(),
        size: info.size,
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// Which image of an archive holding several (`org.opencontainers.image.ref.name`).
    tag: Option<String>,
}

#[utoipa::path(post, path = "/v1/images", tag = "images", params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "an OCI image layout or `docker save` tar"),
    responses((status = 201, description = "Imported", body = ImageView), ApiError))]
async fn import_image(
    State(p): Shared,
    Query(query): Query<ImportQuery>,
    request: Request,
) -> Result<(StatusCode, Json<ImageView>), ApiError> {
    let declared: Option<u64> = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let staging = tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(&p.paths.tmp)
        .map_err(ApiError::internal)?;
    let archive = staging.path().join("archive");
    let limit = Limit {
        field: "image",
        bytes: p.config.max_image_bytes,
        flag: "--max-image-size",
    };
    if receive(request.into_body(), declared, &archive, &limit, |_| {}).await? == 0 {
        return Err(ApiError::bad_request(
            "image",
            "the upload is empty; send an OCI archive (a tar of an image layout) or a docker save tar",
        ));
    }
    let image = p
        .images
        .import_archive(&archive, query.tag.as_deref(), &|_| {})
        .await
        .map_err(image_error)?;
    p.store.put_blob(&image.info.digest, image.info.size, now_us()).await?;
    Ok((StatusCode::CREATED, Json(image_view(&image))))
}

/// Progress goes out as it happens, so the CLI can draw its bar; the last line says
/// how it ended.
#[utoipa::path(post, path = "/v1/images/pull", tag = "images", request_body = PullRequest,
    responses((status = 200, description = "progress lines, then the image or an error, one JSON object a line",
        body = PullLine, content_type = "application/x-ndjson"), ApiError))]
async fn pull_image(State(p): Shared, JsonBody(body): JsonBody<PullRequest>) -> Result<Response, ApiError> {
    updraft_model::image_ref::validate_image_reference("reference", &body.reference)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PullLine>();
    tokio::spawn(async move {
        let progress_tx = tx.clone();
        let report = move |progress: Progress| {
            let _ = progress_tx.send(PullLine::Progress(PullProgress {
                what: progress.what,
                digest: progress.digest,
                done: progress.done,
                total: progress.total,
                cached: progress.cached,
            }));
        };
        let line = match p.images.pull(&body.reference, &report).await {
            Ok(image) => {
                let _ = p.store.put_blob(&image.info.digest, image.info.size, now_us()).await;
                PullLine::Image(image_view(&image))
            }
            Err(e) => {
                let e = image_error(e);
                PullLine::Error(ErrorBody {
                    error: ErrorDetail {
                        code: e.status.as_u16(),
                        message: e.message,
                        field: e.field,
                    },
                })
            }
        };
        let _ = tx.send(line);
    });
    let lines = tokio_stream_lines(rx);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

fn tokio_stream_lines(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<PullLine>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|line| {
            line.map(|line| {
                let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
                bytes.push(b'\n');
                Ok(bytes)
            })
        })
    })
}

#[utoipa::path(get, path = "/v1/registries", tag = "images",
    responses((status = 200, description = "Registries with stored credentials", body = Vec<RegistryView>), ApiError))]
async fn list_registries(State(p): Shared) -> Json<Vec<RegistryView>> {
    Json(
        p.images
            .logins()
            .into_iter()
            .map(|(registry, username)| RegistryView { registry, username })
            .collect(),
    )
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct RegistryPath {
    /// The registry host (`ghcr.io`, `127.0.0.1:5000`).
    registry: String,
}

/// Pulls from the registry go without credentials from then on.
#[utoipa::path(delete, path = "/v1/registries/{registry}", tag = "images", params(RegistryPath),
    responses((status = 204, description = "Forgotten"), ApiError))]
async fn logout(State(p): Shared, Path(RegistryPath { registry }): Path<RegistryPath>) -> Result<StatusCode, ApiError> {
    if p.images.logout(&registry).map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no credentials are stored for registry {registry:?}"
        )))
    }
}

/// Stored only once the registry accepts them; the password is never shown again.
#[utoipa::path(post, path = "/v1/registries", tag = "images", request_body = LoginRequest,
    responses((status = 201, description = "Accepted by the registry and stored", body = RegistryView), ApiError))]
async fn login(
    State(p): Shared,
    JsonBody(body): JsonBody<LoginRequest>,
) -> Result<(StatusCode, Json<RegistryView>), ApiError> {
    if !updraft_model::image_ref::valid_registry(&body.registry) {
        return Err(ApiError::bad_request(
            "registry",
            format!("{:?} is not a registry host (host or host:port)", body.registry),
        ));
    }
    if body.username.is_empty() {
        return Err(ApiError::bad_request("username", "is empty"));
    }
    p.images
        .check_login(&body.registry, &body.username, &body.password)
        .await
        .map_err(image_error)?;
    p.images
        .login(&body.registry, &body.username, &body.password)
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(RegistryView {
            registry: body.registry,
            username: body.username,
        }),
    ))
}
