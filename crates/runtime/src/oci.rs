//! The `oci` driver: an instance of an image is a runc container whose root is the
//! image's shared, read-only rootfs, with a private writable `/tmp`.
//!
//! runc is started as `runc run` in the foreground: that is `create` and `start` with
//! runc staying the container's parent, so the exit status and the output pipes reach
//! this server the same way a process instance's do, without making the server a
//! subreaper. Stopping goes through `runc kill`, removal through `runc delete`, and
//! a restarted server deletes whatever `runc list` still shows under its `--root`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder,
};

use crate::cgroup::InstanceCgroup;
use crate::image::ImageInfo;
use crate::instance::InstanceControl;
use crate::{InstanceSpec, RuntimeError};

/// Where runc keeps its state and where instance bundles are written.
#[derive(Debug, Clone)]
pub struct Containers {
    pub runc: PathBuf,
    /// `runc --root`: container state of this server only.
    pub state: PathBuf,
    pub bundles: PathBuf,
}

/// An image instance's root and what its image asks for.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub rootfs: PathBuf,
    pub image: ImageInfo,
}

/// Processes in a container, past the pids they need to serve, are a fork bomb.
const PIDS_LIMIT: i64 = 1024;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Containers {
    pub fn new(runc: PathBuf, dir: &Path) -> std::io::Result<Self> {
        let containers = Containers {
            runc,
            state: dir.join("state"),
            bundles: dir.join("bundles"),
        };
        fs::create_dir_all(&containers.state)?;
        fs::create_dir_all(&containers.bundles)?;
        Ok(containers)
    }

    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.runc);
        cmd.arg("--root").arg(&self.state);
        cmd
    }

    /// Writes the instance's bundle; returns its directory.
    pub fn write_bundle(
        &self,
        spec: &InstanceSpec,
        container: &ContainerSpec,
        port: u16,
        cgroups_path: &str,
    ) -> Result<PathBuf, RuntimeError> {
        let config = bundle_config(spec, container, port, cgroups_path).map_err(RuntimeError::Bundle)?;
        let dir = self.bundles.join(&spec.id);
        fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
        fs::write(dir.join("config.json"), json)?;
        Ok(dir)
    }

    /// Deletes every container an earlier run left under this server's `--root`.
    pub fn reap_leftovers(&self) -> usize {
        let listed = self.command().args(["list", "--quiet"]).stderr(Stdio::null()).output();
        let ids: Vec<String> = listed
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
            .unwrap_or_default();
        for id in &ids {
            let _ = self
                .command()
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for entry in fs::read_dir(&self.bundles).into_iter().flatten().flatten() {
            let _ = fs::remove_dir_all(entry.path());
        }
        ids.len()
    }
}

/// The runtime spec of one instance: the image's process under the revision's limits.
pub fn bundle_config(
    spec: &InstanceSpec,
    container: &ContainerSpec,
    port: u16,
    cgroups_path: &str,
) -> Result<Spec, String> {
    let image = &container.image;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOME".into(), "/".into());
    for entry in &image.env {
        if let Some((k, v)) = entry.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.extend(spec.env.clone());
    for (k, v) in spec.contract_env(port) {
        env.insert(k.to_string(), v);
    }
    let (uid, gid, home) = resolve_user(&container.rootfs, &image.user)?;
    if let Some(home) = home {
        env.insert("HOME".into(), home);
    }
    let cwd = if image.working_dir.is_empty() {
        "/".to_string()
    } else {
        image.working_dir.clone()
    };
    let err = |e: oci_spec::OciSpecError| e.to_string();
    // Knative's secure default: every capability dropped but binding low ports.
    let caps: oci_spec::runtime::Capabilities = [Capability::NetBindService].into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .ambient(if uid == 0 { Default::default() } else { caps.clone() })
        .inheritable(if uid == 0 { Default::default() } else { caps })
        .build()
        .map_err(err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.command.clone())
        .env(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
        .cwd(cwd)
        .user(UserBuilder::default().uid(uid).gid(gid).build().map_err(err)?)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(err)?;

    let mut resources = LinuxResourcesBuilder::default()
        .devices(Vec::new())
        .pids(LinuxPidsBuilder::default().limit(PIDS_LIMIT).build().map_err(err)?);
    if let Some(bytes) = spec.limits.memory_bytes {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes as i64)
                .swap(bytes as i64)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(millis) = spec.limits.cpu_millis {
        let period = crate::cgroup::CPU_PERIOD_US;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((u64::from(millis) * period / 1000) as i64)
                .build()
                .map_err(err)?,
        );
    }
    // The host's network namespace: the instance listens on its assigned port there.
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().map_err(err))
    .collect::<Result<Vec<_>, _>>()?;
    let defaults = Spec::default();
    let linux_defaults = defaults.linux().clone().unwrap_or_default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(err)?)
        .cgroups_path(PathBuf::from(cgroups_path))
        .seccomp(crate::seccomp::default_profile()?)
        .masked_paths(linux_defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(linux_defaults.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(err)?;

    let mut mounts: Vec<Mount> = defaults.mounts().clone().unwrap_or_default();
    let tmp_size = spec
        .limits
        .memory_bytes
        .map_or("size=65536k".to_string(), |b| format!("size={}k", b / 2048));
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "mode=1777".to_string(),
                tmp_size,
            ])
            .build()
            .map_err(err)?,
    );
    // Name resolution as on the host, whose network the container shares.
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        // Only over a plain file of the image's: a symlink would be resolved on the host.
        let in_image = fs::symlink_metadata(container.rootfs.join(&file[1..]));
        if Path::new(file).exists() && in_image.is_ok_and(|m| m.is_file()) {
            mounts.push(
                MountBuilder::default()
                    .destination(file)
                    .typ("bind")
                    .source(file)
                    .options(vec![
                        "rbind".to_string(),
                        "ro".to_string(),
                        "nosuid".to_string(),
                        "nodev".to_string(),
                    ])
                    .build()
                    .map_err(err)?,
            );
        }
    }
    let mut config = Spec::default();
    config
        .set_process(Some(process))
        .set_root(Some(
            RootBuilder::default()
                .path(&container.rootfs)
                .readonly(true)
                .build()
                .map_err(err)?,
        ))
        .set_hostname(Some(spec.revision.clone()))
        .set_mounts(Some(mounts))
        .set_linux(Some(linux));
    Ok(config)
}

/// The uid, gid and home directory an image's `User` (`name`, `uid`, `name:group`,
/// `uid:gid`) means, from the image's own `/etc/passwd` and `/etc/group`.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Option<String>), String> {
    if user.is_empty() {
        return Ok((0, 0, None));
    }
    let read = |name: &str| -> Vec<Vec<String>> {
        let path = rootfs.join("etc").join(name);
        // A symlinked /etc/passwd could point at the host's; only a plain file counts.
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Vec::new();
        }
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    };
    let passwd = read("passwd");
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .iter()
        .find(|f| f.len() >= 6 && (f[0] == user_part || f[2] == user_part));
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("the image's user {user_part:?} is not in its /etc/passwd"))?,
    };
    let gid = match group_part {
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read("group")
                .iter()
                .find(|f| f.len() >= 3 && f[0] == group)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("the image's group {group:?} is not in its /etc/group"))?,
        },
    };
    Ok((uid, gid, entry.map(|f| f[5].clone())))
}

/// How a container instance is stopped: through runc, then through its cgroup.
pub(crate) struct ContainerControl {
    pub containers: Containers,
    pub id: String,
    /// `runc run`'s own process group.
    pub runc_pgid: Pid,
    pub cgroup: InstanceCgroup,
    pub pid_file: PathBuf,
}

impl ContainerControl {
    fn runc(&self, args: &[&str]) {
        let mut cmd = self.containers.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let spawned = {
            let _exclusive = crate::FORK_LOCK.write().unwrap_or_else(|p| p.into_inner());
            tokio::process::Command::from(cmd).spawn()
        };
        if let Ok(mut child) = spawned {
            // Reaped in the background: the caller waits for the instance, not for runc.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            });
        }
    }
}

impl InstanceControl for ContainerControl {
    fn terminate(&self) {
        self.runc(&["kill", &self.id, "TERM"]);
    }

    fn kill(&self) {
        self.cgroup.kill_all();
        let _ = killpg(self.runc_pgid, Signal::SIGKILL);
    }

    fn cleanup(&self) {
        // `runc run` deletes its container when the container exits; this covers a
        // runc that was killed first.
        self.runc(&["delete", "--force", &self.id]);
        let _ = fs::remove_dir_all(self.containers.bundles.join(&self.id));
        let _ = fs::remove_file(&self.pid_file);
    }

    fn pids(&self) -> Vec<i32> {
        self.cgroup.pids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workload;

    fn instance() -> InstanceSpec {
        InstanceSpec {
            id: "web-00001-abc".into(),
            namespace: "default".into(),
            service: "web".into(),
            revision: "web-00001".into(),
            command: vec!["/server".into(), "--flag".into()],
            env: BTreeMap::from([("GREETING".into(), "hi".into()), ("PATH".into(), "/custom".into())]),
            workdir: PathBuf::from("/"),
            limits: crate::cgroup::Limits {
                memory_bytes: Some(64 << 20),
                cpu_millis: Some(500),
            },
            workload: Workload::Process,
        }
    }

    #[test]
    fn the_bundle_runs_the_image_confined_on_the_host_network() {
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir(rootfs.path().join("etc")).unwrap();
        fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        let container = ContainerSpec {
            rootfs: rootfs.path().to_path_buf(),
            image: ImageInfo {
                digest: format!("sha256:{}", "0".repeat(64)),
                entrypoint: vec![],
                cmd: vec![],
                env: vec!["FROM_IMAGE=1".into(), "PATH=/image/bin".into()],
                working_dir: "/app".into(),
                user: "app".into(),
                size: 0,
            },
        };
        let config = bundle_config(&instance(), &container, 8123, "/updraft-x/web-00001-abc").unwrap();
        let json = serde_json::to_value(&config).unwrap();
        let env: Vec<&str> = json["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for wanted in [
            "FROM_IMAGE=1",
            "GREETING=hi",
            "PATH=/custom",
            "PORT=8123",
            "K_REVISION=web-00001",
            "HOME=/home/app",
        ] {
            assert!(env.contains(&wanted), "{wanted} in {env:?}");
        }
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["user"]["gid"], 1000);
        assert_eq!(json["process"]["cwd"], "/app");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(
            json["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let denied = &json["linux"]["seccomp"]["syscalls"][0];
        assert_eq!(denied["action"], "SCMP_ACT_ERRNO");
        assert!(
            denied["names"].as_array().unwrap().iter().any(|n| n == "unshare"),
            "{denied}"
        );
        let namespaces: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["pid", "mount", "ipc", "uts"]);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["cgroupsPath"], "/updraft-x/web-00001-abc");
        let tmp = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert_eq!(tmp["type"], "tmpfs");
    }

    #[test]
    fn users_resolve_by_name_or_number_and_unknown_names_are_refused() {
        let rootfs = tempfile::tempdir().unwrap();
        fs::create_dir(rootfs.path().join("etc")).unwrap();
        fs::write(rootfs.path().join("etc/passwd"), "app:x:1000:1001::/home/app:/bin/sh\n").unwrap();
        fs::write(rootfs.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let resolve = |u: &str| resolve_user(rootfs.path(), u);
        assert_eq!(resolve("").unwrap(), (0, 0, None));
        assert_eq!(resolve("app").unwrap(), (1000, 1001, Some("/home/app".into())));
        assert_eq!(resolve("1000").unwrap().0, 1000);
        assert_eq!(resolve("4242:4343").unwrap(), (4242, 4343, None));
        assert_eq!(resolve("app:staff").unwrap().1, 50);
        assert!(resolve("nobody-here").unwrap_err().contains("nobody-here"));
        assert!(resolve("app:nogroup").unwrap_err().contains("nogroup"));
    }
}
