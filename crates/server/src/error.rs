use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use updraft_events::routing::RouteError;
use updraft_model::FieldError;
use updraft_store::StoreError;

use crate::views::{ErrorBody, ErrorDetail};

/// An API failure: its status, message and, for bad input, the offending field.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// A refusal of one field; the message names the field, as [`FieldError`]'s do.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NoSuchNamespace(_) | StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists(_) | StoreError::Conflict { .. } | StoreError::NotEmpty(_) => {
                StatusCode::CONFLICT
            }
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Database(_) | StoreError::Corrupt(_) | StoreError::Compacted { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.status.as_u16(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NoSuchNamespace(ns) => StoreError::NoSuchNamespace(ns).into(),
            RouteError::NoSuchBroker { .. } => ApiError::not_found(e.to_string()),
            RouteError::Encode(_) => ApiError::internal(e),
        }
    }
}

pub fn image_error(e: updraft_runtime::image::ImageError) -> ApiError {
    let status = match &e {
        updraft_runtime::image::ImageError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        updraft_runtime::image::ImageError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError {
        status,
        message: format!("image: {e}"),
        field: e.is_bad_input().then(|| "image".to_string()),
    }
}

pub fn package_error(e: updraft_runtime::package::PackageError) -> ApiError {
    match e {
        updraft_runtime::package::PackageError::TooLarge { .. } => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: e.to_string(),
            field: Some("package".into()),
        },
        updraft_runtime::package::PackageError::Io(io) => ApiError::internal(format!("storing package: {io}")),
        other => ApiError::bad_request("package", other.to_string()),
    }
}
