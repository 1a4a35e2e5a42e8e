//! Crashes and restarts: nothing accepted is lost, nothing of the old run keeps running.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn kill_9_then_restart_keeps_services_and_leaves_no_instances() {
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("survivor", &app, &[]);
    let (_tmp2, node) = fixture("node");
    server.deploy("other", &node, &[]);
    server.deploy("other", &node, &["--env", "GREETING=v2"]);
    assert_eq!(server.get("survivor", "/").status, 200);
    let old_pids: Vec<u32> = ["survivor", "other"]
        .iter()
        .flat_map(|s| instance_pids(&server.json(&["service", s])))
        .collect();
    assert!(!old_pids.is_empty());

    server.kill9();
    assert!(
        wait_dead(&old_pids, Duration::from_secs(5)),
        "instances outlived kill -9 of the server: {old_pids:?}"
    );

    server.restart();
    let services = server.json(&["services"]);
    let names: Vec<&str> = services
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "survivor"]);
    assert_eq!(services[0]["latest_revision"], "other-00002");
    assert_eq!(
        server.json(&["service", "other"])["revisions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(server.get("survivor", "/after").body, "python survivor-00001 /after");
    assert_eq!(server.get("other", "/").body, "node other-00002 / greeting=v2");

    // The next deploy continues the numbering the store kept, with its settings.
    server.deploy("other", &node, &[]);
    assert_eq!(server.get("other", "/").body, "node other-00003 / greeting=v2");
}

#[test]
fn restart_reaps_instance_children_left_by_a_crashed_run() {
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    // A shell command whose real server is a grandchild: PDEATHSIG does not reach it.
    std::fs::write(app.join("updraft.yaml"), "run: python3 main.py & wait\n").unwrap();
    server.deploy("nested", &app, &[]);
    let pid = server.get("nested", "/env/UPDRAFT_SERVICE");
    assert_eq!(pid.body, "nested");
    let data = server.data.clone();
    let grandchildren: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).unwrap_or_default();
            cwd.starts_with(&data)
                && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .contains("main.py")
        })
        .collect();
    assert!(!grandchildren.is_empty(), "the python grandchild is running");

    server.kill9();
    server.restart();
    assert!(
        wait_dead(&grandchildren, Duration::from_secs(5)),
        "restart did not reap {grandchildren:?}"
    );
    assert_eq!(server.get("nested", "/env/UPDRAFT_SERVICE").body, "nested");
}

#[test]
fn sigterm_drains_requests_in_flight_then_stops_instances() {
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("slow", &app, &[]);
    let pids = instance_pids(&server.json(&["service", "slow"]));
    let gateway = server.gateway;
    let in_flight = std::thread::spawn(move || http(gateway, "GET", &Server::host("slow"), "/slow", &[], b"").unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate();
    assert!(status.success(), "server exit status {status}");
    let r = in_flight.join().unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "slow done"));
    assert!(
        wait_dead(&pids, Duration::from_secs(5)),
        "instances left after shutdown"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("kept", &app, &[]);
    let out = std::process::Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(&server.data)
        .args([
            "--gateway-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--api-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another updraft server is using the data directory"),
        "{stderr}"
    );
    assert_eq!(
        server.get("kept", "/").status,
        200,
        "the first server's instances are untouched"
    );
}

/// Paths under `root` whose mode lets group or others in, skipping the unpacked trees
/// whose modes are the package's, the dependency layer's or the image's own, and the
/// function shims every sandboxed instance reads (the same two files in every data
/// directory).
fn open_to_others(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut queue = vec![root.to_path_buf()];
    while let Some(dir) = queue.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if ["revisions", "layers", "images/images", "shims"]
                .iter()
                .any(|kept| path == root.join(kept))
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                continue;
            }
            if meta.permissions().mode() & 0o077 != 0 {
                open.push(format!("{} {:o}", path.display(), meta.permissions().mode() & 0o7777));
            }
            if meta.is_dir() {
                queue.push(path);
            }
        }
    }
    open
}

#[test]
fn the_data_directory_is_private_and_a_loose_one_is_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start(&[]);
    let (_tmp, app) = fixture("python");
    server.deploy("secret", &app, &["--env", "API_KEY=hunter2"]);
    assert_eq!(server.get("secret", "/").status, 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&server.data), 0o700);
    for file in ["updraft.db", "updraft.db-wal"] {
        assert_eq!(mode(&server.data.join(file)), 0o600, "{file}");
    }
    assert_eq!(open_to_others(&server.data), Vec::<String>::new());
    // The instance itself gets an ordinary umask, not the server's.
    assert_eq!(server.get("secret", "/umask").body, "022");

    // A data directory someone loosened (or an older server wrote) is tightened.
    server.terminate();
    assert!(std::process::Command::new("chmod")
        .args(["-R", "go+rX"])
        .arg(&server.data)
        .status()
        .unwrap()
        .success());
    assert!(!open_to_others(&server.data).is_empty());
    server.restart();
    assert_eq!(mode(&server.data), 0o700);
    assert_eq!(open_to_others(&server.data), Vec::<String>::new());
    assert_eq!(server.get("secret", "/").status, 200);
}

/// The server started by hand with its output into a pipe whose reader is gone, as
/// `updraft server | tee log` is after Ctrl-C took tee with it.
fn server_into_a_closed_pipe(data: &std::path::Path, gateway: u16, api: u16, extra: &[&str]) -> std::process::Child {
    let mut child = std::process::Command::new(BIN)
        .args(["server", "--data-dir"])
        .arg(data)
        .args(["--gateway-addr", &format!("127.0.0.1:{gateway}")])
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    drop(child.stderr.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], api).into();
    while !http(addr, "GET", "api", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
        assert!(std::time::Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Deploys the Python fixture as `name` through the API on `api`; its instances' pids.
fn deploy_python(data: &std::path::Path, api: u16, name: &str) -> Vec<u32> {
    let (_tmp, app) = fixture("python");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let deploy = std::process::Command::new(BIN)
        .args(["deploy", name, app.to_str().unwrap(), "-o", "json"])
        .env("UPDRAFT_API", format!("http://127.0.0.1:{api}"))
        .env("UPDRAFT_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(deploy.status.success(), "{}", String::from_utf8_lossy(&deploy.stderr));
    processes_with_env(&format!("UPDRAFT_SERVICE={name}"))
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_whose_output_pipe_closed_still_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut server = server_into_a_closed_pipe(&dir.path().join("data"), gateway, api, &[]);
    let instances = deploy_python(&dir.path().join("data"), api, "piped");
    assert_eq!(instances.len(), 1);

    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut server, Duration::from_secs(30)).expect("the server exits");
    assert_eq!(status.code(), Some(0), "no panic on the closed pipe: {status}");
    assert!(
        wait_dead(&instances, Duration::from_secs(5)),
        "its instances were stopped"
    );
}

#[test]
fn a_second_signal_stops_at_once_and_still_stops_the_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut server = server_into_a_closed_pipe(
        &dir.path().join("data"),
        gateway,
        api,
        &["--drain-timeout", "120s", "--stop-grace", "120s"],
    );
    let instances = deploy_python(&dir.path().join("data"), api, "stalled");
    // A request that would hold the drain for a minute.
    let stalled = std::thread::spawn(move || {
        http(
            ([127, 0, 0, 1], gateway).into(),
            "GET",
            &Server::host("stalled"),
            "/sleep?60",
            &[],
            b"",
        )
    });
    std::thread::sleep(Duration::from_millis(500));

    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(
        wait_exit(&mut server, Duration::from_secs(2)).is_none(),
        "the first signal drains"
    );
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut server, Duration::from_secs(20)).expect("the second signal stops it at once");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        wait_dead(&instances, Duration::from_secs(5)),
        "its instances were stopped"
    );
    let _ = stalled.join();
}

#[test]
fn a_log_follower_holds_the_shutdown_no_longer_than_the_drain_timeout() {
    let mut server = Server::start(&["--drain-timeout", "2s"]);
    let (_tmp, app) = fixture("python");
    server.deploy("followed", &app, &[]);
    let mut follower = server
        .command()
        .args(["logs", "followed", "-f"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
    let _ = follower.kill();
    let _ = follower.wait();
}

/// A deploy killed with the server while its first instance starts was never
/// answered: the next start withdraws it, and nothing of it is left.
#[test]
fn a_deploy_cut_short_by_kill_9_leaves_nothing_after_the_restart() {
    let mut server = Server::start(&[]);
    let (tmp, _app) = fixture("python");
    let manifest = tmp.path().join("slow.yaml");
    std::fs::write(
        &manifest,
        "\
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: slow}
spec:
  template:
    spec:
      containers:
        - image: package:./python
          command: [python3, main.py]
          env: [{name: READY_DELAY, value: '600'}]
          readinessProbe:
            httpGet: {path: /ready}
",
    )
    .unwrap();
    let mut deploy = server
        .command()
        .args(["apply", "-f", manifest.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let revision_dir = server.data.join("revisions/default/slow-00001");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let starting = loop {
        let pids = pids_under(&server.data, "main.py");
        if !pids.is_empty() {
            break pids;
        }
        assert!(std::time::Instant::now() < deadline, "the first instance never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(revision_dir.exists());

    server.kill9();
    let _ = deploy.kill();
    let _ = deploy.wait();
    server.restart();
    assert!(
        wait_dead(&starting, Duration::from_secs(5)),
        "{starting:?} outlived the crash"
    );
    assert_eq!(
        server.cli(&["service", "slow"]).code,
        3,
        "the unanswered deploy was withdrawn"
    );
    assert!(!revision_dir.exists(), "its unpacked tree is gone");
    let logs = server.data.join("logs/default/slow");
    let left: Vec<_> = std::fs::read_dir(&logs).into_iter().flatten().flatten().collect();
    assert!(left.is_empty(), "its logs are gone: {left:?}");

    // The name is free: the same deploy, ready at once, is the first revision.
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest).unwrap().replace("'600'", "'0'"),
    )
    .unwrap();
    let out = server.json(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out[0]["revision"], "slow-00001");
    assert_eq!(server.get("slow", "/").body, "python slow-00001 /");
}

/// Processes whose working directory is under `root` and whose command line has `needle`.
fn pids_under(root: &std::path::Path, needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).unwrap_or_default();
            cwd.starts_with(root)
                && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .contains(needle)
        })
        .collect()
}
