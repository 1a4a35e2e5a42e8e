//! Per-instance cgroups with memory and CPU limits, on cgroup v2 and on v1 (including
//! the hybrid layout where controllers live in v1 and `unified` has none).
//!
//! All of one server's instance groups sit under one parent named after its data
//! directory, so a restarted server finds and kills exactly what its previous run left.
//! Under it, partitions: `_shared` for the shared namespaces (and stem cells before
//! they are bound), `_exclusive.<namespace>` for each exclusive one, each with its
//! CPUs (cpuset) and the memory its instances may use together.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use updraft_model::exclusive::{format_cpu_list, parse_cpu_list, Partition, Placement};

/// Controllers whose v1 hierarchies an instance joins.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids", "cpuset"];
/// The partition of the shared namespaces. Partition names start with `_`, which no
/// instance id does (ids start like service names), so neither is taken for the other.
pub const SHARED_PARTITION: &str = "_shared";

pub(crate) const EXCLUSIVE_PREFIX: &str = "_exclusive.";

pub fn exclusive_partition(namespace: &str) -> String {
    format!("{EXCLUSIVE_PREFIX}{namespace}")
}
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The unified hierarchy mounted at this path.
    V2(PathBuf),
    /// One mount per controller; a directory may serve several (`cpu,cpuacct`).
    V1(Vec<(String, PathBuf)>),
    None,
}

/// Reads the layout from the text of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Layout {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in text.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split(' ').nth(4) else {
            continue;
        };
        let mut after = after.split(' ');
        let fstype = after.next().unwrap_or("");
        let options = after.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" => v2.push(PathBuf::from(mount_point)),
            "cgroup" => {
                for controller in options.split(',') {
                    if V1_CONTROLLERS.contains(&controller) {
                        v1.push((controller.to_string(), PathBuf::from(mount_point)));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(root) = v2.iter().find(|p| p.as_path() == Path::new("/sys/fs/cgroup")) {
        return Layout::V2(root.clone());
    }
    if v1.iter().any(|(c, _)| c == "memory") {
        v1.sort();
        return Layout::V1(v1);
    }
    match v2.into_iter().next() {
        Some(root) => Layout::V2(root),
        None => Layout::None,
    }
}

/// `cpu.max` contents for a limit in millicores.
pub fn cpu_max(millis: u32) -> String {
    format!("{} {CPU_PERIOD_US}", u64::from(millis) * CPU_PERIOD_US / 1000)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u32>,
}

/// The parent group of one server and the hierarchy it lives in.
#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
    parent: String,
    /// The namespaces whose instances go in a partition of their own.
    exclusive: Arc<RwLock<HashSet<String>>>,
}

/// The directories of one instance's group (one per v1 hierarchy, one on v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCgroup {
    pub dirs: Vec<PathBuf>,
}

impl Cgroups {
    pub fn detect(parent: &str) -> Self {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Cgroups {
            layout: parse_mountinfo(&text),
            parent: parent.to_string(),
            exclusive: Arc::default(),
        }
    }

    /// Whether the namespace's instances run on CPUs of their own.
    pub fn is_exclusive(&self, namespace: &str) -> bool {
        self.exclusive
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(namespace)
    }

    fn partition_of(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|ns| self.is_exclusive(ns)) {
            Some(ns) => exclusive_partition(ns),
            None => SHARED_PARTITION.to_string(),
        }
    }

    /// The CPUs instances may be given: those of the cpuset hierarchy's root (the
    /// machine's, or what a container around the server allows).
    pub fn cpus(&self) -> Option<Vec<u32>> {
        let text = match &self.layout {
            Layout::V2(root) => fs::read_to_string(root.join("cpuset.cpus.effective")).ok(),
            Layout::V1(mounts) => mounts
                .iter()
                .find(|(c, _)| c == "cpuset")
                .and_then(|(_, m)| fs::read_to_string(m.join("cpuset.effective_cpus")).ok()),
            Layout::None => None,
        }
        .or_else(|| fs::read_to_string("/sys/devices/system/cpu/online").ok())?;
        parse_cpu_list(&text).filter(|cpus| !cpus.is_empty())
    }

    /// Gives each partition its CPUs and memory, and sends the instances started from
    /// now on to theirs. A partition no namespace holds any more goes once it is empty.
    pub fn apply(&self, placement: &Placement) -> io::Result<()> {
        self.set_partition(SHARED_PARTITION, &placement.shared)?;
        for (namespace, partition) in &placement.exclusive {
            self.set_partition(&exclusive_partition(namespace), partition)?;
        }
        *self.exclusive.write().unwrap_or_else(|p| p.into_inner()) = placement.exclusive.keys().cloned().collect();
        let kept: HashSet<String> = placement.exclusive.keys().map(|ns| exclusive_partition(ns)).collect();
        for parent in self.parent_dirs() {
            for name in subdirs(&parent) {
                if name.starts_with(EXCLUSIVE_PREFIX) && !kept.contains(&name) {
                    let _ = fs::remove_dir(parent.join(name));
                }
            }
        }
        Ok(())
    }

    fn set_partition(&self, name: &str, partition: &Partition) -> io::Result<()> {
        let cpus = format_cpu_list(&partition.cpus);
        match &self.layout {
            Layout::V2(root) => {
                let parent = root.join(&self.parent);
                let dir = parent.join(name);
                fs::create_dir_all(&dir)?;
                for level in [root.as_path(), parent.as_path(), dir.as_path()] {
                    for controller in ["+cpuset", "+memory", "+cpu", "+pids"] {
                        let _ = fs::write(level.join("cgroup.subtree_control"), controller);
                    }
                }
                // Without a controller its file is missing, which only matters when
                // the partition is to be held to less than everything.
                let restricted = Some(&partition.cpus) != self.cpus().as_ref();
                if restricted || dir.join("cpuset.cpus").exists() {
                    fs::write(dir.join("cpuset.cpus"), &cpus)
                        .map_err(|e| io::Error::new(e.kind(), format!("the cpuset controller: {e}")))?;
                }
                if partition.memory_bytes.is_some() || dir.join("memory.max").exists() {
                    let memory = partition.memory_bytes.map_or("max".to_string(), |b| b.to_string());
                    fs::write(dir.join("memory.max"), memory)?;
                }
            }
            Layout::V1(mounts) => {
                for (controller, mount) in mounts {
                    let parent = mount.join(&self.parent);
                    let dir = parent.join(name);
                    match controller.as_str() {
                        "cpuset" => set_cpuset_v1(mount, &parent, &dir, &cpus)?,
                        "memory" => {
                            fs::create_dir_all(&dir)?;
                            let memory = partition.memory_bytes.map_or("-1".to_string(), |b| b.to_string());
                            fs::write(dir.join("memory.limit_in_bytes"), memory)?;
                        }
                        _ => fs::create_dir_all(&dir)?,
                    }
                }
            }
            Layout::None => {}
        }
        Ok(())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V2(_) => "v2",
            Layout::V1(_) => "v1",
            Layout::None => "none",
        }
    }

    fn parent_dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2(root) => vec![root.join(&self.parent)],
            Layout::V1(mounts) => {
                let mut dirs: Vec<PathBuf> = mounts.iter().map(|(_, m)| m.join(&self.parent)).collect();
                dirs.dedup();
                dirs
            }
            Layout::None => vec![],
        }
    }

    fn group(&self, partition: &str, instance: &str) -> InstanceCgroup {
        InstanceCgroup {
            dirs: self
                .parent_dirs()
                .into_iter()
                .map(|d| d.join(partition).join(instance))
                .collect(),
        }
    }

    /// The group an instance of `namespace` would have, without creating it (runc
    /// creates its own), and its path from the hierarchy's root, as runc's
    /// `cgroupsPath` takes it.
    pub fn planned(&self, instance: &str, namespace: &str) -> (String, InstanceCgroup) {
        let partition = self.partition_of(Some(namespace));
        let group = self.group(&partition, instance);
        (format!("/{}/{partition}/{instance}", self.parent), group)
    }

    /// Creates the group of one instance with its limits, in its namespace's partition
    /// (none: a stem cell, in the shared one).
    pub fn create(&self, instance: &str, namespace: Option<&str>, limits: Limits) -> io::Result<InstanceCgroup> {
        let partition = self.partition_of(namespace);
        if !self.parent_dirs().iter().all(|d| d.join(&partition).is_dir()) {
            let everything = Partition {
                cpus: self.cpus().unwrap_or_default(),
                memory_bytes: None,
            };
            self.set_partition(&partition, &everything)?;
        }
        let group = self.group(&partition, instance);
        let result = self.create_dirs(&group, limits);
        if result.is_err() {
            group.remove();
        }
        result.map(|_| group)
    }

    fn create_dirs(&self, group: &InstanceCgroup, limits: Limits) -> io::Result<()> {
        match &self.layout {
            Layout::V2(root) => {
                let parent = root.join(&self.parent);
                let partition = group.dirs[0].parent().unwrap_or(&parent).to_path_buf();
                // Controllers must be enabled on every level above the instance group, one
                // at a time: a write naming one the kernel lacks would enable none.
                for dir in [root.as_path(), parent.as_path(), partition.as_path()] {
                    for controller in ["+memory", "+cpu", "+pids"] {
                        let _ = fs::write(dir.join("cgroup.subtree_control"), controller);
                    }
                }
                fs::create_dir(&group.dirs[0])?;
            }
            Layout::V1(_) => {
                for dir in &group.dirs {
                    fs::create_dir_all(dir)?;
                }
            }
            Layout::None => {}
        }
        group.set_limits(limits)
    }

    /// Kills and removes every instance group a previous run left in the partitions
    /// (or, from before there were partitions, right under the parent).
    pub fn reap_all(&self) -> usize {
        let mut groups = Vec::new();
        for parent in self.parent_dirs() {
            for name in subdirs(&parent) {
                match name.starts_with('_') {
                    true => groups.extend(subdirs(&parent.join(&name)).into_iter().map(|g| (name.clone(), g))),
                    false => groups.push((String::new(), name)),
                }
            }
        }
        groups.sort();
        groups.dedup();
        for (partition, name) in &groups {
            let group = self.group(partition, name);
            group.kill_all();
            group.remove();
        }
        groups.len()
    }
}

/// The names of the groups right under `dir`.
fn subdirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A v1 cpuset group's CPUs. New groups hold none (no process may join them) until
/// given CPUs and memory nodes, so the parent takes the root's first, and
/// `clone_children` has the instance groups made later copy the partition's. A
/// partition cannot drop a CPU a child still holds: its children shrink first.
fn set_cpuset_v1(root: &Path, parent: &Path, dir: &Path, cpus: &str) -> io::Result<()> {
    let read = |dir: &Path, file: &str| fs::read_to_string(dir.join(file)).unwrap_or_default();
    for (level, above) in [(parent, root), (dir, parent)] {
        fs::create_dir_all(level)?;
        if read(level, "cpuset.mems").trim().is_empty() {
            fs::write(level.join("cpuset.mems"), read(above, "cpuset.mems").trim())?;
        }
        fs::write(level.join("cgroup.clone_children"), "1")?;
    }
    if read(parent, "cpuset.cpus").trim().is_empty() {
        fs::write(parent.join("cpuset.cpus"), read(root, "cpuset.cpus").trim())?;
    }
    let children: Vec<PathBuf> = subdirs(dir).into_iter().map(|name| dir.join(name)).collect();
    if fs::write(dir.join("cpuset.cpus"), cpus).is_err() {
        for child in &children {
            let _ = fs::write(child.join("cpuset.cpus"), cpus);
        }
        fs::write(dir.join("cpuset.cpus"), cpus)?;
    }
    for child in &children {
        let _ = fs::write(child.join("cpuset.cpus"), cpus);
    }
    Ok(())
}

impl InstanceCgroup {
    /// Paths of the `cgroup.procs` files the child writes itself into before exec.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok())
            .collect()
    }

    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .flat_map(|d| {
                fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the group, including ones that left the process group.
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            if fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                return;
            }
        }
        // A forking process can add members while we kill, so go round until empty.
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Removes the group's directories; the kernel refuses while members remain, so
    /// this retries briefly after a kill.
    pub fn remove(&self) {
        for dir in &self.dirs {
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }

    /// The same group under another name beside it (cgroupfs allows renames within a
    /// parent, members included), so a group made ahead can take its instance's name.
    pub fn rename(&self, name: &str) -> io::Result<InstanceCgroup> {
        let mut renamed = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            let to = dir.with_file_name(name);
            fs::rename(dir, &to)?;
            renamed.push(to);
        }
        Ok(InstanceCgroup { dirs: renamed })
    }

    /// Writes memory and CPU limits into whichever of the group's directories hold
    /// those controllers (v2: `memory.max`, `cpu.max`; v1: `memory.limit_in_bytes`,
    /// `cpu.cfs_quota_us`).
    pub fn set_limits(&self, limits: Limits) -> io::Result<()> {
        for dir in &self.dirs {
            if let Some(bytes) = limits.memory_bytes {
                if dir.join("memory.max").exists() {
                    fs::write(dir.join("memory.max"), bytes.to_string())?;
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                }
                if dir.join("memory.limit_in_bytes").exists() {
                    fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
                }
            }
            if let Some(millis) = limits.cpu_millis {
                if dir.join("cpu.max").exists() {
                    fs::write(dir.join("cpu.max"), cpu_max(millis))?;
                }
                if dir.join("cpu.cfs_quota_us").exists() {
                    fs::write(dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string())?;
                    let quota = u64::from(millis) * CPU_PERIOD_US / 1000;
                    fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// CPU time used and memory held by the group now, as far as the kernel tells.
    pub fn usage(&self) -> Usage {
        let read = |name: &str| self.dirs.iter().find_map(|d| fs::read_to_string(d.join(name)).ok());
        let cpu_ns = match read("cpu.stat").and_then(|t| stat_value(&t, "usage_usec")) {
            Some(usec) => Some(usec * 1000),
            None => read("cpuacct.usage").and_then(|t| t.trim().parse().ok()),
        };
        let memory_bytes = match read("memory.current") {
            Some(current) => current.trim().parse().ok(),
            None => read("memory.usage_in_bytes")
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|usage| working_set(usage, read("memory.stat").as_deref().unwrap_or(""))),
        };
        Usage { cpu_ns, memory_bytes }
    }

    /// The memory limit the kernel holds for this group, as text.
    pub fn memory_limit_file(&self) -> Option<PathBuf> {
        self.dirs.iter().find_map(|d| {
            ["memory.max", "memory.limit_in_bytes"]
                .iter()
                .map(|f| d.join(f))
                .find(|p| p.exists())
        })
    }
}

/// A group's CPU time (total, ns) and memory (working set, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub cpu_ns: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// A `key value` line of a cgroup stat file.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Usage less the page cache the kernel can drop at once, as Kubernetes counts the
/// working set on cgroup v1.
fn working_set(usage: u64, stat: &str) -> u64 {
    usage.saturating_sub(stat_value(stat, "total_inactive_file").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_files_are_read_as_the_kernel_writes_them() {
        assert_eq!(
            stat_value("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(stat_value("usage_usec_x 1\n", "usage_usec"), None);
        assert_eq!(working_set(1000, "cache 10\ntotal_inactive_file 300\n"), 700);
        assert_eq!(working_set(1000, ""), 1000);
    }

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
32 25 0:29 / /sys/fs/cgroup/pids rw shared:16 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/cpuset rw shared:17 - cgroup cgroup rw,cpuset
";
    /// Where a cgroup2 hierarchy is mounted: the root on v2 machines, `unified` on hybrid.
    fn cgroup2_mount() -> Option<PathBuf> {
        let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let mount_point = before.split(' ').nth(4)?;
            after.starts_with("cgroup2 ").then(|| PathBuf::from(mount_point))
        })
    }

    #[test]
    fn v2_groups_hold_kill_and_remove_processes() {
        let root = cgroup2_mount().expect("a cgroup2 hierarchy is mounted (v2, or hybrid's unified)");
        let controllers = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let can_limit = controllers.contains("memory") && controllers.contains("cpu");
        let cgroups = Cgroups {
            layout: Layout::V2(root.clone()),
            parent: format!("updraft-test-{}", std::process::id()),
            exclusive: Arc::default(),
        };
        let limits = if can_limit {
            Limits {
                memory_bytes: Some(64 << 20),
                cpu_millis: Some(500),
            }
        } else {
            Limits::default()
        };
        let group = cgroups.create("instance", Some("team"), limits).unwrap();
        assert_eq!(
            group.dirs,
            [root.join(&cgroups.parent).join(SHARED_PARTITION).join("instance")]
        );
        if can_limit {
            assert_eq!(
                fs::read_to_string(group.dirs[0].join("memory.max")).unwrap().trim(),
                (64u64 << 20).to_string()
            );
            assert_eq!(
                fs::read_to_string(group.dirs[0].join("cpu.max")).unwrap().trim(),
                "50000 100000"
            );
        }

        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(group.dirs[0].join("cgroup.procs"), child.id().to_string()).unwrap();
        assert_eq!(group.pids(), [child.id() as i32]);
        group.kill_all();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        group.remove();
        assert!(!group.dirs[0].exists());
        assert_eq!(cgroups.reap_all(), 0);
        fs::remove_dir(root.join(&cgroups.parent).join(SHARED_PARTITION)).unwrap();
        fs::remove_dir(root.join(&cgroups.parent)).unwrap();
    }

    const V2: &str = "\
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_uses_v1_controllers() {
        let Layout::V1(mounts) = parse_mountinfo(HYBRID) else {
            panic!()
        };
        let names: Vec<&str> = mounts.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "cpuset", "memory", "pids"]);
        let cg = Cgroups {
            layout: Layout::V1(mounts),
            parent: "updraft-x".into(),
            exclusive: Arc::default(),
        };
        assert_eq!(cg.parent_dirs().len(), 4, "cpu and cpuacct share a mount");
    }

    #[test]
    fn unified_root_is_v2() {
        assert_eq!(parse_mountinfo(V2), Layout::V2("/sys/fs/cgroup".into()));
        assert_eq!(parse_mountinfo(""), Layout::None);
    }

    #[test]
    fn cpu_max_is_quota_over_period() {
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
    }
}
