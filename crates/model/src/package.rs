//! How a code package names its command: `updraft.yaml`, a `Procfile`, or detection.
//!
//! The rules read file contents through [`PackageFiles`], so they stay pure and the
//! caller decides where the files live.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::names::validate_env_var;
use crate::quantity::{parse_cpu, parse_memory};
use crate::FieldError;

/// Read access to the top level of an unpacked package.
pub trait PackageFiles {
    /// Names of the regular files at the package root.
    fn root_files(&self) -> Vec<String>;
    /// The contents of a root file, if it exists and is text.
    fn read(&self, name: &str) -> Option<String>;
    /// Whether the package root holds a folder of this name.
    fn has_dir(&self, name: &str) -> bool;
}

/// What to run, as found in the package.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launch {
    pub command: Vec<String>,
    /// The file or rule the command came from, for `updraft service` to show.
    pub source: String,
    pub env: BTreeMap<String, String>,
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
    /// `updraft.yaml`'s `build:` command, run in the package before it starts.
    pub build: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RunField {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdraftYaml {
    run: Option<RunField>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    memory: Option<String>,
    cpu: Option<String>,
    build: Option<String>,
}

const LOOKED_FOR: &str = "updraft.yaml with a `run:` command, a Procfile with a `web:` line, \
a single *.jar, package.json with a \"start\" script or \"main\", main.py or app.py, go.mod";

/// Where a Go module's build puts its program, in the revision's folder.
pub const GO_PROGRAM: &str = ".updraft-go-app";

/// `go build` of the module at the package's top, with its vendored modules when it
/// has them; the module proxy is off, so a build never fetches what the package does
/// not ship.
fn go_build(vendored: bool) -> String {
    let vendor = if vendored { " -mod=vendor" } else { "" };
    format!("GOPROXY=off GOFLAGS= go build{vendor} -o {GO_PROGRAM} .")
}

/// Finds the command of a package by the documented rules, in order.
pub fn detect(files: &dyn PackageFiles) -> Result<Launch, FieldError> {
    let mut launch = Launch::default();
    if let Some(text) = files.read("updraft.yaml") {
        crate::yaml::check_nesting("updraft.yaml", &text)?;
        let manifest: UpdraftYaml =
            serde_yaml_ng::from_str(&text).map_err(|e| FieldError::new("updraft.yaml", e.to_string()))?;
        for (name, value) in &manifest.env {
            validate_env_var(&format!("updraft.yaml: env.{name}"), name, value)?;
        }
        launch.env = manifest.env;
        launch.build = match manifest.build {
            Some(line) if line.trim().is_empty() => {
                return Err(FieldError::new(
                    "updraft.yaml: build",
                    "is empty; name the command that builds the package, or leave the line out",
                ));
            }
            line => line,
        };
        launch.memory_bytes = manifest
            .memory
            .as_deref()
            .map(|m| parse_memory("updraft.yaml: memory", m))
            .transpose()?;
        launch.cpu_millis = manifest
            .cpu
            .as_deref()
            .map(|c| parse_cpu("updraft.yaml: cpu", c))
            .transpose()?;
        match manifest.run {
            Some(RunField::Shell(line)) if !line.trim().is_empty() => {
                launch.command = shell(&line);
            }
            Some(RunField::Argv(argv)) if !argv.is_empty() && !argv[0].is_empty() => {
                launch.command = argv;
            }
            Some(_) => {
                return Err(FieldError::new(
                    "updraft.yaml: run",
                    "is empty; name the command that starts the server",
                ));
            }
            None => {}
        }
        if !launch.command.is_empty() {
            launch.source = "updraft.yaml".into();
            return Ok(launch);
        }
    }
    if let Some(text) = files.read("Procfile") {
        if let Some(line) = procfile_web(&text) {
            launch.command = shell(&line);
            launch.source = "Procfile".into();
            return Ok(launch);
        }
    }
    let root = files.root_files();
    let jars: Vec<&String> = root.iter().filter(|f| f.ends_with(".jar")).collect();
    if jars.len() == 1 {
        launch.command = vec!["java".into(), "-jar".into(), jars[0].clone()];
        launch.source = jars[0].clone();
        return Ok(launch);
    }
    if let Some(text) = files.read("package.json") {
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| FieldError::new("package.json", format!("is not valid JSON: {e}")))?;
        if json.pointer("/scripts/start").and_then(|s| s.as_str()).is_some() {
            launch.command = vec!["npm".into(), "start".into()];
            launch.source = "package.json scripts.start".into();
            return Ok(launch);
        }
        if let Some(main) = json.get("main").and_then(|m| m.as_str()) {
            launch.command = vec!["node".into(), main.into()];
            launch.source = "package.json main".into();
            return Ok(launch);
        }
    }
    for script in ["main.py", "app.py"] {
        if root.iter().any(|f| f == script) {
            launch.command = vec!["python3".into(), script.into()];
            launch.source = script.into();
            return Ok(launch);
        }
    }
    if root.iter().any(|f| f == "go.mod") {
        launch.command = vec![format!("./{GO_PROGRAM}")];
        launch.source = "go.mod (go build)".into();
        launch.build.get_or_insert_with(|| go_build(files.has_dir("vendor")));
        return Ok(launch);
    }
    if root.iter().any(|f| f == "Dockerfile" || f == "Containerfile") {
        return Err(FieldError::new(
            "package",
            "holds only a Dockerfile, which Updraft does not build: build the image \
             (docker build, buildah or kaniko), push it, and deploy it with \
             `updraft deploy NAME --image IMAGE`; or add what starts the app (updraft.yaml `run:`, a Procfile)",
        ));
    }
    let jar_note = if jars.len() > 1 {
        format!(" (found {} jars; name one in updraft.yaml)", jars.len())
    } else {
        String::new()
    };
    Err(FieldError::new(
        "package",
        format!("no command found{jar_note}; looked for {LOOKED_FOR}"),
    ))
}

fn shell(line: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), line.trim().to_string()]
}

fn procfile_web(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (kind, command) = line.split_once(':')?;
        (kind.trim() == "web" && !command.trim().is_empty()).then(|| command.trim().to_string())
    })
}

/// A package's top level in a test: names and contents, `/` marking a folder.
#[cfg(test)]
pub(crate) struct Files(pub Vec<(&'static str, &'static str)>);

#[cfg(test)]
impl PackageFiles for Files {
    fn root_files(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, c)| *c != "/")
            .map(|(n, _)| n.to_string())
            .collect()
    }
    fn read(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, c)| *n == name && *c != "/")
            .map(|(_, c)| c.to_string())
    }
    fn has_dir(&self, name: &str) -> bool {
        self.0.iter().any(|(n, c)| *n == name && *c == "/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect_in(files: Vec<(&'static str, &'static str)>) -> Result<Launch, FieldError> {
        detect(&Files(files))
    }

    #[test]
    fn updraft_yaml_comes_first_and_sets_limits() {
        let launch = detect_in(vec![
            (
                "updraft.yaml",
                "run: ./server --fast\nenv:\n  MODE: prod\nmemory: 64Mi\ncpu: 250m\n",
            ),
            ("Procfile", "web: python3 other.py"),
            ("main.py", ""),
        ])
        .unwrap();
        assert_eq!(launch.command, ["/bin/sh", "-c", "./server --fast"]);
        assert_eq!(launch.source, "updraft.yaml");
        assert_eq!(launch.env["MODE"], "prod");
        assert_eq!(launch.memory_bytes, Some(64 << 20));
        assert_eq!(launch.cpu_millis, Some(250));
    }

    #[test]
    fn updraft_yaml_run_may_be_argv_or_absent() {
        let launch = detect_in(vec![("updraft.yaml", "run: [./bin, --port, '1']")]).unwrap();
        assert_eq!(launch.command, ["./bin", "--port", "1"]);
        let launch = detect_in(vec![("updraft.yaml", "memory: 32Mi"), ("app.py", "")]).unwrap();
        assert_eq!(launch.command, ["python3", "app.py"]);
        assert_eq!(launch.memory_bytes, Some(32 << 20));
    }

    #[test]
    fn updraft_yaml_errors_name_the_field() {
        let err = detect_in(vec![("updraft.yaml", "run: x\nreplicas: 2\n")]).unwrap_err();
        assert_eq!(err.field, "updraft.yaml");
        assert!(err.message.contains("replicas"), "{}", err.message);
        let err = detect_in(vec![("updraft.yaml", "run: x\nmemory: lots\n")]).unwrap_err();
        assert_eq!(err.field, "updraft.yaml: memory");
        let err = detect_in(vec![("updraft.yaml", "run: ''\n")]).unwrap_err();
        assert_eq!(err.field, "updraft.yaml: run");
        let err = detect_in(vec![("updraft.yaml", "run: x\nbuild: ' '\n")]).unwrap_err();
        assert_eq!(err.field, "updraft.yaml: build");
    }

    #[test]
    fn updraft_yaml_build_is_kept_beside_any_command() {
        let launch = detect_in(vec![("updraft.yaml", "build: make site\n"), ("main.py", "")]).unwrap();
        assert_eq!(launch.build.as_deref(), Some("make site"));
        assert_eq!(launch.command, ["python3", "main.py"]);
    }

    #[test]
    fn a_go_module_is_built_with_no_module_proxy_and_its_program_run() {
        let launch = detect_in(vec![("go.mod", "module example.com/hello\n"), ("main.go", "")]).unwrap();
        assert_eq!(launch.command, [format!("./{GO_PROGRAM}")]);
        let build = launch.build.unwrap();
        assert!(
            build.starts_with("GOPROXY=off") && !build.contains("-mod=vendor"),
            "{build}"
        );
        let vendored = detect_in(vec![("go.mod", ""), ("vendor", "/")]).unwrap();
        assert!(vendored.build.unwrap().contains("-mod=vendor"));
        let own = detect_in(vec![("go.mod", ""), ("updraft.yaml", "build: make\n")]).unwrap();
        assert_eq!(own.build.as_deref(), Some("make"), "a build: line is the user's");
    }

    #[test]
    fn a_dockerfile_alone_is_refused_with_the_image_way() {
        let err = detect_in(vec![("Dockerfile", "FROM debian"), ("README.md", "")]).unwrap_err();
        assert_eq!(err.field, "package");
        assert!(err.message.contains("--image"), "{}", err.message);
        let launch = detect_in(vec![("Dockerfile", "FROM debian"), ("app.py", "")]).unwrap();
        assert_eq!(launch.command, ["python3", "app.py"]);
    }

    #[test]
    fn procfile_web_line() {
        let launch = detect_in(vec![("Procfile", "worker: x\nweb: gunicorn app\n")]).unwrap();
        assert_eq!(launch.command, ["/bin/sh", "-c", "gunicorn app"]);
        assert_eq!(launch.source, "Procfile");
    }

    #[test]
    fn single_jar_then_node_then_python() {
        let launch = detect_in(vec![("app.jar", ""), ("main.py", "")]).unwrap();
        assert_eq!(launch.command, ["java", "-jar", "app.jar"]);
        let launch = detect_in(vec![("package.json", r#"{"scripts":{"start":"node s.js"}}"#)]).unwrap();
        assert_eq!(launch.command, ["npm", "start"]);
        let launch = detect_in(vec![("package.json", r#"{"main":"server.js"}"#)]).unwrap();
        assert_eq!(launch.command, ["node", "server.js"]);
        let launch = detect_in(vec![("main.py", ""), ("app.py", "")]).unwrap();
        assert_eq!(launch.command, ["python3", "main.py"]);
    }

    #[test]
    fn nothing_detected_lists_what_was_looked_for() {
        let err = detect_in(vec![("README.md", "hi"), ("a.jar", ""), ("b.jar", "")]).unwrap_err();
        assert_eq!(err.field, "package");
        assert!(err.message.contains("found 2 jars"));
        assert!(err.message.contains("Procfile"));
        assert!(err.message.contains("main.py or app.py"));
    }
}
