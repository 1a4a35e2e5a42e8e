//! `updraft apply` and `updraft get`: Knative manifests in and out.
//!
//! Every document of every file is checked before anything is uploaded or applied, so
//! a bad document changes nothing. A code package named by path (`package:./app`) is
//! packed and uploaded, and the manifest sent with its digest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use updraft_api::views::ApplyResult;
use updraft_events::manifest::{parse_documents, Document};
use updraft_model::image_ref::STORED_IMAGE_PREFIX;
use updraft_model::template::{PACKAGE_IMAGE_PREFIX, WASM_IMAGE_PREFIX};
use updraft_model::yaml::MAX_MANIFEST_BYTES;

use crate::client::{ApiClient, CliError};
use crate::output::print_structured;
use crate::uploads::{upload_component, upload_package};
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
    /// A cron trigger as a PingSource, an event trigger as a Trigger manifest.
    Trigger {
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

/// One document to apply, with where it came from.
struct Entry {
    origin: String,
    base: PathBuf,
    document: Document,
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

/// A package or component named by path, relative to the manifest's folder, with the
/// image prefix it was named under.
fn package_path(image: &str, base: &Path) -> Option<(&'static str, PathBuf)> {
    let (prefix, reference) = [PACKAGE_IMAGE_PREFIX, WASM_IMAGE_PREFIX]
        .into_iter()
        .find_map(|prefix| image.strip_prefix(prefix).map(|r| (prefix, r)))?;
    (!reference.starts_with("sha256:")).then(|| (prefix, base.join(reference)))
}

/// Whether `image` names an image in a registry (not a package, component or stored image).
fn is_registry_image(image: &str) -> bool {
    ![PACKAGE_IMAGE_PREFIX, WASM_IMAGE_PREFIX, STORED_IMAGE_PREFIX]
        .iter()
        .any(|prefix| image.starts_with(prefix))
}

/// A digest that passes validation, standing in for a package not uploaded yet.
const PLACEHOLDER_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A manifest file's text, read no further than the largest manifest the API takes, so
/// a device or a runaway file (`-f /dev/zero`) is refused instead of filling memory.
fn read_manifest(file: &Path) -> Result<String, CliError> {
    use std::io::Read;
    let failed = |e: &dyn std::fmt::Display| CliError::failed(format!("{}: {e}", file.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(|e| failed(&e))?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(failed(&format!(
            "is larger than {} MiB, the most a manifest may be",
            MAX_MANIFEST_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| failed(&"is not UTF-8 text"))
}

fn read_documents(files: &[PathBuf], namespace: &str) -> Result<Vec<Entry>, CliError> {
    let mut documents = Vec::new();
    for file in files {
        let text = read_manifest(file)?;
        let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let parsed = parse_documents(&text)
            .map_err(|(i, e)| CliError::failed(format!("{}: document {i}: {e}", file.display())))?;
        for (i, document) in parsed.into_iter().enumerate() {
            let origin = format!("{}: document {}", file.display(), i + 1);
            let Document::Service(manifest) = document else {
                documents.push(Entry {
                    origin,
                    base: base.clone(),
                    document,
                });
                continue;
            };
            let mut check = (*manifest).clone();
            for container in &mut check.spec.template.spec.containers {
                if let Some((prefix, path)) = package_path(&container.image, &base) {
                    if !path.exists() {
                        let what = if prefix == WASM_IMAGE_PREFIX {
                            "component file"
                        } else {
                            "package folder or archive"
                        };
                        return Err(CliError::failed(format!(
                            "{origin}: spec.template.spec.containers[0].image: {what} {} does not exist",
                            path.display()
                        )));
                    }
                    container.image = format!("{prefix}{PLACEHOLDER_DIGEST}");
                } else if let Some(local) = crate::images::local_image(&container.image, &base) {
                    if !local.path.exists() {
                        return Err(CliError::failed(format!(
                            "{origin}: spec.template.spec.containers[0].image: image archive or layout {} does not exist",
                            local.path.display()
                        )));
                    }
                    container.image = format!("{STORED_IMAGE_PREFIX}{PLACEHOLDER_DIGEST}");
                }
            }
            check
                .desired(namespace)
                .map_err(|e| CliError::failed(format!("{origin}: {e}")))?;
            documents.push(Entry {
                origin,
                base: base.clone(),
                document: Document::Service(manifest),
            });
        }
    }
    Ok(documents)
}

pub async fn apply(args: ApplyArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let files = manifest_files(&args.files)?;
    let documents = read_documents(&files, &args.ns.namespace)?;
    let mut uploaded: HashMap<PathBuf, String> = HashMap::new();
    let mut imported: HashMap<crate::images::LocalImage, String> = HashMap::new();
    let mut results = Vec::new();
    for doc in documents {
        let mut manifest = match doc.document {
            Document::Service(manifest) => manifest,
            other => {
                results.push(apply_eventing(client, &args.ns.namespace, &doc.origin, &other, output).await?);
                continue;
            }
        };
        for container in &mut manifest.spec.template.spec.containers {
            if let Some((prefix, path)) = package_path(&container.image, &doc.base) {
                let digest = match uploaded.get(&path) {
                    Some(digest) => digest.clone(),
                    None => {
                        let digest = if prefix == WASM_IMAGE_PREFIX {
                            upload_component(client, &path).await?
                        } else {
                            upload_package(client, &path, false).await?
                        };
                        uploaded.insert(path, digest.clone());
                        digest
                    }
                };
                container.image = format!("{prefix}{digest}");
            } else if let Some(local) = crate::images::local_image(&container.image, &doc.base) {
                let reference = match imported.get(&local) {
                    Some(reference) => reference.clone(),
                    None => {
                        let reference = crate::images::import(client, &local).await?.reference;
                        imported.insert(local, reference.clone());
                        reference
                    }
                };
                container.image = reference;
            } else if is_registry_image(&container.image) {
                // Pulled here for the progress bar; the server then finds it stored.
                crate::images::pull(client, &container.image)
                    .await
                    .map_err(|e| CliError {
                        code: e.code,
                        message: format!("{}: {}", doc.origin, e.message),
                    })?;
            }
        }
        let body = serde_json::to_string(&manifest).map_err(|e| CliError::failed(e.to_string()))?;
        let applied = match client.apply(&body, Some(&args.ns.namespace)).await {
            Ok(ApplyResult::Service(applied)) => applied,
            Ok(ApplyResult::Other(_)) => {
                return Err(CliError::failed(format!(
                    "{}: the API applied it as something else",
                    doc.origin
                )))
            }
            Err(e) => return Err(in_document(&doc.origin, e)),
        };
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
        results.push(serde_json::to_value(&applied).unwrap_or_default());
    }
    print_structured(&results, output);
    Ok(0)
}

/// An API error about one document of a file, said with where the document is.
fn in_document(origin: &str, e: updraft_api::client::Error) -> CliError {
    let e = CliError::from(e);
    CliError {
        code: e.code,
        message: format!("{origin}: {}", e.message),
    }
}

/// A PingSource, Trigger, Broker or DomainMapping, sent as the manifest it was written as.
async fn apply_eventing(
    client: &ApiClient,
    namespace: &str,
    origin: &str,
    document: &Document,
    output: Output,
) -> Result<serde_json::Value, CliError> {
    let (kind, name, body) = match document {
        Document::Trigger(t) => {
            let kind = if t.spec.kind() == "cron" {
                "pingsource"
            } else {
                "trigger"
            };
            let body =
                updraft_events::manifest::to_manifest(t.namespace.as_deref().unwrap_or(namespace), &t.name, &t.spec);
            (kind, t.name.clone(), body)
        }
        Document::Broker(b) => {
            let body = serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Broker",
                "metadata": { "name": b.name, "namespace": b.namespace.as_deref().unwrap_or(namespace) },
                "spec": { "delivery": b.delivery },
            });
            ("broker", b.name.clone(), Some(body))
        }
        Document::DomainMapping(m) => {
            let mapping = updraft_model::domain::DomainMapping {
                namespace: m.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                ..m.mapping.clone()
            };
            let body = serde_json::to_value(mapping.to_manifest()).map_err(|e| CliError::failed(e.to_string()))?;
            ("domainmapping", mapping.domain, Some(body))
        }
        Document::Service(_) => unreachable!("services are applied by the caller"),
    };
    let body = body.ok_or_else(|| CliError::failed(format!("{origin}: has no manifest form")))?;
    let body = serde_json::to_string(&body).map_err(|e| CliError::failed(e.to_string()))?;
    let applied = match client.apply(&body, Some(namespace)).await {
        Ok(ApplyResult::Other(applied)) => applied,
        Ok(ApplyResult::Service(_)) => {
            return Err(CliError::failed(format!("{origin}: the API applied it as a service")))
        }
        Err(e) => return Err(in_document(origin, e)),
    };
    if output == Output::Table {
        println!("{kind}/{name} {}", applied.result);
    }
    Ok(serde_json::to_value(&applied).unwrap_or_default())
}

pub async fn get(command: GetCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let format = if output == Output::Json { "json" } else { "yaml" };
    let reply = match command {
        GetCommand::Service { name, ns, knative } => client.manifest(&ns.namespace, &name, format, knative).await?,
        GetCommand::Trigger { name, ns } => client.trigger_manifest(&ns.namespace, &name, format).await?,
    };
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(&reply.body);
    if !reply.body.ends_with(b"\n") {
        let _ = out.write_all(b"\n");
    }
    Ok(0)
}
