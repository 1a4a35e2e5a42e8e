//! Instances are confined: a tenant's code tries the escapes an attacker would, and
//! every one is refused, while what an app needs still works.

mod common;

use common::*;

fn ask(server: &Server, host: &str) -> serde_json::Value {
    let r = http(server.gateway, "GET", host, "/", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log());
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn a_package_that_tries_every_escape_is_refused_each_time() {
    let server = Server::start(&[]);
    for ns in ["other", "team"] {
        server.json(&["namespace", "create", ns]);
    }
    let (_victim_dir, victim) = fixture("python");
    let service = server.json(&[
        "deploy",
        "victim",
        victim.to_str().unwrap(),
        "-n",
        "other",
        "--env",
        "VICTIM_SECRET=hunter2",
        "--min-scale",
        "1",
    ]);
    let instance = &service["revisions"][0]["instances"][0];
    let victim_pid = instance["pid"].as_u64().unwrap();
    let victim_port = instance["port"].as_u64().unwrap();
    server.json(&["deploy", "hidden", victim.to_str().unwrap(), "-n", "other", "--private"]);
    server.deploy("open", &victim, &[]);
    // Registry credentials, as a pull from a private registry leaves them.
    let images = server.data.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("auth.sealed"), b"sealed").unwrap();

    let data = std::fs::canonicalize(&server.data).unwrap();
    let env = [
        format!("DATA_DIR={}", data.display()),
        format!("VICTIM_PID={victim_pid}"),
        format!("VICTIM_PORT={victim_port}"),
        format!("API_PORT={}", server.api_addr().port()),
        format!("GATEWAY_PORT={}", server.gateway.port()),
        "PRIVATE_HOST=hidden.other.localhost".to_string(),
        "PUBLIC_HOST=open.default.localhost".to_string(),
    ];
    let (_probe_dir, probe) = fixture("escape");
    let mut args = vec!["deploy", "probe", probe.to_str().unwrap(), "-n", "team"];
    for pair in &env {
        args.extend(["--env", pair.as_str()]);
    }
    server.json(&args);

    let report = ask(&server, "probe.team.localhost");
    let attempts = report["attempts"].as_object().unwrap();
    assert_eq!(attempts.len(), 21, "{report:#}");
    // Refused by the system, not failed by a bug in the probe (a NameError, say).
    let refusals = [
        "refused: PermissionError",
        "refused: OSError",
        "refused: FileNotFoundError",
        "refused: ProcessLookupError",
        "refused: ConnectionRefusedError",
    ];
    let escaped: Vec<String> = attempts
        .iter()
        .filter(|(_, outcome)| !refusals.iter().any(|r| outcome.as_str().unwrap().starts_with(r)))
        .map(|(name, outcome)| format!("{name}: {outcome}"))
        .collect();
    assert!(escaped.is_empty(), "escapes that worked:\n{}", escaped.join("\n"));
    for (name, outcome) in report["controls"].as_object().unwrap() {
        assert!(outcome.as_str().unwrap().starts_with("DONE"), "{name}: {outcome}");
    }
    let uid = report["uid"].as_u64().unwrap();
    assert!(uid >= 1 << 30, "runs as uid {uid}");

    // The victim lived through it, its secret and its code untouched.
    assert!(alive(victim_pid as u32));
    let r = http(
        server.gateway,
        "GET",
        "victim.other.localhost",
        "/env/VICTIM_SECRET",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.body, "hunter2");

    // Another namespace's app runs as another uid.
    let victim_uid = std::fs::read_to_string(format!("/proc/{victim_pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap();
    assert!(victim_uid >= 1 << 30 && victim_uid != uid, "{victim_uid} and {uid}");
}

#[test]
fn functions_from_the_warm_pool_are_confined_as_their_namespace() {
    let server = Server::start(&["--pool-min", "1"]);
    let handler = "import os\n\
                   def handle(request):\n\
                   \x20   try:\n\
                   \x20       open(os.environ['DATA_DIR'] + '/admin.token').read()\n\
                   \x20       token = 'read'\n\
                   \x20   except OSError as e:\n\
                   \x20       token = 'refused: ' + e.strerror\n\
                   \x20   return {'uid': os.getuid(), 'token': token, 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}\n";
    let (_dir, app) = app_of(&[("handler.py", handler)]);
    let data = std::fs::canonicalize(&server.data).unwrap();
    let env = format!("DATA_DIR={}", data.display());
    server.json(&[
        "deploy",
        "fn",
        "--function",
        app.join("handler.py").to_str().unwrap(),
        "--runtime",
        "python3",
        "--env",
        &env,
        "--scale-to-zero-after",
        "1s",
    ]);
    ask(&server, "fn.default.localhost");
    // From zero, the pool's python stem cell (root until bound) becomes the instance.
    server.wait_service("fn", "scale to zero", std::time::Duration::from_secs(20), |s| {
        ready(s) == 0
    });
    let report = ask(&server, "fn.default.localhost");
    assert_eq!(server.json(&["service", "fn"])["last_cold_start"]["from_pool"], true);
    assert!(report["uid"].as_u64().unwrap() >= 1 << 30, "{report}");
    assert!(report["token"].as_str().unwrap().starts_with("refused"), "{report}");
    let pids = report["pids"].as_array().unwrap();
    assert!(pids.len() <= 3, "sees only the sandbox's own processes: {report}");
}

/// Without `updraft-sandbox` beside it (after `cargo run -p updraft`), the server runs
/// `updraft __sandbox`, the same code in the big binary.
#[test]
fn updraft_itself_confines_when_the_small_binary_is_missing() {
    let hidden = tempfile::tempdir().unwrap();
    std::fs::write(hidden.path().join("secret"), "hunter2").unwrap();
    let dir = hidden.path().to_str().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_updraft"))
        .args([
            "__sandbox",
            "--hide",
            dir,
            "--uid",
            "1073741000",
            "--gid",
            "1073741000",
            "--",
        ])
        .args(["/bin/sh", "-c"])
        .arg(format!(
            "id -u; ls /proc | grep -c '^[0-9]'; cat {dir}/secret || echo hidden"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"1073741000"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let processes: usize = lines[1].parse().unwrap();
    assert!(processes <= 4, "sees {processes} processes");
    assert_eq!(lines.last(), Some(&"hidden"));
}
