//! WebAssembly components end to end: a `wasi:http/incoming-handler` component built
//! from WAT, deployed with `--wasm`, served in process by wasmtime through the same
//! gateway, traffic split, limits and scaler as code packages.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{fixture, ready, wasm_component, Server};

fn info(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.api_call("GET", "/v1/info", &[], b"").body).unwrap()
}

#[test]
fn a_component_serves_hello_echo_env_and_a_stream() {
    let server = Server::start(&[]);
    let component = wasm_component(server.dir.path());
    let deployed = server.json(&[
        "deploy",
        "hello",
        "--wasm",
        component.to_str().unwrap(),
        "--env",
        "GREETING=hi",
    ]);
    assert_eq!(deployed["name"], "hello");
    assert!(
        info(&server)["wasm_pooling"].as_bool().unwrap(),
        "the pooling allocator is in use"
    );

    let hello = server.get("hello", "/");
    assert_eq!((hello.status, hello.body.as_str()), (200, "hello from wasm\n"));
    assert_eq!(hello.header("content-type"), Some("text/plain"));

    let echo = server
        .request(
            "POST",
            &Server::host("hello"),
            "/echo?x=1",
            &[("X-Test", "yes")],
            b"ping",
        )
        .unwrap();
    assert_eq!(echo.status, 200, "{}", echo.body);
    assert!(echo.body.starts_with("POST /echo?x=1\n"), "{}", echo.body);
    assert!(echo.body.contains("x-test: yes\n"), "{}", echo.body);
    assert!(echo.body.ends_with("\nping"), "{}", echo.body);

    let env = server.get("hello", "/env");
    assert!(env.body.contains("GREETING=hi\n"), "{}", env.body);
    assert!(env.body.contains("K_SERVICE=hello\n"), "{}", env.body);

    let stream = server.get("hello", "/stream");
    assert_eq!(stream.body, "chunk\nchunk\nchunk\n");
    // Over HTTP/1.1 the body streams: the first chunk arrives before the guest has
    // written the rest.
    let mut conn = std::net::TcpStream::connect(server.gateway).unwrap();
    write!(
        conn,
        "GET /stream HTTP/1.1\r\nHost: hello.default.localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("chunk\n") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the first chunk");
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(
        head.matches("chunk\n").count(),
        1,
        "only the first chunk so far: {head}"
    );
    conn.read_to_end(&mut seen).unwrap();
    assert_eq!(String::from_utf8_lossy(&seen).matches("chunk\n").count(), 3);
}

#[test]
fn runaway_loops_time_out_without_slowing_neighbours_and_traps_fail_alone() {
    let server = Server::start(&[]);
    let component = wasm_component(server.dir.path());
    server.json(&[
        "deploy",
        "busy",
        "--wasm",
        component.to_str().unwrap(),
        "--timeout",
        "3s",
        "--memory",
        "64Mi",
    ]);
    assert_eq!(server.get("busy", "/").status, 200);

    let gateway = server.gateway;
    let looping = std::thread::spawn(move || {
        let started = Instant::now();
        let r = common::http(gateway, "GET", "busy.default.localhost", "/loop", &[], b"").unwrap();
        (r.status, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    // While the loop spins, its neighbours are answered.
    for _ in 0..20 {
        assert_eq!(server.get("busy", "/").status, 200);
    }
    assert!(
        !looping.is_finished(),
        "the neighbours finished while the loop still ran"
    );
    let (status, took) = looping.join().unwrap();
    assert_eq!(status, 504, "a runaway loop is stopped at the request timeout");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let trap = server.get("busy", "/trap");
    assert_eq!(trap.status, 500, "{}", trap.body);
    assert!(trap.body.contains("unreachable"), "{}", trap.body);
    let hog = server.get("busy", "/hog");
    assert_eq!(hog.status, 500, "{}", hog.body);
    assert_eq!(
        server.get("busy", "/").status,
        200,
        "the instance survives its requests' failures"
    );
    let logs = server.cli(&["logs", "busy"]);
    assert!(logs.stdout.contains("function failed"), "{}", logs.stdout);
}

#[test]
fn a_wasm_revision_scales_to_zero_drops_its_compiled_state_and_queues_when_full() {
    let mut server = Server::start(&[]);
    let component = wasm_component(server.dir.path());
    server.json(&[
        "deploy",
        "zero",
        "--wasm",
        component.to_str().unwrap(),
        "--scale-to-zero-after",
        "1s",
        "--concurrency",
        "1",
        "--max-scale",
        "1",
    ]);
    assert_eq!(info(&server)["wasm_components_loaded"], 1);
    server.wait_service("zero", "scale to zero", Duration::from_secs(20), |s| ready(s) == 0);
    assert_eq!(
        info(&server)["wasm_components_loaded"],
        0,
        "a revision at zero holds no compiled state"
    );
    let cached = std::fs::read_dir(server.data.join("wasm-cache")).unwrap().count();
    assert_eq!(cached, 1, "compiled once, kept on disk");

    // From zero, three requests at once for one slot: they queue and all succeed.
    let gateway = server.gateway;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                common::http(gateway, "GET", "zero.default.localhost", "/stream", &[], b"")
                    .unwrap()
                    .status
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    let service = server.json(&["service", "zero"]);
    assert_eq!(service["last_cold_start"]["cause"], "request", "{service}");

    server.kill9();
    server.restart();
    assert_eq!(
        server.get("zero", "/").body,
        "hello from wasm\n",
        "served again after a crash"
    );
}

#[test]
fn traffic_splits_between_a_wasm_revision_and_a_python_one() {
    let server = Server::start(&[]);
    let (_dir, python) = fixture("python");
    server.deploy("mixed", &python, &[]);
    let component = wasm_component(server.dir.path());
    server.json(&["deploy", "mixed", "--wasm", component.to_str().unwrap()]);
    let out = server.cli(&["traffic", "mixed", "--to", "mixed-00001=50", "--to", "mixed-00002=50"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut wasm = 0;
    for _ in 0..100 {
        let r = server.get("mixed", "/");
        assert_eq!(r.status, 200);
        if r.body == "hello from wasm\n" {
            wasm += 1;
        }
    }
    assert_eq!(wasm, 50, "an exact 50/50 split");
}

#[test]
fn bad_components_are_refused_and_manifests_name_components_by_path() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let not_wasm = dir.join("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let out = server.cli(&["deploy", "bad", "--wasm", not_wasm.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is not a WebAssembly binary"), "{}", out.stderr);
    // A core module, not a component.
    let module = dir.join("module.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let out = server.cli(&["deploy", "bad", "--wasm", module.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("wasm: is not a usable wasi:http component"),
        "{}",
        out.stderr
    );
    assert!(
        server.json(&["services"]).as_array().unwrap().is_empty(),
        "nothing was stored"
    );

    let component = wasm_component(dir);
    let manifest = dir.join("service.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: fromfile\nspec:\n  template:\n    spec:\n      containers:\n        - image: wasm:./{}\n",
            component.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", manifest.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.get("fromfile", "/").body, "hello from wasm\n");
    let with_command = dir.join("command.yaml");
    std::fs::write(
        &with_command,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("fromfile", "withcmd")
            + "          command: [\"python3\"]\n",
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", with_command.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("does not apply to a WebAssembly component"),
        "{}",
        out.stderr
    );
}
