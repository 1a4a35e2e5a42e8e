//! The apps both sides of a benchmark run: the test fixtures, built where needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

pub struct App {
    pub dir: PathBuf,
    /// The command a user would run by hand, relative to `dir`.
    pub command: Vec<String>,
}

pub fn run_tool(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("{cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Builds the app of `kind` from the test fixtures into `work`.
pub fn build(kind: &str, work: &Path) -> anyhow::Result<App> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/cli/tests/fixtures");
    let dir = work.join(kind);
    std::fs::create_dir_all(&dir)?;
    let command: Vec<&str> = match kind {
        "python" => {
            std::fs::copy(fixtures.join("python/main.py"), dir.join("main.py"))?;
            vec!["python3", "main.py"]
        }
        "node" => {
            std::fs::copy(fixtures.join("node/server.js"), dir.join("server.js"))?;
            std::fs::write(dir.join("package.json"), r#"{"main": "server.js"}"#)?;
            vec!["node", "server.js"]
        }
        "java" => {
            let classes = work.join("java-classes");
            run_tool(
                Command::new("javac")
                    .arg("-d")
                    .arg(&classes)
                    .arg(fixtures.join("java/Hello.java")),
            )?;
            run_tool(
                Command::new("jar")
                    .args(["--create", "--file"])
                    .arg(dir.join("app.jar"))
                    .args(["--main-class", "Hello", "-C"])
                    .arg(&classes)
                    .arg("."),
            )?;
            vec!["java", "-jar", "app.jar"]
        }
        "static" => {
            run_tool(
                Command::new("gcc")
                    .args(["-static", "-O2", "-o"])
                    .arg(dir.join("server"))
                    .arg(fixtures.join("static/server.c")),
            )?;
            std::fs::write(dir.join("updraft.yaml"), "run: [./server]\n")?;
            vec!["./server"]
        }
        other => bail!("unknown app kind {other:?}; use python, node, java or static"),
    };
    Ok(App {
        dir,
        command: command.into_iter().map(String::from).collect(),
    })
}
