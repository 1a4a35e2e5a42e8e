//! OCI images end to end: images built by the tests, pushed to a real registry
//! (Debian's docker-registry) with skopeo or handed over as a layout or archive, run by
//! real runc through the same gateway, activator and scaler as code packages.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::oci::{
    image_store_entries, layer, runc_containers, test_config, test_image, test_layers, write_layout,
    write_multi_platform_layout, Auth, ImageSpec, Item, Registry,
};
use common::{ready, Server};

fn info(server: &Server, service: &str) -> BTreeMap<String, String> {
    let resp = server.get(service, "/info");
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The memory limit the kernel holds for a container's init process.
fn memory_limit_of(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.max"),
            c if c.split(',').any(|c| c == "memory") => format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"),
            _ => continue,
        };
        if let Ok(text) = std::fs::read_to_string(file) {
            if let Ok(limit) = text.trim().parse() {
                return Some(limit);
            }
        }
    }
    None
}

/// Without credentials the registry refuses the pull, and a wrong password is refused
/// and not stored.
fn refused_without_credentials(server: &Server, registry: &Registry, reference: &str, user: &str) {
    let refused = server.cli(&["deploy", "web", "--image", reference]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("updraft registry login"), "{}", refused.stderr);
    let wrong = server.cli(&["registry", "login", &registry.host, "-u", user, "-p", "wrong"]);
    assert_ne!(wrong.code, 0, "{}", wrong.stdout);
    assert!(wrong.stderr.contains("refused the credentials"), "{}", wrong.stderr);
    assert_eq!(server.json(&["registry", "list"]), serde_json::json!([]));
}

#[test]
fn an_image_from_a_registry_runs_confined_scales_to_zero_and_survives_kill_9() {
    let registry = Registry::start(Auth::Basic("tester", "s3cret"));
    let mut server = Server::start(&[]);
    let layout = server.dir.path().join("layout");
    let digest = test_image(&layout);
    registry.push(&layout, "web:1.2");
    let reference = registry.reference("web:1.2");

    refused_without_credentials(&server, &registry, &reference, "tester");
    let login = server.cli(&["registry", "login", &registry.host, "-u", "tester", "-p", "s3cret"]);
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(server.json(&["registry", "list"])[0]["username"], "tester");
    // A namespace's package quota holds pulled images too: refused once pulled.
    server.json(&["namespace", "create", "small"]);
    server.json(&["namespace", "limits", "small", "--quota-package-size", "1Ki"]);
    let big = server.cli(&["deploy", "web", "--image", &reference, "-n", "small"]);
    assert_eq!(big.code, 5, "{}", big.stderr);
    assert!(big.stderr.contains("quota.package_bytes = 1024"), "{}", big.stderr);
    assert!(server.json(&["services", "-n", "small"]).as_array().unwrap().is_empty());
    // Kept sealed under the server's secret key, like secrets.
    let sealed = server.data.join("images/auth.sealed");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(
        !bytes.windows(6).any(|w| w == b"s3cret"),
        "the password is at rest in the clear"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sealed).unwrap().permissions().mode() & 0o777, 0o600);

    let deployed = server.json(&[
        "deploy",
        "web",
        "--image",
        &reference,
        "--env",
        "GREETING=hi",
        "--memory",
        "64Mi",
        "--scale-to-zero-after",
        "3s",
    ]);
    assert_eq!(deployed["latest_revision"], "web-00001");
    assert_eq!(server.get("web", "/").body, "container web-00001");

    let seen = info(&server, "web");
    let expected = [
        ("uid", "1000"),
        ("gid", "1000"),
        // Its own pid namespace: the image's entrypoint is init.
        ("pid", "1"),
        ("hostname", "web-00001"),
        ("cwd", "/opt"),
        ("root_writable", "0"),
        ("tmp_writable", "1"),
        ("removed_exists", "0"),
        ("opaque_old_exists", "0"),
        ("opaque_new_exists", "1"),
        // CAP_NET_BIND_SERVICE (bit 10) and nothing else.
        ("cap_eff", "0000000000000400"),
        ("greeting", "hi"),
        // Filtered (mode 2), and a new user namespace is refused.
        ("seccomp", "2"),
        ("userns_denied", "1"),
        ("home", "/home/app"),
        ("args", "from-cmd"),
    ];
    for (key, value) in expected {
        assert_eq!(seen.get(key).map(String::as_str), Some(value), "{key} in {seen:?}");
    }
    let containers = runc_containers(&server.data);
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert_eq!(memory_limit_of(containers[0].1), Some(64 << 20));
    // The bundle holds the container's environment: the server's alone.
    let bundle = server
        .data
        .join("containers/bundles")
        .join(&containers[0].0)
        .join("config.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bundle).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", bundle.display());
    // CPU used inside the container is metered from the cgroup runc made.
    assert_eq!(server.get("web", "/burn").body, "burned");
    let usage = server.json(&["usage", "--by", "revision"]);
    let row = usage
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == "web-00001")
        .unwrap_or_else(|| panic!("{usage}"));
    assert!(row["cpu_seconds"].as_f64().unwrap() >= 0.25, "{row}");

    let described = server.json(&["service", "web"]);
    let revision = &described["revisions"][0];
    assert_eq!(revision["runtime"], "oci", "{revision}");
    assert_eq!(revision["package"], digest, "{revision}");
    let logs = server.cli(&["logs", "web"]);
    assert!(logs.stdout.contains("container listening on"), "{}", logs.stdout);

    // Idle past its scale-to-zero period: the container is gone, runc included.
    wait_for("scale to zero", Duration::from_secs(30), || {
        ready(&server.json(&["service", "web"])) == 0 && runc_containers(&server.data).is_empty()
    });
    let logs = server.cli(&["logs", "web"]);
    assert!(logs.stdout.contains("container got SIGTERM"), "{}", logs.stdout);
    // The next request starts one again and is held until it is ready.
    assert_eq!(server.get("web", "/").body, "container web-00001");
    assert_eq!(runc_containers(&server.data).len(), 1);

    // kill -9 leaves the container behind; the restarted server deletes it and serves
    // from the same unpacked image.
    let orphan = runc_containers(&server.data)[0].clone();
    server.kill9();
    assert!(common::alive(orphan.1), "the container outlives a killed server");
    server.restart();
    assert!(
        common::wait_dead(&[orphan.1], Duration::from_secs(10)),
        "leftover container still runs"
    );
    assert_eq!(server.get("web", "/").body, "container web-00001");
    let running = runc_containers(&server.data);
    assert_eq!(running.len(), 1);
    assert_ne!(running[0].0, orphan.0);
    assert_eq!(image_store_entries(&server.data).0.len(), 1);

    // Logged out, the credentials are gone from the server.
    let out = server.cli(&["registry", "logout", &registry.host]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(server.json(&["registry", "list"]).as_array().unwrap().is_empty());
    server.kill9();
    server.restart();
    assert!(server.json(&["registry", "list"]).as_array().unwrap().is_empty());
    let out = server.cli(&["registry", "logout", &registry.host]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("no credentials are stored"), "{}", out.stderr);
}

#[test]
fn a_multi_platform_index_resolves_to_its_amd64_image() {
    let registry = Registry::start(Auth::None);
    let server = Server::start(&[]);
    let layout = server.dir.path().join("multi-arch");
    let amd64 = write_multi_platform_layout(&layout);
    registry.push(&layout, "multi:1");
    let from_registry = server.json(&["deploy", "pulled", "--image", &registry.reference("multi:1")]);
    assert_eq!(from_registry["revisions"][0]["package"], amd64, "{from_registry}");
    assert_eq!(server.get("pulled", "/").body, "container pulled-00001");
    let from_layout = server.json(&[
        "deploy",
        "local",
        "--image",
        &format!("oci-layout:{}", layout.display()),
    ]);
    assert_eq!(from_layout["revisions"][0]["package"], amd64);
    assert_eq!(image_store_entries(&server.data).0.len(), 1);
}

#[test]
fn a_registry_with_bearer_tokens_is_pulled_from_after_login() {
    let registry = Registry::start(Auth::Bearer("robot", "t0ken"));
    let server = Server::start(&[]);
    let layout = server.dir.path().join("layout");
    test_image(&layout);
    registry.push(&layout, "team/web:2");
    let reference = registry.reference("team/web:2");

    refused_without_credentials(&server, &registry, &reference, "robot");
    // The deploy flags log in first, the password coming on stdin.
    let mut child = server
        .command()
        .args([
            "deploy",
            "web",
            "--image",
            &reference,
            "--registry-username",
            "robot",
            "--registry-password-stdin",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"t0ken\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.get("web", "/").body, "container web-00001");
    assert_eq!(
        server.json(&["registry", "list"])[0]["registry"],
        registry.host.as_str()
    );
}

#[test]
fn layouts_archives_and_manifests_share_one_unpacked_image() {
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let layout = dir.join("web-oci");
    let digest = test_image(&layout);
    let archive = dir.join("web.tar");
    common::run(
        std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .arg("."),
    );

    let from_layout = server.json(&[
        "deploy",
        "layout",
        "--image",
        &format!("oci-layout:{}", layout.display()),
    ]);
    assert_eq!(from_layout["latest_revision"], "layout-00001");
    let from_archive = server.json(&[
        "deploy",
        "archive",
        "--image",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert_eq!(from_archive["latest_revision"], "archive-00001");
    assert_eq!(server.get("layout", "/").body, "container layout-00001");
    assert_eq!(server.get("archive", "/").body, "container archive-00001");
    // One image, unpacked once, shared by both services' containers.
    assert_eq!(image_store_entries(&server.data).0.len(), 1);
    // A layout holding two images: one is picked by its tag, as skopeo names them.
    let multi = dir.join("multi");
    let read_index =
        || -> serde_json::Value { serde_json::from_slice(&std::fs::read(multi.join("index.json")).unwrap()).unwrap() };
    write_layout(&multi, &ImageSpec::new(test_layers(), test_config()));
    let first = read_index()["manifests"][0].clone();
    let mut second_config = test_config();
    second_config["Cmd"] = serde_json::json!(["from-second"]);
    write_layout(&multi, &ImageSpec::new(test_layers(), second_config));
    let mut index = read_index();
    let mut entries = vec![first, index["manifests"][0].clone()];
    for (entry, tag) in entries.iter_mut().zip(["first", "second"]) {
        entry["annotations"]["org.opencontainers.image.ref.name"] = tag.into();
    }
    index["manifests"] = entries.into();
    std::fs::write(multi.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let several = server.cli(&["deploy", "multi", "--image", &format!("oci-layout:{}", multi.display())]);
    assert_ne!(several.code, 0);
    assert!(
        several.stderr.contains("several images (first, second)"),
        "{}",
        several.stderr
    );
    server.json(&[
        "deploy",
        "multi",
        "--image",
        &format!("oci-layout:{}:second", multi.display()),
    ]);
    assert_eq!(info(&server, "multi")["args"], "from-second");

    // zstd layers, as newer build tools write them.
    let mut zstd = ImageSpec::new(test_layers(), test_config());
    zstd.layer_media_type = "application/vnd.oci.image.layer.v1.tar+zstd".into();
    write_layout(&dir.join("zstd-oci"), &zstd);
    server.json(&[
        "deploy",
        "zstd",
        "--image",
        &format!("oci-layout:{}", dir.join("zstd-oci").display()),
    ]);
    assert_eq!(info(&server, "zstd")["opaque_new_exists"], "1");
    let rev = &server.json(&["service", "archive"])["revisions"][0];
    assert_eq!(rev["package"], digest);

    // A manifest names the archive by path; command and args replace the image's
    // Entrypoint and Cmd as in Kubernetes.
    std::fs::write(
        dir.join("service.yaml"),
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: manifest\nspec:\n  template:\n    spec:\n      containers:\n        - image: oci-archive:./web.tar\n          args: [\"one\", \"two\"]\n          env:\n            - {name: GREETING, value: from-manifest}\n",
    )
    .unwrap();
    let applied = server.cli(&["apply", "-f", dir.join("service.yaml").to_str().unwrap()]);
    assert_eq!(applied.code, 0, "{}\n{}", applied.stderr, server.log());
    let seen = info(&server, "manifest");
    assert_eq!(seen["args"], "one two");
    assert_eq!(seen["greeting"], "from-manifest");
    let exported = server.cli(&["get", "service", "manifest", "-o", "yaml"]);
    assert!(
        exported.stdout.contains(&format!("image: oci:{digest}")),
        "{}",
        exported.stdout
    );
    let again = server.cli(&["apply", "-f", dir.join("service.yaml").to_str().unwrap()]);
    assert!(again.stdout.contains("unchanged"), "{}", again.stdout);
}

#[test]
fn bad_images_are_refused_clearly_and_leave_nothing_behind() {
    let registry = Registry::start(Auth::None);
    let server = Server::start(&[]);
    let dir = server.dir.path();
    let good = test_layers();

    let unreachable = format!("127.0.0.1:{}/web:1.0", common::free_port());
    let mut cases: Vec<(String, String, &str)> = vec![
        (
            "unknown".into(),
            registry.reference("nothing-here:1.0"),
            "was not found",
        ),
        ("unreachable".into(), unreachable, "unreachable after 3 attempts"),
        ("bad-reference".into(), "Web:latest".into(), "upper-case"),
    ];
    let mut layouts: Vec<(&str, ImageSpec, &str)> = Vec::new();
    let mut tampered = ImageSpec::new(good.clone(), test_config());
    tampered.tamper = Some(|mut bytes| {
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        bytes
    });
    layouts.push(("digest-mismatch", tampered, "not the sha256:"));
    let mut truncated = ImageSpec::new(good.clone(), test_config());
    truncated.tamper = Some(|bytes| bytes[..bytes.len() / 2].to_vec());
    truncated.digest_after_tamper = true;
    layouts.push(("truncated", truncated, "is corrupt"));
    let mut foreign = ImageSpec::new(good.clone(), test_config());
    foreign.layer_media_type = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
    layouts.push(("media-type", foreign, "not supported"));
    let mut arm = ImageSpec::new(good.clone(), test_config());
    arm.architecture = "arm64".into();
    layouts.push(("architecture", arm, "linux/arm64, not linux/amd64"));
    let escape_symlink = layer(&[Item::Symlink("evil", "/tmp"), Item::File("evil/planted", b"x", 0o644)]);
    layouts.push((
        "absolute-symlink",
        ImageSpec::new(vec![good[0].clone(), escape_symlink], test_config()),
        "points outside the layer's root",
    ));
    let dotdot = layer(&[Item::RawFile("../../../planted-by-layer")]);
    layouts.push((
        "dotdot",
        ImageSpec::new(vec![good[0].clone(), dotdot], test_config()),
        "climbs out",
    ));
    for (name, spec, says) in layouts {
        let path = dir.join(name);
        write_layout(&path, &spec);
        cases.push((name.to_string(), format!("oci-layout:{}", path.display()), says));
    }
    // Pushed as is: a registry serves the arm64 image too.
    let mut arm = ImageSpec::new(good, test_config());
    arm.architecture = "arm64".into();
    write_layout(&dir.join("arm-push"), &arm);
    registry.push(&dir.join("arm-push"), "arm:1");
    cases.push((
        "registry-architecture".into(),
        registry.reference("arm:1"),
        "not linux/amd64",
    ));

    for (name, image, says) in &cases {
        let out = server.cli(&["deploy", name, "--image", image]);
        assert_ne!(out.code, 0, "{name} was accepted: {}", out.stdout);
        assert!(out.stderr.contains(says), "{name}: {:?} lacks {says:?}", out.stderr);
        let (images, staging) = image_store_entries(&server.data);
        assert!(
            images.is_empty() && staging.is_empty(),
            "{name} left {images:?} {staging:?}"
        );
    }
    assert!(!Path::new("/tmp/planted").exists());
    assert!(!dir.join("planted-by-layer").exists());
    assert_eq!(server.json(&["services"]), serde_json::json!([]));
    assert!(runc_containers(&server.data).is_empty());
}

#[test]
fn a_namespace_pulls_with_its_own_registry_secret() {
    let registry = Registry::start(Auth::Basic("team-robot", "pu11"));
    let server = Server::start(&[]);
    let layout = server.dir.path().join("layout");
    test_image(&layout);
    registry.push(&layout, "team/web:3");
    let reference = registry.reference("team/web:3");
    server.json(&["namespace", "create", "team"]);
    let developer = server.json(&["token", "create", "dev", "--grant", "developer=team"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let as_developer = |args: &[&str]| {
        let out = server
            .command()
            .env("UPDRAFT_TOKEN", &developer)
            .args(args)
            .args(["-n", "team"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A developer holds no platform-wide login, but its namespace's secret will do.
    let (code, stderr) = as_developer(&["deploy", "web", "--image", &reference, "--registry-secret", "reg"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("image_pull_secret") && stderr.contains("\"reg\""),
        "{stderr}"
    );
    let (code, stderr) = as_developer(&[
        "secret",
        "create",
        "reg",
        "--from-literal",
        "username=team-robot",
        "--from-literal",
        "password=pu11",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = as_developer(&["deploy", "web", "--image", &reference, "--registry-secret", "reg"]);
    assert_eq!(code, 0, "{stderr}");
    let r = server.request("GET", "web.team.localhost", "/", &[], b"").unwrap();
    assert_eq!(r.body, "container web-00001");
    assert_eq!(
        server.json(&["registry", "list"]),
        serde_json::json!([]),
        "nothing platform-wide"
    );
    let manifest = server.cli(&["get", "service", "web", "-n", "team"]).stdout;
    assert!(
        manifest.contains("imagePullSecrets") && !manifest.contains("pu11"),
        "{manifest}"
    );

    // Another namespace cannot pull with it.
    let other = server.cli(&["deploy", "web", "--image", &reference, "--registry-secret", "reg"]);
    assert_ne!(other.code, 0);
    assert!(
        other.stderr.contains("which namespace \"default\" does not have"),
        "{}",
        other.stderr
    );
}
