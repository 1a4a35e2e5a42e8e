//! `examples`: deploy-to-ready time of the README's kinds of app, each deployed cold
//! (its dependencies built) and again with its source changed (the layer reused),
//! against installing the same dependencies by hand in the same run (pip, npm, go).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::apps::run_tool;
use crate::harness::Server;

const PLAIN: &str = r#"import os
from http.server import HTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"VERSION")
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const FLASK: &str = r#"import os
from flask import Flask
app = Flask(__name__)
@app.get("/")
def index():
    return "VERSION"
app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
"#;

const EXPRESS: &str = r#"const express = require("express");
const app = express();
app.get("/", (req, res) => res.send("VERSION"));
app.listen(Number(process.env.PORT), "127.0.0.1");
"#;

const GO: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "VERSION") })
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
"#;

/// A gRPC server without generated code: a generic handler over raw bytes.
const GRPC: &str = r#"import os
from concurrent import futures
import grpc
def hello(request, context):
    return b"VERSION"
handler = grpc.method_handlers_generic_handler("bench.Greeter", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
server.start()
server.wait_for_termination()
"#;

/// Installing `requirements.txt` as the build does, with the server's interpreter.
const PIP_INSTALL: &[&str] = &[
    "/usr/bin/python3",
    "-m",
    "pip",
    "install",
    "-q",
    "--root-user-action=ignore",
    "--target",
    "bare",
    "-r",
    "requirements.txt",
];

struct Example {
    name: &'static str,
    /// `VERSION` in them is replaced, so a second deploy changes the source alone.
    files: Vec<(&'static str, &'static str)>,
    extra: &'static [&'static str],
    /// Installing the dependencies by hand, in the app's folder; none for no build.
    bare: Option<Vec<&'static str>>,
}

fn examples() -> Vec<Example> {
    vec![
        Example {
            name: "python http.server",
            files: vec![("main.py", PLAIN)],
            extra: &[],
            bare: None,
        },
        Example {
            name: "flask (requirements.txt)",
            files: vec![("main.py", FLASK), ("requirements.txt", "flask==3.0.3\n")],
            extra: &[],
            bare: Some(PIP_INSTALL.to_vec()),
        },
        Example {
            name: "express (package.json)",
            files: vec![
                ("server.js", EXPRESS),
                (
                    "package.json",
                    r#"{"main": "server.js", "dependencies": {"express": "4.21.2"}}"#,
                ),
            ],
            extra: &[],
            bare: Some(vec![
                "npm",
                "install",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--silent",
            ]),
        },
        Example {
            name: "go module",
            files: vec![("main.go", GO), ("go.mod", "module example.com/hello\n\ngo 1.19\n")],
            extra: &[],
            bare: Some(vec!["go", "build", "-o", "bare-app", "."]),
        },
        Example {
            name: "grpc (grpcio, h2c)",
            files: vec![("main.py", GRPC), ("requirements.txt", "grpcio==1.68.1\n")],
            extra: &["--protocol", "h2c"],
            bare: Some(PIP_INSTALL.to_vec()),
        },
    ]
}

#[derive(Serialize)]
struct Row {
    app: String,
    /// Deploy to ready, dependencies built.
    cold_ms: f64,
    /// Deploy to ready of a changed source over the same dependencies.
    cached_ms: f64,
    /// Installing the dependencies by hand (none for an app without any).
    bare_install_ms: Option<f64>,
}

fn write_app(dir: &Path, example: &Example, version: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in &example.files {
        std::fs::write(dir.join(name), text.replace("VERSION", version))?;
    }
    Ok(())
}

fn deploy_ms(server: &Server, updraft: &Path, name: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<f64> {
    let mut args = vec!["deploy", name, dir.to_str().context("path")?];
    args.extend(extra);
    let start = Instant::now();
    server.cli(updraft, &args)?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub fn run(updraft: &Path, out: &Path) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let server = Server::start(updraft)?;
    println!(
        "{:<28} {:>12} {:>12} {:>16} {:>12}",
        "app", "cold ms", "cached ms", "bare install ms", "cold/bare"
    );
    let mut rows = Vec::new();
    for (i, example) in examples().iter().enumerate() {
        let name = format!("app{i}");
        let dir = work.path().join(&name);
        write_app(&dir, example, "one")?;
        let cold = deploy_ms(&server, updraft, &name, &dir, example.extra)?;
        write_app(&dir, example, "two")?;
        let cached = deploy_ms(&server, updraft, &name, &dir, example.extra)?;
        let bare = match &example.bare {
            None => None,
            Some(command) => {
                let by_hand = work.path().join(format!("{name}-by-hand"));
                write_app(&by_hand, example, "one")?;
                let start = Instant::now();
                run_tool(Command::new(command[0]).args(&command[1..]).current_dir(&by_hand))?;
                Some(start.elapsed().as_secs_f64() * 1000.0)
            }
        };
        let ratio = bare.map_or("-".to_string(), |b| format!("{:.2}", cold / b));
        let bare_text = bare.map_or("-".to_string(), |b| format!("{b:.0}"));
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>16} {:>12}",
            example.name, cold, cached, bare_text, ratio
        );
        rows.push(Row {
            app: example.name.into(),
            cold_ms: cold,
            cached_ms: cached,
            bare_install_ms: bare,
        });
    }
    drop(server);
    std::fs::create_dir_all(out)?;
    let path = out.join("examples.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
