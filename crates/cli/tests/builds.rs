//! Builds from source against the real server: a Flask app and an Express app with no
//! vendored dependencies get them installed (pip, npm) into a cached layer, confined as
//! their namespace; `updraft.yaml`'s `build:` runs; a failing build fails the deploy
//! with its last lines and changes nothing; ignore files keep what the app does not
//! need out of the package; a Dockerfile alone is refused with the image way.

mod common;

use std::time::Instant;

use common::*;

const FLASK_APP: &str = r#"
import os
from importlib.metadata import version
from flask import Flask

app = Flask(__name__)

@app.get("/")
def index():
    return f"flask {version('flask')} as uid {os.getuid()}"

@app.get("/file/<path:name>")
def file(name):
    return open(name).read() if os.path.exists(name) else ("absent", 404)

app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
"#;

const EXPRESS_APP: &str = r#"
const express = require("express");
const app = express();
app.get("/", (req, res) => res.send("express " + require("express/package.json").version));
app.listen(Number(process.env.PORT), "127.0.0.1");
"#;

const PLAIN_APP: &str = r#"
import os
from http.server import HTTPServer, BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"one")

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn build_log(server: &Server, service: &str) -> String {
    let out = server.cli(&["logs", service, "--build"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

#[test]
fn a_flask_app_gets_its_requirements_installed_once_and_reused() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[
        ("main.py", FLASK_APP),
        ("requirements.txt", "flask==3.0.3\n"),
        ("updraft.yaml", "build: echo made at build > generated.txt\n"),
        (".updraftignore", "*.secret\n"),
        ("local.secret", "not for the server"),
        (".env", "TOKEN=local"),
    ]);
    let started = Instant::now();
    let out = server.cli(&["deploy", "web", app.to_str().unwrap(), "--verbose"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());
    eprintln!("cold build and deploy: {:?}", started.elapsed());
    assert!(
        out.stderr.contains("left out .env") && out.stderr.contains("left out local.secret"),
        "{}",
        out.stderr
    );

    let r = server.get("web", "/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("flask 3.0.3 as uid "), "{}", r.body);
    assert_ne!(r.body, "flask 3.0.3 as uid 0", "the app runs as its namespace's uid");
    assert_eq!(server.get("web", "/file/generated.txt").body, "made at build\n");
    assert_eq!(server.get("web", "/file/local.secret").status, 404);
    assert_eq!(server.get("web", "/file/.env").status, 404);
    let log = build_log(&server, "web");
    assert!(log.contains("pip install of requirements.txt: building layer"), "{log}");
    assert!(log.contains("Successfully installed"), "{log}");
    assert!(log.contains("running the build command"), "{log}");
    let instance_log = server.cli(&["logs", "web"]).stdout;
    assert!(!instance_log.contains("Successfully installed"), "{instance_log}");

    // The same requirements again: the layer is reused, not reinstalled.
    let started = Instant::now();
    server.json(&["update", "web", "--env", "AGAIN=1"]);
    eprintln!("second deploy, cached layer: {:?}", started.elapsed());
    assert!(build_log(&server, "web").contains("cached layer"));
    assert!(server.get("web", "/").body.starts_with("flask 3.0.3"));
    let layers = std::fs::read_dir(server.data.join("layers/default")).unwrap().count();
    assert_eq!(layers, 1, "one layer for both revisions");

    // A function of the namespace imports the same layer.
    let (_fdir, function) = app_of(&[
        (
            "handler.py",
            "from importlib.metadata import version\nimport flask\ndef handle(request):\n    return 'fn with flask ' + version('flask')\n",
        ),
        ("requirements.txt", "flask==3.0.3\n"),
    ]);
    server.json(&[
        "deploy",
        "fn",
        "--function",
        function.to_str().unwrap(),
        "--runtime",
        "python3",
    ]);
    let r = server.get("fn", "/");
    assert_eq!(r.body, "fn with flask 3.0.3", "{}", server.cli(&["logs", "fn"]).stdout);
}

#[test]
fn an_express_app_gets_its_dependencies_from_npm() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[
        ("server.js", EXPRESS_APP),
        (
            "package.json",
            r#"{"name": "hello", "main": "server.js", "dependencies": {"express": "4.21.2"}}"#,
        ),
    ]);
    let started = Instant::now();
    let out = server.cli(&["deploy", "api", app.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());
    eprintln!("express cold build and deploy: {:?}", started.elapsed());
    let r = server.get("api", "/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "express 4.21.2");
    assert!(build_log(&server, "api").contains("npm install --omit=dev (package.json): building layer"));
}

#[test]
fn a_failed_build_fails_the_deploy_with_its_last_lines_and_changes_nothing() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[
        ("main.py", FLASK_APP),
        ("requirements.txt", "updraft-no-such-distribution-anywhere==9.9.9\n"),
    ]);
    let out = server.cli(&["deploy", "broken", app.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("dependencies"), "{}", out.stderr);
    assert!(out.stderr.contains("the build failed"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("No matching distribution found for updraft-no-such-distribution-anywhere"),
        "{}",
        out.stderr
    );
    assert_eq!(server.cli(&["service", "broken"]).code, 3, "no service was made");
    let layers = server.data.join("layers/default");
    assert_eq!(
        std::fs::read_dir(&layers).map_or(0, |d| d.count()),
        0,
        "no layer is left behind"
    );

    // A failing build command fails an update the same way; the service keeps its
    // revision.
    let (_ok_dir, ok) = app_of(&[("main.py", PLAIN_APP)]);
    let (_bad_dir, bad) = app_of(&[
        ("main.py", PLAIN_APP),
        ("updraft.yaml", "build: echo compiling; exit 3\n"),
    ]);
    server.deploy("svc", &ok, &[]);
    let out = server.cli(&["deploy", "svc", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("the build failed (exit status: 3)") && out.stderr.contains("compiling"),
        "{}",
        out.stderr
    );
    assert_eq!(server.get("svc", "/").body, "one");
    assert_eq!(
        server.json(&["service", "svc"])["revisions"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn a_dockerfile_alone_is_refused_with_the_way_to_deploy_an_image() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[("Dockerfile", "FROM python:3\nCMD python3 -m http.server\n")]);
    let out = server.cli(&["deploy", "docker", app.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("Dockerfile") && out.stderr.contains("--image"),
        "{}",
        out.stderr
    );
}

#[test]
fn builds_are_held_to_their_memory_and_may_be_kept_off_the_network() {
    let server = Server::start(&["--build-network", "off", "--build-memory", "64Mi"]);
    let (_dir, app) = app_of(&[("main.py", FLASK_APP), ("requirements.txt", "flask==3.0.3\n")]);
    let out = server.cli(&["deploy", "offline", app.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no network") && out.stderr.contains("--build-network off"),
        "{}",
        out.stderr
    );

    let (_hog_dir, hog) = app_of(&[
        ("main.py", PLAIN_APP),
        (
            "updraft.yaml",
            "build: python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'\n",
        ),
    ]);
    let out = server.cli(&["deploy", "hog", hog.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("killed") && out.stderr.contains("--build-memory"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("no network"), "{}", out.stderr);
    assert!(!out.stderr.contains("536870912"), "{}", out.stderr);
}

#[test]
fn a_deploys_steps_are_shown_as_they_happen() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[("main.py", FLASK_APP), ("requirements.txt", "flask==3.0.3\n")]);
    let out = server.cli(&["deploy", "web", app.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let service: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(service["latest_revision"], "web-00001", "stdout keeps the result");
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let phases: Vec<&str> = events.iter().map(|e| e["phase"].as_str().unwrap()).collect();
    let first = |phase: &str| {
        phases
            .iter()
            .position(|p| *p == phase)
            .unwrap_or_else(|| panic!("no {phase} in {phases:?}"))
    };
    assert!(first("build") < first("output"), "{phases:?}");
    assert!(
        first("output") < first("start") && first("start") < first("ready"),
        "{phases:?}"
    );
    assert_eq!(phases.last(), Some(&"done"));
    assert!(
        events
            .iter()
            .any(|e| e["phase"] == "output" && e["detail"].as_str().unwrap().contains("Successfully installed")),
        "the build's output comes along"
    );
    let times: Vec<f64> = events.iter().map(|e| e["elapsed_ms"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Without -o: one line per step, the build's own lines only with -v.
    let component = wasm_component(server.dir.path());
    let out = server.cli(&["deploy", "fn", "--wasm", component.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("compile: compiling the component"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ready: fn-00001 is ready"), "{}", out.stderr);
    let out = server.cli(&["deploy", "web", app.to_str().unwrap(), "-v"]);
    assert!(
        out.stderr
            .contains("output: pip install of requirements.txt: cached layer"),
        "{}",
        out.stderr
    );

    // A deploy that fails on its way ends its steps with the error, and exits as it
    // always did; one refused at once is refused before any step.
    let (_bad_dir, bad) = app_of(&[
        ("main.py", FLASK_APP),
        ("requirements.txt", "updraft-no-such-thing==1\n"),
    ]);
    let out = server.cli(&["deploy", "web", bad.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let last = out
        .stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("{}", out.stderr));
    assert_eq!(last["phase"], "failed", "{}", out.stderr);
    assert_eq!(last["error"]["code"], 400);
    assert_eq!(last["error"]["field"], "dependencies");
    let out = server.cli(&[
        "deploy",
        "web",
        app.to_str().unwrap(),
        "--start-timeout",
        "soon",
        "-o",
        "json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stderr.contains("\"phase\""), "{}", out.stderr);
    assert!(out.stderr.contains("progress-deadline"), "{}", out.stderr);
}

const GO_APP: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from go")
	})
	http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
"#;

#[test]
fn a_go_module_is_built_from_source_without_the_module_proxy() {
    let server = Server::start(&[]);
    let (_dir, app) = app_of(&[("go.mod", "module example.com/hello\n\ngo 1.19\n"), ("main.go", GO_APP)]);
    let started = Instant::now();
    let out = server.cli(&["deploy", "gohello", app.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());
    eprintln!("go build and deploy: {:?}", started.elapsed());
    assert_eq!(server.get("gohello", "/").body, "hello from go");
    assert_eq!(
        server.json(&["service", "gohello"])["revisions"][0]["command_source"],
        "go.mod (go build)"
    );
    // Go's compile cache is kept for the namespace's next build, its alone.
    let cache = server.data.join("build-cache/default");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    let instance_uid = {
        let pid = instance_pids(&server.json(&["service", "gohello"]))[0];
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(format!("/proc/{pid}")).unwrap())
    };
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        instance_uid,
        "owned by the namespace's uid"
    );
    assert!(
        std::fs::read_dir(cache.join("go")).map(|d| d.count()).unwrap_or(0) > 0,
        "the build filled GOCACHE"
    );

    // Vendored modules are built from vendor/.
    let (_vendored_dir, vendored) = app_of(&[
        (
            "go.mod",
            "module example.com/app\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n",
        ),
        (
            "main.go",
            &GO_APP
                .replace("\"os\"", "\"os\"\n\n\t\"example.com/greet\"")
                .replace("\"hello from go\"", "greet.Hello()"),
        ),
    ]);
    let module = vendored.join("vendor/example.com/greet");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(
        module.join("greet.go"),
        "package greet\n\nfunc Hello() string { return \"vendored hello\" }\n",
    )
    .unwrap();
    std::fs::write(
        vendored.join("vendor/modules.txt"),
        "# example.com/greet v1.0.0\n## explicit\nexample.com/greet\n",
    )
    .unwrap();
    server.deploy("vendored", &vendored, &[]);
    assert_eq!(server.get("vendored", "/").body, "vendored hello");

    // A module it would have to fetch is not fetched: the build says what is missing.
    let (_needs_dir, needs) = app_of(&[
        (
            "go.mod",
            "module example.com/needs\n\ngo 1.19\n\nrequire github.com/google/uuid v1.6.0\n",
        ),
        (
            "main.go",
            "package main\n\nimport \"github.com/google/uuid\"\n\nfunc main() { println(uuid.NewString()) }\n",
        ),
    ]);
    let out = server.cli(&["deploy", "needs", needs.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("the build failed")
            && out.stderr.contains("github.com/google/uuid")
            && out.stderr.contains("go mod vendor"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unconfined_build_keeps_its_home_out_of_the_package() {
    let server = Server::start(&["--sandbox", "off"]);
    let (_dir, app) = app_of(&[
        ("main.py", FLASK_APP),
        ("requirements.txt", "flask==3.0.3\n"),
        ("updraft.yaml", "build: echo \"$HOME\" > home.txt\n"),
    ]);
    std::fs::create_dir(app.join(".home")).unwrap();
    std::fs::write(app.join(".home/keep.txt"), "the app's own").unwrap();
    server.deploy("web", &app, &[]);
    assert_eq!(server.get("web", "/file/.home/keep.txt").body, "the app's own");
    let home = server.get("web", "/file/home.txt").body;
    let tmp = server.data.join("tmp");
    assert!(home.starts_with(tmp.to_str().unwrap()), "{home}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the build's home is gone");
}
