//! `updraft apply` and `updraft get`: Knative manifests in and out.
//!
//! Every document of every file is checked before anything is uploaded or applied, so
//! a bad document changes nothing. A code package named by path (`package:./app`) is
//! packed and uploaded, and the manifest sent with its digest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use http::Method;
use updraft_model::knative::{parse_manifests, KService};
use updraft_model::template::PACKAGE_IMAGE_PREFIX;
use updraft_server::views::ApplyView;

use crate::client::{full, ApiClient, CliError};
use crate::commands::upload_package;
use crate::output::print_structured;
use crate::{NamespaceArg, Output};

#[derive(Args)]
pub struct ApplyArgs {
    /// A manifest file or a folder of them (.yaml, .yml, .json); repeatable.
    #[arg(long = "filename", short = 'f', required = true)]
    files: Vec<PathBuf>,
    /// The namespace for manifests that name none.
    #[command(flatten)]
    ns: NamespaceArg,
}

#[derive(Subcommand)]
pub enum GetCommand {
    /// A service as a Knative Service manifest (`-o yaml`, the default, or `-o json`).
    Service {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
        /// A manifest a Knative cluster accepts: no status, and code packages marked as
        /// needing an image.
        #[arg(long)]
        knative: bool,
    },
}

/// One document to apply, with where it came from.
struct Document {
    origin: String,
    base: PathBuf,
    manifest: KService,
}

fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(CliError::failed(format!(
                    "{}: no .yaml, .yml or .json files in this folder",
                    path.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// A package named by path, relative to the manifest's folder.
fn package_path(image: &str, base: &Path) -> Option<PathBuf> {
    let reference = image.strip_prefix(PACKAGE_IMAGE_PREFIX)?;
    (!reference.starts_with("sha256:")).then(|| base.join(reference))
}

/// A digest that passes validation, standing in for a package not uploaded yet.
const PLACEHOLDER_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn read_documents(files: &[PathBuf], namespace: &str) -> Result<Vec<Document>, CliError> {
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| CliError::failed(format!("{}: {e}", file.display())))?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let manifests = parse_manifests(&text)
            .map_err(|(i, e)| CliError::failed(format!("{}: document {i}: {e}", file.display())))?;
        for (i, manifest) in manifests.into_iter().enumerate() {
            let origin = format!("{}: document {}", file.display(), i + 1);
            let mut check = manifest.clone();
            for container in &mut check.spec.template.spec.containers {
                if let Some(path) = package_path(&container.image, &base) {
                    if !path.exists() {
                        return Err(CliError::failed(format!(
                            "{origin}: spec.template.spec.containers[0].image: package folder or archive {} does not exist",
                            path.display()
                        )));
                    }
                    container.image = format!("{PACKAGE_IMAGE_PREFIX}{PLACEHOLDER_DIGEST}");
                }
            }
            check
                .desired(namespace)
                .map_err(|e| CliError::failed(format!("{origin}: {e}")))?;
            documents.push(Document {
                origin,
                base: base.clone(),
                manifest,
            });
        }
    }
    Ok(documents)
}

pub async fn apply(args: ApplyArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let files = manifest_files(&args.files)?;
    let documents = read_documents(&files, &args.ns.namespace)?;
    let mut uploaded: HashMap<PathBuf, String> = HashMap::new();
    let mut results = Vec::new();
    for mut doc in documents {
        for container in &mut doc.manifest.spec.template.spec.containers {
            if let Some(path) = package_path(&container.image, &doc.base) {
                let digest = match uploaded.get(&path) {
                    Some(digest) => digest.clone(),
                    None => {
                        let digest = upload_package(client, &path).await?;
                        uploaded.insert(path, digest.clone());
                        digest
                    }
                };
                container.image = format!("{PACKAGE_IMAGE_PREFIX}{digest}");
            }
        }
        let body = serde_json::to_vec(&doc.manifest).map_err(|e| CliError::failed(e.to_string()))?;
        let reply = client
            .send(
                Method::POST,
                &format!("/v1/apply?namespace={}", args.ns.namespace),
                &[("content-type".to_string(), "application/json".to_string())],
                full(body),
            )
            .await?;
        let applied: ApplyView = crate::client::decode(reply).map_err(|e| CliError {
            code: e.code,
            message: format!("{}: {}", doc.origin, e.message),
        })?;
        if output == Output::Table {
            let revision = applied
                .revision
                .as_ref()
                .map(|r| format!(" (revision {r})"))
                .unwrap_or_default();
            println!(
                "service/{} {}{revision}: {}",
                applied.service.name, applied.result, applied.service.url
            );
        }
        results.push(applied);
    }
    print_structured(&results, output);
    Ok(0)
}

pub async fn get(command: GetCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        GetCommand::Service { name, ns, knative } => {
            let format = if output == Output::Json { "json" } else { "yaml" };
            let path = format!(
                "/v1/namespaces/{}/services/{name}/manifest?format={format}&knative={knative}",
                ns.namespace
            );
            let reply = client.send(Method::GET, &path, &[], crate::client::empty()).await?;
            if !reply.status.is_success() {
                return crate::client::decode::<()>(reply).map(|_| crate::exit::FAILED);
            }
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = out.write_all(&reply.body);
            if !reply.body.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
            Ok(0)
        }
    }
}
