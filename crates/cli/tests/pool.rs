//! The pre-warmed pool: stem cells wait in their own cgroups, a cold start binds one
//! (the instance is that very process, renamed and limited), and the pool refills.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn info(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.api_call("GET", "/v1/info", &[], b"").body).unwrap()
}

fn wait_pool(server: &Server, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while info(server)["pool_size"] != size {
        assert!(Instant::now() < deadline, "pool never reached {size}: {}", info(server));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cold_starts_take_a_stem_cell_and_the_pool_refills() {
    let server = Server::start(&["--pool-min", "2"]);
    wait_pool(&server, 2);
    assert!(info(&server)["pool_memory_bytes"].as_u64().unwrap() > 0);
    let (_tmp, app) = fixture("python");
    let service = server.deploy("pooled", &app, &["--memory", "64Mi", "--scale-to-zero-after", "1s"]);
    let cold = &service["last_cold_start"];
    assert_eq!(cold["from_pool"], true, "{service}");
    let instance = &service["revisions"][0]["instances"][0];
    let pid = instance["pid"].as_u64().unwrap();
    // The stem became the app: its cgroup carries the instance's name and limit.
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(membership.contains(instance["id"].as_str().unwrap()), "{membership}");
    assert_eq!(instance["cgroup"]["memory_limit"], (64u64 << 20).to_string());
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("main.py"), "{cmdline:?}");
    assert_eq!(server.get("pooled", "/env/K_SERVICE").body, "pooled");
    wait_pool(&server, 2);

    // At zero again, the next request cold-starts from the pool too.
    server.wait_service("pooled", "scale to zero", Duration::from_secs(20), |s| {
        s["revisions"][0]["instances"].as_array().unwrap().is_empty()
    });
    assert_eq!(server.get("pooled", "/").status, 200);
    let service = server.json(&["service", "pooled"]);
    assert_eq!(service["last_cold_start"]["cause"], "request");
    assert_eq!(service["last_cold_start"]["from_pool"], true, "{service}");
}

#[test]
fn without_a_pool_instances_are_forked_as_before() {
    let server = Server::start(&["--pool-max-memory", "0"]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(info(&server)["pool_size"], 0);
    let (_tmp, app) = fixture("python");
    let service = server.deploy("plain", &app, &[]);
    assert_eq!(service["last_cold_start"]["from_pool"], false);
    assert_eq!(server.get("plain", "/env/K_SERVICE").body, "plain");
}
