//! OCI images from the CLI: `--image` references (a registry, `oci-archive:`,
//! `oci-layout:`), pulls with a progress bar, and `updraft registry`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use updraft_api::requests::LoginRequest;
use updraft_api::views::{ImageView, PullLine};

use crate::client::{read_json_lines, ApiClient, CliError};
use crate::output::{print_structured, print_table};
use crate::Output;

/// An OCI archive file: a tar of an image layout, or what `docker save` writes.
pub const ARCHIVE_PREFIX: &str = "oci-archive:";
/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
pub const LAYOUT_PREFIX: &str = "oci-layout:";

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Store credentials for a registry on the server (checked against it first).
    Login {
        /// The registry host, e.g. ghcr.io or 127.0.0.1:5000.
        registry: String,
        #[arg(long, short = 'u')]
        username: String,
        /// The password or token; prefer --password-stdin.
        #[arg(long, short = 'p', conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password or token from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List registries with stored credentials.
    List,
    /// Forget a registry's credentials.
    Logout {
        /// The registry host, e.g. ghcr.io or 127.0.0.1:5000.
        registry: String,
    },
}

/// An image archive or layout on this machine, and which image of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalImage {
    pub path: PathBuf,
    /// `oci-layout:DIR:TAG`, as skopeo writes it, when the layout holds several.
    pub tag: Option<String>,
}

/// The local archive or layout an `image` names, if it names one. A `:TAG` suffix
/// counts as a tag only when the path without it exists and the path with it does not.
pub fn local_image(image: &str, base: &Path) -> Option<LocalImage> {
    let rest = [ARCHIVE_PREFIX, LAYOUT_PREFIX]
        .into_iter()
        .find_map(|prefix| image.strip_prefix(prefix))?;
    let whole = base.join(rest);
    if !whole.exists() {
        if let Some((path, tag)) = rest.rsplit_once(':') {
            if !tag.is_empty() && !tag.contains('/') && base.join(path).exists() {
                return Some(LocalImage {
                    path: base.join(path),
                    tag: Some(tag.to_string()),
                });
            }
        }
    }
    Some(LocalImage { path: whole, tag: None })
}

/// What a deploy sends for `image`: local images are uploaded and named by digest
/// (`oci:sha256:…`); registry images are pulled now, with progress, and keep their
/// reference.
/// With `pull_first`, a registry image is pulled before the deploy, with progress;
/// without, the deploy pulls it (with the namespace's registry secret, which a pull
/// on its own does not use).
pub async fn resolve(client: &ApiClient, image: &str, base: &Path, pull_first: bool) -> Result<String, CliError> {
    if let Some(local) = local_image(image, base) {
        let view = import(client, &local).await?;
        return Ok(view.reference);
    }
    if pull_first {
        pull(client, image).await?;
    }
    Ok(image.to_string())
}

/// Uploads an OCI archive, or an image layout directory packed as one.
pub async fn import(client: &ApiClient, local: &LocalImage) -> Result<ImageView, CliError> {
    let path = &local.path;
    let meta = std::fs::metadata(path).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        let archive = tempfile::NamedTempFile::new().map_err(|e| CliError::failed(e.to_string()))?;
        let mut builder = tar::Builder::new(archive.reopen().map_err(|e| CliError::failed(e.to_string()))?);
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", path)
            .and_then(|_| builder.finish())
            .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
        drop(builder);
        crate::uploads::check_upload_size(client, archive.path(), "image", |i| {
            (i.max_image_bytes, "--max-image-size")
        })
        .await?;
        return upload(client, archive.path(), local.tag.as_deref()).await;
    }
    crate::uploads::check_upload_size(client, path, "image", |i| (i.max_image_bytes, "--max-image-size")).await?;
    upload(client, path, local.tag.as_deref()).await
}

async fn upload(client: &ApiClient, path: &Path, tag: Option<&str>) -> Result<ImageView, CliError> {
    let (body, len) = crate::client::file_body(path).await?;
    Ok(client.import_image(body, len, tag).await?)
}

/// Pulls through the server, drawing the bytes transferred on a terminal.
pub async fn pull(client: &ApiClient, reference: &str) -> Result<ImageView, CliError> {
    let stream = client.pull(reference).await?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("pulling {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let mut blobs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let result = read_json_lines(stream, "the pull", |line: PullLine, _| match line {
        PullLine::Progress(p) => {
            blobs.insert(p.digest.clone(), (p.done, p.total));
            if let Some(bar) = &bar {
                bar.set_length(blobs.values().map(|(_, t)| t).sum());
                bar.set_position(blobs.values().map(|(d, _)| d).sum());
                bar.set_message(p.what);
            }
            Ok(None)
        }
        PullLine::Image(view) => Ok(Some(view)),
        PullLine::Error(body) => Err(CliError::failed(body.error.message)),
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?.ok_or_else(|| CliError::failed("the pull ended without a result"))
}

pub async fn registry(command: RegistryCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        RegistryCommand::Login {
            registry,
            username,
            password,
            password_stdin,
        } => {
            let password = match (password, password_stdin) {
                (Some(password), _) => password,
                (None, true) => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|e| CliError::failed(format!("reading the password: {e}")))?;
                    text.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, false) => {
                    return Err(CliError {
                        code: crate::exit::USAGE,
                        message: "give --password-stdin (or --password)".into(),
                    })
                }
            };
            login(client, &registry, &username, &password).await?;
            if output == Output::Table {
                println!("Login to {registry} as {username} stored");
            }
            Ok(0)
        }
        RegistryCommand::Logout { registry } => {
            client.logout(&registry).await?;
            if output == Output::Table {
                println!("Credentials for {registry} removed");
            }
            Ok(0)
        }
        RegistryCommand::List => {
            let registries = client.registries().await?;
            if !print_structured(&registries, output) {
                print_table(
                    &["REGISTRY", "USERNAME"],
                    registries.into_iter().map(|r| vec![r.registry, r.username]),
                );
            }
            Ok(0)
        }
    }
}

pub async fn login(client: &ApiClient, registry: &str, username: &str, password: &str) -> Result<(), CliError> {
    let login = LoginRequest {
        registry: registry.to_string(),
        username: username.to_string(),
        password: password.to_string(),
    };
    client.login(&login).await?;
    Ok(())
}
