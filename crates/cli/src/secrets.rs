//! `updraft secret`: secrets of a namespace, for services to read as variables.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use clap::Subcommand;
use updraft_api::requests::{CreateSecretRequest, SecretDataRequest};
use updraft_model::secret::MAX_SECRET_BYTES;

use crate::client::{ApiClient, CliError};
use crate::output::{print_listing, print_structured};
use crate::{ListScope, NamespaceArg, Output};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create a secret (`updraft secret create team/db --from-literal password=…`).
    Create {
        /// NAME, or NS/NAME.
        name: String,
        /// A key and its value (repeatable). Beware: the value stays in the shell's history.
        #[arg(long = "from-literal", value_name = "KEY=VALUE")]
        literal: Vec<String>,
        /// A key and the file holding its value; the file's name is the key when no
        /// KEY= is given (repeatable).
        #[arg(long = "from-file", value_name = "[KEY=]PATH")]
        file: Vec<String>,
        /// Replace the keys and values of a secret that exists.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        ns: NamespaceArg,
    },
    /// List a namespace's secrets with their keys (never their values).
    List {
        #[command(flatten)]
        scope: ListScope,
    },
    /// Delete a secret no service reads.
    Delete {
        /// NAME, or NS/NAME.
        name: String,
        #[command(flatten)]
        ns: NamespaceArg,
    },
}

/// `NS/NAME` names its namespace; a plain `NAME` is in `--namespace`'s.
fn split_name(name: &str, ns: &NamespaceArg) -> (String, String) {
    match name.split_once('/') {
        Some((namespace, name)) => (namespace.to_string(), name.to_string()),
        None => (ns.namespace.clone(), name.to_string()),
    }
}

fn read_value(path: &Path) -> Result<Vec<u8>, CliError> {
    let file =
        std::fs::File::open(path).map_err(|e| CliError::usage(format!("--from-file {}: {e}", path.display())))?;
    let mut value = Vec::new();
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| CliError::usage(format!("--from-file {}: {e}", path.display())))?;
    if value.len() > MAX_SECRET_BYTES {
        return Err(CliError::usage(format!(
            "--from-file {}: larger than a secret may be ({MAX_SECRET_BYTES} bytes)",
            path.display()
        )));
    }
    Ok(value)
}

fn data(literal: &[String], file: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut values: Vec<(String, Vec<u8>)> = Vec::new();
    for pair in literal {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::usage("--from-literal: expected KEY=VALUE".to_string()))?;
        values.push((key.to_string(), value.as_bytes().to_vec()));
    }
    for given in file {
        let (key, path) = match given.split_once('=') {
            Some((key, path)) => (key.to_string(), Path::new(path)),
            None => {
                let path = Path::new(given);
                let key = path.file_name().map(|n| n.to_string_lossy().into_owned());
                (key.unwrap_or_default(), path)
            }
        };
        values.push((key, read_value(path)?));
    }
    if values.is_empty() {
        return Err(CliError::usage(
            "give the secret's keys with --from-literal or --from-file".to_string(),
        ));
    }
    let mut data = BTreeMap::new();
    for (key, value) in values {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        if data.insert(key.clone(), encoded).is_some() {
            return Err(CliError::usage(format!("key {key:?} is given more than once")));
        }
    }
    Ok(data)
}

pub async fn secret(command: SecretCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        SecretCommand::Create {
            name,
            literal,
            file,
            replace,
            ns,
        } => {
            let (namespace, name) = split_name(&name, &ns);
            let data = data(&literal, &file)?;
            let secret = if replace {
                client
                    .replace_secret(&namespace, &name, &SecretDataRequest { data })
                    .await?
            } else {
                client
                    .create_secret(&namespace, &CreateSecretRequest { name, data })
                    .await?
            };
            if !print_structured(&secret, output) {
                println!("secret/{} written ({})", secret.name, secret.keys.join(", "));
            }
            Ok(0)
        }
        SecretCommand::List { scope } => {
            let secrets = scope.list(client, async |ns| client.secrets(ns).await).await?;
            if !print_structured(&secrets, output) {
                print_listing(
                    scope.all_namespaces,
                    &["NAME", "UPDATED", "KEYS"],
                    secrets.iter().map(|s| {
                        (
                            s.namespace.clone(),
                            vec![s.name.clone(), s.updated_at.clone(), s.keys.join(",")],
                        )
                    }),
                );
            }
            Ok(0)
        }
        SecretCommand::Delete { name, ns } => {
            let (namespace, name) = split_name(&name, &ns);
            client.delete_secret(&namespace, &name).await?;
            if !print_structured(&serde_json::json!({ "deleted": name, "namespace": namespace }), output) {
                println!("secret/{name} deleted");
            }
            Ok(0)
        }
    }
}
