//! Packages and components sent to the API, each checked against the server's size
//! limit first.

use std::path::PathBuf;

use updraft_api::views::InfoView;

use crate::client::{file_body, ApiClient, CliError};
use crate::pack;

/// Refuses an upload the server would refuse for its size, before sending it: a server
/// answering 413 closes the connection while the body is still on its way, and the
/// client would then see a broken connection instead of the answer.
pub async fn check_upload_size(
    client: &ApiClient,
    file: &std::path::Path,
    what: &str,
    limit: impl Fn(&InfoView) -> (u64, &'static str),
) -> Result<(), CliError> {
    let info = client.info().await?;
    let (max, flag) = limit(&info);
    let size = std::fs::metadata(file)
        .map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?
        .len();
    if size > max {
        return Err(CliError::failed(format!(
            "{what}: the upload is {size} bytes, larger than the limit of {max} bytes (server flag {flag})"
        )));
    }
    Ok(())
}

/// Uploads a folder or archive, checking the server's size limit first; returns the
/// digest. `verbose` says what the ignore rules left out of a folder.
pub async fn upload_package(client: &ApiClient, path: &std::path::Path, verbose: bool) -> Result<String, CliError> {
    let package = pack::prepare(path).map_err(|e| CliError::failed(format!("{e:#}")))?;
    if verbose {
        for left_out in package.left_out() {
            eprintln!("left out {}", left_out.display());
        }
    }
    check_upload_size(client, package.path(), "package", |i| {
        (i.max_package_bytes, "--max-package-size")
    })
    .await?;
    upload(client, package.path()).await
}

/// A function's package and its handler inside it: a folder is the package (the
/// runtime finds its entry file); a single file is packed alone.
pub(crate) fn function_package(path: &std::path::Path) -> Result<(FunctionPackage, String), CliError> {
    if path.is_dir() {
        return Ok((FunctionPackage::Folder(path.to_path_buf()), ".".to_string()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CliError::failed(format!("{}: not a file or folder", path.display())))?
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| CliError::failed(e.to_string()))?;
    std::fs::copy(path, dir.path().join(&name)).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    Ok((FunctionPackage::File(dir), name))
}

/// Where a function's package is, kept alive until it is uploaded.
pub(crate) enum FunctionPackage {
    Folder(PathBuf),
    File(tempfile::TempDir),
}

impl AsRef<std::path::Path> for FunctionPackage {
    fn as_ref(&self) -> &std::path::Path {
        match self {
            FunctionPackage::Folder(path) => path,
            FunctionPackage::File(dir) => dir.path(),
        }
    }
}

/// Uploads a component file as it is; the server checks it at deploy.
pub async fn upload_component(client: &ApiClient, path: &std::path::Path) -> Result<String, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(CliError::failed(format!(
            "{}: is not a WebAssembly binary (it does not start with \\0asm)",
            path.display()
        )));
    }
    check_upload_size(client, path, "wasm", |i| (i.max_package_bytes, "--max-package-size")).await?;
    upload(client, path).await
}

async fn upload(client: &ApiClient, path: &std::path::Path) -> Result<String, CliError> {
    let (body, len) = file_body(path).await?;
    Ok(client.upload_package(body, len).await?.digest)
}
