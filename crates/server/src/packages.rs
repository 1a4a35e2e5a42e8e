//! Package upload: streamed to disk with a size limit, hashed on the way, validated by
//! a full safe unpack, and only then stored under its digest and recorded.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use updraft_runtime::clock::now_us;
use updraft_runtime::package::unpack;

use crate::error::package_error;
use crate::platform::Platform;
use crate::views::PackageView;
use crate::ApiError;

/// The size limit of an upload and how the user raises it.
pub(crate) struct Limit {
    pub field: &'static str,
    pub bytes: u64,
    pub flag: &'static str,
}

impl Limit {
    fn exceeded(&self) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "{}: the archive is larger than the limit of {} bytes (server flag {})",
                self.field, self.bytes, self.flag
            ),
            field: Some(self.field.into()),
        }
    }
}

/// Streams a request body to `path`, refusing it once past the limit (or at once when
/// its declared length is); `inspect` sees every chunk. Returns the bytes written,
/// synced to disk.
pub(crate) async fn receive(
    body: Body,
    declared_len: Option<u64>,
    path: &std::path::Path,
    limit: &Limit,
    mut inspect: impl FnMut(&[u8]),
) -> Result<u64, ApiError> {
    if declared_len.is_some_and(|n| n > limit.bytes) {
        return Err(limit.exceeded());
    }
    let mut file = tokio::fs::File::create(path).await.map_err(ApiError::internal)?;
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(limit.field, format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit.bytes {
            return Err(limit.exceeded());
        }
        inspect(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.sync_all().await.map_err(ApiError::internal)?;
    Ok(size)
}

impl Platform {
    pub async fn upload_package(
        self: &Arc<Self>,
        declared_len: Option<u64>,
        body: Body,
    ) -> Result<PackageView, ApiError> {
        let staging = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&self.paths.tmp)
            .map_err(ApiError::internal)?;
        let archive = staging.path().join("archive");
        let mut hasher = Sha256::new();
        let mut head = Vec::with_capacity(4);
        let limit = Limit {
            field: "package",
            bytes: self.config.max_package_bytes,
            flag: "--max-package-size",
        };
        let size = receive(body, declared_len, &archive, &limit, |chunk| {
            let wanted = 4usize.saturating_sub(head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..wanted]);
            hasher.update(chunk);
        })
        .await?;
        if size == 0 {
            return Err(ApiError::bad_request(
                "package",
                "the upload is empty; send a .tar.gz, .tar or .zip archive",
            ));
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));

        // A WebAssembly binary is stored as it is; deploying it compiles and checks it.
        let is_wasm = head == b"\0asm";
        if !self.store.blob_exists(&digest).await? && is_wasm {
            std::fs::rename(&archive, self.paths.blob(&digest)).map_err(ApiError::internal)?;
            self.store.put_blob(&digest, size, now_us()).await?;
        } else if !self.store.blob_exists(&digest).await? {
            let limits = self.unpack_limits();
            let check_dir = staging.path().join("check");
            let archive_path = archive.clone();
            tokio::task::spawn_blocking(move || unpack(&archive_path, &check_dir, limits))
                .await
                .map_err(ApiError::internal)?
                .map_err(package_error)?;
            let target = self.paths.blob(&digest);
            std::fs::rename(&archive, &target).map_err(ApiError::internal)?;
            self.store.put_blob(&digest, size, now_us()).await?;
        }
        Ok(PackageView { digest, size })
    }
}
