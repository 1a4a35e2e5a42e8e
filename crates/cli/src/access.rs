//! Who the CLI is: the API and token it uses (flags, contexts saved by `updraft
//! login`, or the local server's admin token), and the token and audit commands.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use updraft_api::requests::{AuditQuery, CreateTokenRequest};
use updraft_model::auth::{parse_token, Grant};

use crate::client::{ApiClient, CliError};
use crate::output::{print_structured, print_table};
use crate::Output;

pub const DEFAULT_API: &str = "http://127.0.0.1:8081";
/// Where `updraft server` keeps its admin token by default (`--data-dir .updraft`).
const LOCAL_ADMIN_TOKEN: &str = ".updraft/admin.token";
/// A token file is one line; anything much longer is not a token file.
const MAX_TOKEN_FILE: u64 = 4096;

/// Saved API endpoints and tokens, as kubectl keeps contexts.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: Vec<SavedContext>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedContext {
    pub name: String,
    pub api: String,
    pub token: String,
    /// A certificate (PEM) to trust for an https:// API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for SavedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SavedContext({}, {})", self.name, self.api)
    }
}

/// `$UPDRAFT_CONFIG`, else `$XDG_CONFIG_HOME/updraft/config.yaml`, else
/// `~/.config/updraft/config.yaml`.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("UPDRAFT_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("updraft").join("config.yaml"))
}

fn read_small(path: &Path) -> Result<Option<String>, CliError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::failed(format!("{}: {e}", path.display()))),
    };
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE * 256)
        .read_to_string(&mut text)
        .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    Ok(Some(text))
}

/// Where contexts are kept, for the commands that write them.
fn contexts_path() -> Result<PathBuf, CliError> {
    config_path().ok_or_else(|| CliError::failed("no HOME or UPDRAFT_CONFIG to keep contexts in"))
}

pub fn load_contexts(path: &Path) -> Result<Contexts, CliError> {
    match read_small(path)? {
        None => Ok(Contexts::default()),
        Some(text) => serde_yaml_ng::from_str(&text)
            .map_err(|e| CliError::failed(format!("{}: not a contexts file: {e}", path.display()))),
    }
}

/// Written whole to a new file (0600) and renamed over the old one, so a reader never
/// sees half a file and the tokens are never readable by others.
fn save_contexts(path: &Path, contexts: &Contexts) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::failed(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
    }
    let text = serde_yaml_ng::to_string(contexts).map_err(|e| CliError::failed(e.to_string()))?;
    let temporary = path.with_extension("yaml.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(fail)?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// Reads a token from a file: its first line, which must look like a token.
pub fn read_token_file(path: &Path) -> Result<String, CliError> {
    let text = read_small(path)?.ok_or_else(|| CliError::failed(format!("{}: no such file", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    parse_token(&token).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    Ok(token)
}

/// The global flags that say which API and token to use.
pub struct Target {
    pub api: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub ca_cert: Option<PathBuf>,
}

/// A client of `api`, trusting `ca_cert` as well as the usual roots.
fn api_client(api: &str, ca_cert: Option<&Path>) -> Result<ApiClient, CliError> {
    let client = ApiClient::new(api);
    match ca_cert {
        None => Ok(client),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
            client
                .with_ca(&pem)
                .map_err(|e| CliError::failed(format!("{}: {e}", path.display())))
        }
    }
}

/// The client for the flags: an explicit `--api`/`--token` wins, then the context
/// (`--context`, else the current one), then the local server's admin token.
pub fn client(target: &Target) -> Result<ApiClient, CliError> {
    let contexts = match config_path() {
        Some(path) => load_contexts(&path)?,
        None => Contexts::default(),
    };
    let chosen = match &target.context {
        Some(name) => Some(
            contexts
                .contexts
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| CliError::failed(format!("no context {name:?}; `updraft contexts` lists them")))?,
        ),
        None => contexts
            .current
            .as_ref()
            .and_then(|name| contexts.contexts.iter().find(|c| &c.name == name)),
    };
    let api = target
        .api
        .clone()
        .or_else(|| chosen.map(|c| c.api.clone()))
        .unwrap_or_else(|| DEFAULT_API.to_string());
    let token = match (&target.token, chosen) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(context)) => Some(context.token.clone()),
        (None, None) => read_token_file(Path::new(LOCAL_ADMIN_TOKEN)).ok(),
    };
    let ca_cert = target
        .ca_cert
        .clone()
        .or_else(|| chosen.and_then(|c| c.ca_cert.clone()));
    Ok(api_client(&api, ca_cert.as_deref())?.with_token(token))
}

#[derive(Args)]
pub struct LoginArgs {
    /// The API to log in to.
    #[arg(long, env = "UPDRAFT_API")]
    api: String,
    /// The token (prefer --token-file or --token-stdin: a flag shows in `ps`).
    #[arg(long, conflicts_with_all = ["token_file", "token_stdin"], env = "UPDRAFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the token from this file (its first line), such as the server's admin.token.
    #[arg(long, value_name = "FILE", conflicts_with = "token_stdin")]
    token_file: Option<PathBuf>,
    /// Read the token from standard input.
    #[arg(long)]
    token_stdin: bool,
    /// The context's name (default: the API's host and port).
    #[arg(long = "name", value_name = "CONTEXT")]
    name: Option<String>,
}

/// Checks the token against the API, then saves it as a context and makes it current.
pub async fn login(args: LoginArgs, ca_cert: Option<PathBuf>, output: Output) -> Result<u8, CliError> {
    let token = match (&args.token, &args.token_file, args.token_stdin) {
        (Some(token), _, _) => token.trim().to_string(),
        (None, Some(file), _) => read_token_file(file)?,
        (None, None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .take(MAX_TOKEN_FILE)
                .read_to_string(&mut line)
                .map_err(|e| CliError::failed(format!("reading the token from stdin: {e}")))?;
            line.trim().to_string()
        }
        (None, None, false) => {
            return Err(CliError {
                code: crate::exit::USAGE,
                message: "give the token: --token-file FILE, --token-stdin, or --token".into(),
            })
        }
    };
    parse_token(&token).map_err(CliError::failed)?;
    let ca_cert = ca_cert
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .filter(|p| p.is_file());
    let client = api_client(&args.api, ca_cert.as_deref())?.with_token(Some(token.clone()));
    let me = client.whoami().await?;
    let name = args.name.unwrap_or_else(|| {
        args.api
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    });
    let path = contexts_path()?;
    let mut contexts = load_contexts(&path)?;
    contexts.contexts.retain(|c| c.name != name);
    contexts.contexts.push(SavedContext {
        name: name.clone(),
        api: client.base().to_string(),
        token,
        ca_cert,
    });
    contexts.current = Some(name.clone());
    save_contexts(&path, &contexts)?;
    if !print_structured(&me, output) {
        let grants: Vec<String> = me.grants.iter().map(Grant::to_string).collect();
        println!(
            "logged in to {} as token {:?} ({}, {}); context {name:?} is current",
            client.base(),
            me.name,
            me.id,
            grants.join(", ")
        );
    }
    Ok(0)
}

#[derive(Serialize)]
struct ContextRow<'a> {
    name: &'a str,
    api: &'a str,
    current: bool,
}

/// Lists saved contexts (never their tokens); `use` makes one current.
pub fn contexts(select: Option<String>, output: Output) -> Result<u8, CliError> {
    let path = contexts_path()?;
    let mut saved = load_contexts(&path)?;
    if let Some(name) = select {
        if !saved.contexts.iter().any(|c| c.name == name) {
            return Err(CliError {
                code: crate::exit::NOT_FOUND,
                message: format!("no context {name:?}; `updraft login` saves one"),
            });
        }
        saved.current = Some(name);
        save_contexts(&path, &saved)?;
    }
    let rows: Vec<ContextRow> = saved
        .contexts
        .iter()
        .map(|c| ContextRow {
            name: &c.name,
            api: &c.api,
            current: saved.current.as_deref() == Some(c.name.as_str()),
        })
        .collect();
    if !print_structured(&rows, output) {
        print_table(
            &["CURRENT", "NAME", "API"],
            rows.iter().map(|r| {
                vec![
                    if r.current { "*" } else { "" }.to_string(),
                    r.name.to_string(),
                    r.api.to_string(),
                ]
            }),
        );
    }
    Ok(0)
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once, and the server keeps only its hash.
    Create {
        /// What its owner calls it (ci, alice-laptop).
        name: String,
        /// `admin`, or ROLE=NAMESPACE with ROLE developer, viewer or invoker (repeatable).
        #[arg(long = "grant", short = 'g', value_name = "ROLE[=NAMESPACE]", required = true)]
        grants: Vec<String>,
        /// How long it is valid (30d, 12h); until revoked if not given.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens: ids, names, grants and expiry, never secrets.
    List,
    /// Revoke a token by its id; it authenticates nothing from then on.
    Revoke { id: String },
}

pub async fn token(command: TokenCommand, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    match command {
        TokenCommand::Create { name, grants, expires } => {
            let grants = grants
                .iter()
                .map(|g| Grant::parse("--grant", g))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CliError {
                    code: crate::exit::USAGE,
                    message: e.to_string(),
                })?;
            let request = CreateTokenRequest {
                name,
                grants,
                expires_in: expires,
            };
            let created = client.create_token(&request).await?;
            if !print_structured(&created, output) {
                println!("{}", created.token);
                eprintln!(
                    "token {:?} ({}) created; keep it now, it is not shown again",
                    created.details.name, created.details.id
                );
            }
            Ok(0)
        }
        TokenCommand::List => {
            let tokens = client.tokens().await?;
            if !print_structured(&tokens, output) {
                println!(
                    "{:<13} {:<20} {:<32} {:<25} CREATED BY",
                    "ID", "NAME", "GRANTS", "EXPIRES"
                );
                for t in &tokens {
                    let grants: Vec<String> = t.grants.iter().map(Grant::to_string).collect();
                    let expires = match (&t.expires_at, t.expired) {
                        (Some(at), true) => format!("expired {at}"),
                        (Some(at), false) => at.clone(),
                        (None, _) => "never".into(),
                    };
                    println!(
                        "{:<13} {:<20} {:<32} {:<25} {}",
                        t.id,
                        t.name,
                        grants.join(","),
                        expires,
                        t.created_by.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(0)
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.revoke_token(&id).await?;
            if !print_structured(&revoked, output) {
                println!("token {:?} ({}) revoked", revoked.name, revoked.id);
            }
            Ok(0)
        }
    }
}

#[derive(Args)]
pub struct AuditArgs {
    /// Entries from this time on: RFC 3339, or a duration back from now (1h).
    #[arg(long)]
    since: Option<String>,
    /// Only what this token id did.
    #[arg(long, value_name = "ID")]
    token_id: Option<String>,
    /// At most this many of the latest entries.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub async fn audit(args: AuditArgs, client: &ApiClient, output: Output) -> Result<u8, CliError> {
    let entries = client
        .audit(&AuditQuery {
            since: args.since,
            token: args.token_id,
            limit: Some(args.limit),
        })
        .await?;
    if !print_structured(&entries, output) {
        print_table(
            &["TIME", "TOKEN", "METHOD", "STATUS", "PATH"],
            entries.iter().map(|e| {
                vec![
                    e.at.clone(),
                    e.token_id.clone().unwrap_or_else(|| "-".into()),
                    e.method.clone(),
                    e.status.to_string(),
                    e.path.clone(),
                ]
            }),
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_saved_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updraft").join("config.yaml");
        let contexts = Contexts {
            current: Some("a".into()),
            contexts: vec![SavedContext {
                name: "a".into(),
                api: "http://h:1".into(),
                token: "updraft_x".into(),
                ca_cert: None,
            }],
        };
        save_contexts(&path, &contexts).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let back = load_contexts(&path).unwrap();
        assert_eq!(back.current.as_deref(), Some("a"));
        assert_eq!(back.contexts[0].token, "updraft_x");
        assert!(
            !format!("{:?}", back.contexts[0]).contains("updraft_x"),
            "Debug shows no token"
        );
        std::fs::write(&path, "current: [").unwrap();
        assert!(load_contexts(&path)
            .unwrap_err()
            .message
            .contains("not a contexts file"));
    }

    #[test]
    fn a_token_file_holds_a_token_on_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let token = format!("updraft_abcdefghijkl_{}", "A".repeat(40));
        std::fs::write(&file, format!("{token}\nignored\n")).unwrap();
        assert_eq!(read_token_file(&file).unwrap(), token);
        std::fs::write(&file, "secret-looking junk\n").unwrap();
        let err = read_token_file(&file).unwrap_err();
        assert!(
            err.message.contains("malformed") && !err.message.contains("junk"),
            "{}",
            err.message
        );
    }
}
