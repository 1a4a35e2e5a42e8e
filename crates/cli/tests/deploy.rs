//! Deploying code packages of every detected kind and reaching them through the gateway.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn python_package_runs_scales_to_zero_and_cold_starts_again() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    let deployed = server.deploy(
        "hello",
        &app,
        &[
            "--memory",
            "64Mi",
            "--cpu",
            "0.5",
            "--scale-to-zero-after",
            "2s",
            "--env",
            "GREETING=hi",
        ],
    );
    assert_eq!(deployed["latest_revision"], "hello-00001");
    assert_eq!(
        deployed["url"],
        format!("http://hello.default.localhost:{}", server.gateway.port())
    );

    let r = server.get("hello", "/some/path?q=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "python hello-00001 /some/path?q=1");
    assert_eq!(server.get("hello", "/env/GREETING").body, "hi");
    assert_eq!(server.get("hello", "/env/UPDRAFT_NAMESPACE").body, "default");
    assert_eq!(server.get("hello", "/env/K_SERVICE").body, "hello");

    let headers: std::collections::HashMap<String, String> =
        serde_json::from_str(&server.get("hello", "/headers").body).unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("X-Forwarded-For"), Some("127.0.0.1"));
    assert_eq!(header("X-Forwarded-Host"), Some("hello.default.localhost"));
    assert_eq!(header("X-Forwarded-Proto"), Some("http"));

    // The instance runs in its own cgroup with the revision's memory limit.
    let service = server.json(&["service", "hello"]);
    let revision = &service["revisions"][0];
    assert_eq!(revision["command"], serde_json::json!(["python3", "main.py"]));
    assert_eq!(revision["memory"], "64Mi");
    let instance = &revision["instances"][0];
    assert_eq!(instance["state"], "ready");
    let cgroup = &instance["cgroup"];
    assert_eq!(cgroup["memory_limit"], (64u64 << 20).to_string(), "{service}");
    let pid = instance["pid"].as_u64().unwrap();
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(membership.contains(instance["id"].as_str().unwrap()), "{membership}");

    // Streaming responses arrive as the app writes them.
    assert_eq!(server.get("hello", "/stream").body, "part0\npart1\npart2\n");

    // Invoke goes through the same gateway path.
    let out = server.cli(&[
        "invoke",
        "hello",
        "--path",
        "/x",
        "--method",
        "POST",
        "--data",
        r#"{"a":1}"#,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, r#"echo POST /x {"a":1}"#);

    let service = server.wait_service("hello", "scale to zero", Duration::from_secs(20), |s| {
        ready(s) == 0 && instance_pids(s).is_empty()
    });
    assert_eq!(service["last_cold_start"]["cause"], "deploy");
    assert!(
        wait_dead(&[pid as u32], Duration::from_secs(5)),
        "stopped instance still running"
    );

    // A burst at zero: every request is held and answered, none dropped.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let gateway = server.gateway;
            std::thread::spawn(move || {
                http(gateway, "GET", &Server::host("hello"), &format!("/b{i}"), &[], b"").unwrap()
            })
        })
        .collect();
    for (i, handle) in burst.into_iter().enumerate() {
        let r = handle.join().unwrap();
        assert_eq!((r.status, r.body), (200, format!("python hello-00001 /b{i}")));
    }
    let service = server.json(&["service", "hello"]);
    assert_eq!(service["last_cold_start"]["cause"], "request");
    assert_eq!(ready(&service), 1, "one instance serves the burst: {service}");

    let logs = server.cli(&["logs", "hello"]);
    assert!(logs.stdout.contains("stdout python listening on"), "{}", logs.stdout);
    assert!(logs.stdout.contains("stderr request \"GET /b0"), "{}", logs.stdout);
    let tail = server.json(&["logs", "hello", "--tail", "1"]);
    assert_eq!(tail.as_array().unwrap().len(), 1);

    let out = server.cli(&["delete", "hello"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.get("hello", "/").status, 404);
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
    assert!(!server.data.join("revisions/default/hello-00001").exists());
    assert_eq!(server.cli(&["service", "hello"]).code, 3);
}

#[test]
fn node_package_starts_with_npm_start() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("node");
    server.deploy("web", &app, &["--env", "GREETING=hey"]);
    let r = server.get("web", "/n");
    assert_eq!((r.status, r.body.as_str()), (200, "node web-00001 /n greeting=hey"));
    let service = server.json(&["service", "web"]);
    assert_eq!(service["revisions"][0]["command"], serde_json::json!(["npm", "start"]));

    // A second deploy is a new revision; the gateway moves to it.
    server.deploy("web", &app, &["--env", "GREETING=again"]);
    assert_eq!(server.get("web", "/n").body, "node web-00002 /n greeting=again");
    let services = server.json(&["services"]);
    assert_eq!(services[0]["latest_revision"], "web-00002");
}

#[test]
fn java_jar_is_detected_and_run() {
    let server = Server::start(&[]);
    let (_tmp, app) = java_app();
    let out = server.cli(&["deploy", "jhello", app.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("URL: http://jhello.default.localhost"),
        "{}",
        out.stdout
    );
    let r = server.get("jhello", "/j");
    assert_eq!((r.status, r.body.as_str()), (200, "java jhello-00001 /j"));
    let service = server.json(&["service", "jhello"]);
    assert_eq!(
        service["revisions"][0]["command"],
        serde_json::json!(["java", "-jar", "app.jar"])
    );
}

#[test]
fn static_binary_runs_from_updraft_yaml_with_its_limits() {
    let server = Server::start(&[]);
    let (_tmp, app) = static_app();
    server.deploy("bin", &app, &[]);
    assert_eq!(server.get("bin", "/").body, "static bin-00001");
    let revision = &server.json(&["service", "bin"])["revisions"][0];
    assert_eq!(revision["command_source"], "updraft.yaml");
    assert_eq!(revision["memory"], "32Mi");
    assert_eq!(revision["cpu"], "250m");
    assert_eq!(
        revision["instances"][0]["cgroup"]["memory_limit"],
        (32u64 << 20).to_string()
    );
}

#[test]
fn archives_and_procfiles_deploy_too() {
    let server = Server::start(&[]);
    let (tmp, app) = fixture("python");
    std::fs::write(app.join("Procfile"), "web: python3 main.py --from-procfile\n").unwrap();

    let zip_path = tmp.path().join("app.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    zip.start_file("main.py", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut zip, &std::fs::read(app.join("main.py")).unwrap()).unwrap();
    zip.finish().unwrap();
    server.deploy("zipped", &zip_path, &[]);
    assert_eq!(server.get("zipped", "/").body, "python zipped-00001 /");

    let tgz_path = tmp.path().join("app.tar.gz");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tgz_path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(".", &app).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    server.deploy("tarred", &tgz_path, &[]);
    assert_eq!(server.get("tarred", "/").body, "python tarred-00001 /");
    let revision = &server.json(&["service", "tarred"])["revisions"][0];
    assert_eq!(revision["command_source"], "Procfile");

    let out = server.cli(&["namespace", "create", "team-a"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    server.deploy("zipped", &zip_path, &["-n", "team-a"]);
    let r = server.request("GET", "zipped.team-a.localhost", "/", &[], b"").unwrap();
    assert_eq!(r.body, "python zipped-00001 /");
    assert_eq!(server.json(&["services", "-n", "team-a"]).as_array().unwrap().len(), 1);
}

#[test]
fn a_redeploy_keeps_the_settings_it_does_not_change() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy(
        "kept",
        &app,
        &[
            "--env",
            "GREETING=hi",
            "--env",
            "OTHER=x",
            "--min-scale",
            "1",
            "--memory",
            "256Mi",
        ],
    );
    server.deploy("kept", &app, &[]);
    let service = server.json(&["service", "kept"]);
    let latest = service["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "kept-00002")
        .unwrap()
        .clone();
    assert_eq!(latest["env"]["GREETING"], "hi", "{latest}");
    assert_eq!(latest["memory"], "256Mi");
    assert_eq!(latest["annotations"]["autoscaling.knative.dev/min-scale"], "1");
    assert_eq!(server.get("kept", "/env/GREETING").body, "hi");

    // KEY- removes one; what is shown says so.
    server.deploy("kept", &app, &["--env", "GREETING-", "--cpu", "0.5"]);
    assert_eq!(server.get("kept", "/env/GREETING").body, "");
    let described = server.cli(&["service", "kept"]).stdout;
    let third = described.split("kept-00003 (").nth(1).unwrap();
    assert!(third.contains("limits:   memory 256Mi, cpu 500m"), "{described}");
    assert!(third.contains("env:      OTHER\n"), "{described}");
    assert!(third.contains("scaling:  min-scale 1"), "{described}");
    let out = server.cli(&["deploy", "kept", app.to_str().unwrap(), "--env", "NEVER-"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("env_remove.NEVER: is not set on the latest revision"),
        "{}",
        out.stderr
    );
}
