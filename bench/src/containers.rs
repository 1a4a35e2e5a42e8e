//! `container`: OCI images. The first response from zero through the gateway against
//! a bare `runc run` of the same bundle (the config Updraft writes, on the rootfs it
//! unpacked); and the time to deploy a 50 MB image from a registry with a cold blob
//! cache, a warm one (blobs stored, root not unpacked) and the image already unpacked,
//! against pulling and unpacking the same image with skopeo and umoci.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use updraft_runtime::image::ImageInfo;
use updraft_runtime::oci::{bundle_config, ContainerSpec};
use updraft_runtime::{InstanceSpec, Workload};

use crate::apps::{build, run_tool};
use crate::coldstart::cold_starts;
use crate::harness::{free_port, get, Server};
use crate::stats::{summarize, Summary};

#[derive(Serialize)]
struct Results {
    cold_start: ColdStart,
    deploy: Vec<DeployRow>,
    image_megabytes: f64,
}

#[derive(Serialize)]
struct ColdStart {
    updraft: Summary,
    bare_runc: Summary,
    /// Updraft's median over bare runc's.
    ratio_p50: f64,
}

#[derive(Serialize)]
struct DeployRow {
    case: String,
    runs: Summary,
}

/// An image built with umoci: the static server as entrypoint, plus `extra_bytes` of
/// incompressible data.
fn build_image(work: &Path, name: &str, server: &Path, extra_bytes: usize) -> anyhow::Result<PathBuf> {
    let layout = work.join(format!("{name}-layout"));
    let bundle = work.join(format!("{name}-bundle"));
    let tagged = format!("{}:{name}", layout.display());
    run_tool(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
    run_tool(Command::new("umoci").args(["new", "--image", &tagged]))?;
    run_tool(Command::new("umoci").args(["unpack", "--image", &tagged]).arg(&bundle))?;
    std::fs::copy(server, bundle.join("rootfs/server"))?;
    if extra_bytes > 0 {
        let mut data = vec![0u8; extra_bytes];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut data)?;
        std::fs::write(bundle.join("rootfs/data.bin"), data)?;
    }
    run_tool(Command::new("umoci").args(["repack", "--image", &tagged]).arg(&bundle))?;
    run_tool(Command::new("umoci").args(["config", "--image", &tagged, "--config.entrypoint", "/server"]))?;
    Ok(layout)
}

/// Debian's docker-registry on a free port, without auth.
fn start_registry(work: &Path) -> anyhow::Result<(Child, String)> {
    let host = format!("127.0.0.1:{}", free_port());
    let config = work.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp: {{addr: {host}}}\n",
            work.join("registry").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting docker-registry")?;
    let addr: SocketAddr = host.parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(addr, &host, "/v2/").ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("docker-registry did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, host))
}

fn skopeo(work: &Path) -> Command {
    let policy = work.join("policy.json");
    let _ = std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#);
    let mut cmd = Command::new("skopeo");
    cmd.arg("--policy").arg(policy);
    cmd
}

fn timed(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// `runc run` of a bundle generated like Updraft's, timed to the first 200 on its port.
fn bare_runc(image_dir: &Path, work: &Path, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let info: ImageInfo = serde_json::from_slice(&std::fs::read(image_dir.join("image.json"))?)?;
    let state = work.join("runc-state");
    let mut times = Vec::new();
    for round in 0..rounds {
        let port = free_port();
        let id = format!("bench-{round}");
        let spec = InstanceSpec {
            id: id.clone(),
            namespace: "default".into(),
            service: "bench".into(),
            revision: "bench-00001".into(),
            command: info.entrypoint.clone(),
            env: BTreeMap::new(),
            workdir: PathBuf::from("/"),
            limits: Default::default(),
            workload: Workload::Process,
        };
        let container = ContainerSpec {
            rootfs: image_dir.join("rootfs"),
            image: info.clone(),
        };
        let config =
            bundle_config(&spec, &container, port, &format!("/updraft-bench/{id}")).map_err(anyhow::Error::msg)?;
        let bundle = work.join(&id);
        std::fs::create_dir_all(&bundle)?;
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&config)?)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        let mut child = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = started + Duration::from_secs(30);
        while get(addr, "bench", "/").ok() != Some(200) {
            if Instant::now() > deadline {
                bail!("bare runc container did not answer");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["kill", &id, "KILL"])
            .status();
        let _ = child.wait();
    }
    Ok(times)
}

pub fn run(updraft: &Path, out: &Path, rounds: usize, megabytes: usize) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let app = build("static", work.path())?;
    let server_binary = app.dir.join("server");

    // Cold starts: the small image through the gateway, then bare runc.
    let small = build_image(work.path(), "small", &server_binary, 0)?;
    let server = Server::start(updraft)?;
    let what = vec!["--image".to_string(), format!("oci-layout:{}", small.display())];
    let through_updraft = cold_starts(&server, updraft, &what, 1, 0)?;
    let image_dir = std::fs::read_dir(server.data_dir().join("images/images"))?
        .flatten()
        .next()
        .context("no unpacked image")?
        .path();
    let bare = bare_runc(&image_dir, work.path(), rounds)?;
    drop(server);

    // Deploys of the big image from a registry.
    let big = build_image(work.path(), "big", &server_binary, megabytes << 20)?;
    let (mut registry, host) = start_registry(work.path())?;
    run_tool(
        skopeo(work.path())
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:big", big.display()))
            .arg(format!("docker://{host}/big:1")),
    )?;
    let reference = format!("{host}/big:1");
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut unpacked = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..rounds {
        let server = Server::start(updraft)?;
        let deploy = |name: &str| {
            server
                .cli(updraft, &["deploy", name, "--image", &reference])
                .map(|_| ())
        };
        cold.push(timed(|| deploy("cold"))?);
        unpacked.push(timed(|| deploy("unpacked"))?);
        // Blobs stay; the unpacked root goes, as after the image was collected.
        let images = server.data_dir().join("images/images");
        for entry in std::fs::read_dir(&images)?.flatten() {
            std::fs::remove_dir_all(entry.path())?;
        }
        warm.push(timed(|| deploy("warm"))?);
        drop(server);

        let target = work.path().join(format!("pulled-{round}"));
        baseline.push(timed(|| {
            run_tool(
                skopeo(work.path())
                    .args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{reference}"))
                    .arg(format!("oci:{}:big", target.display())),
            )?;
            run_tool(
                Command::new("umoci")
                    .args(["unpack", "--image", &format!("{}:big", target.display())])
                    .arg(target.with_extension("bundle")),
            )
        })?);
        let _ = std::fs::remove_dir_all(&target);
        let _ = std::fs::remove_dir_all(target.with_extension("bundle"));
    }
    let _ = registry.kill();
    let _ = registry.wait();

    let updraft_cold = summarize(&through_updraft);
    let bare_runc = summarize(&bare);
    let results = Results {
        cold_start: ColdStart {
            ratio_p50: updraft_cold.p50_ms / bare_runc.p50_ms,
            updraft: updraft_cold,
            bare_runc,
        },
        deploy: [
            ("cold blob cache (pull + unpack + start)", cold),
            ("warm blob cache (unpack + start)", warm),
            ("image already unpacked (start)", unpacked),
            ("skopeo copy + umoci unpack (no start)", baseline),
        ]
        .into_iter()
        .map(|(case, runs)| DeployRow {
            case: case.to_string(),
            runs: summarize(&runs),
        })
        .collect(),
        image_megabytes: megabytes as f64,
    };
    println!(
        "{:<42} {:>5} {:>9} {:>9}",
        "first response from zero", "n", "p50 ms", "p99 ms"
    );
    for (name, s) in [
        ("updraft (gateway, runc run)", &results.cold_start.updraft),
        ("bare runc run, same bundle", &results.cold_start.bare_runc),
    ] {
        println!("{name:<42} {:>5} {:>9.1} {:>9.1}", s.count, s.p50_ms, s.p99_ms);
    }
    println!("ratio p50: {:.2}", results.cold_start.ratio_p50);
    println!();
    println!(
        "{:<42} {:>5} {:>9} {:>9}",
        format!("deploy of a {megabytes} MB image"),
        "n",
        "p50 ms",
        "p99 ms"
    );
    for row in &results.deploy {
        println!(
            "{:<42} {:>5} {:>9.1} {:>9.1}",
            row.case, row.runs.count, row.runs.p50_ms, row.runs.p99_ms
        );
    }
    let path = out.join("container.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
