//! The threads wasm guests run on: one pool per partition, each held to its
//! partition's CPUs. A component runs inside the server process, where cgroups cannot
//! place it apart from the rest, but the affinity of the threads that run it can: a
//! shared namespace's busy component then stays off an exclusive namespace's CPUs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::{gettid, Pid};
use updraft_model::exclusive::{Partition, Placement};

use crate::cgroup::{exclusive_partition, EXCLUSIVE_PREFIX, SHARED_PARTITION};

/// The pools of the partitions, once the partitions are known.
#[derive(Default)]
pub struct WasmThreads {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    placement: Option<Placement>,
    pools: HashMap<String, Arc<PartitionPool>>,
}

/// A tokio runtime whose threads run only on one partition's CPUs.
pub struct PartitionPool {
    runtime: Option<tokio::runtime::Runtime>,
    pinning: Arc<Mutex<Pinning>>,
}

#[derive(Default)]
struct Pinning {
    cpus: Vec<u32>,
    threads: HashSet<Pid>,
}

impl Pinning {
    fn pin(&self, thread: Pid) {
        let mut set = CpuSet::new();
        for cpu in &self.cpus {
            if set.set(*cpu as usize).is_err() {
                return;
            }
        }
        if let Err(e) = sched_setaffinity(thread, &set) {
            tracing::warn!(thread = thread.as_raw(), error = %e, "cannot hold a wasm thread to its CPUs");
        }
    }
}

impl PartitionPool {
    fn start(partition: &str, cpus: &[u32]) -> std::io::Result<PartitionPool> {
        let pinning = Arc::new(Mutex::new(Pinning {
            cpus: cpus.to_vec(),
            threads: HashSet::new(),
        }));
        let (starting, stopping) = (pinning.clone(), pinning.clone());
        // Thread names hold 15 bytes: the namespace, not the partition's longer name.
        let label = partition.strip_prefix(EXCLUSIVE_PREFIX).unwrap_or("shared");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus.len().max(1))
            .thread_name(format!("wasm:{label}"))
            .enable_all()
            .on_thread_start(move || {
                let mut pinning = starting.lock().unwrap_or_else(|p| p.into_inner());
                let thread = gettid();
                pinning.threads.insert(thread);
                pinning.pin(thread);
            })
            .on_thread_stop(move || {
                stopping
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .threads
                    .remove(&gettid());
            })
            .build()?;
        Ok(PartitionPool {
            runtime: Some(runtime),
            pinning,
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("a pool's runtime lives as long as the pool")
            .handle()
    }

    fn repin(&self, cpus: &[u32]) {
        let mut pinning = self.pinning.lock().unwrap_or_else(|p| p.into_inner());
        if pinning.cpus == cpus {
            return;
        }
        pinning.cpus = cpus.to_vec();
        for thread in &pinning.threads {
            pinning.pin(*thread);
        }
    }
}

impl Drop for PartitionPool {
    fn drop(&mut self) {
        // The last instance of a pool may be dropped on a runtime, where waiting for
        // the pool's threads to finish is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn partition_of<'p>(placement: &'p Placement, namespace: &str) -> (String, &'p Partition) {
    match placement.exclusive.get(namespace) {
        Some(partition) => (exclusive_partition(namespace), partition),
        None => (SHARED_PARTITION.to_string(), &placement.shared),
    }
}

impl WasmThreads {
    /// The pool the namespace's next instance runs on; none before the partitions
    /// are placed (the caller's runtime then runs it).
    pub fn pool_for(&self, namespace: &str) -> std::io::Result<Option<Arc<PartitionPool>>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { placement, pools } = &mut *state;
        let Some(placement) = placement else { return Ok(None) };
        let (name, partition) = partition_of(placement, namespace);
        if let Some(pool) = pools.get(&name) {
            return Ok(Some(pool.clone()));
        }
        let pool = Arc::new(PartitionPool::start(&name, &partition.cpus)?);
        pools.insert(name, pool.clone());
        Ok(Some(pool))
    }

    /// Holds every pool to its partition's CPUs as placed now. The pool of a
    /// partition that is gone keeps its running instances, on the shared CPUs.
    pub fn apply(&self, placement: &Placement) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.pools.retain(|name, pool| {
            let kept = name
                .strip_prefix(EXCLUSIVE_PREFIX)
                .and_then(|namespace| placement.exclusive.get(namespace))
                .or((name == SHARED_PARTITION).then_some(&placement.shared));
            pool.repin(&kept.unwrap_or(&placement.shared).cpus);
            kept.is_some()
        });
        state.placement = Some(placement.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn placement(shared: &[u32], exclusive: &[(&str, &[u32])]) -> Placement {
        Placement {
            shared: Partition {
                cpus: shared.to_vec(),
                memory_bytes: None,
            },
            exclusive: exclusive
                .iter()
                .map(|(ns, cpus)| {
                    (
                        ns.to_string(),
                        Partition {
                            cpus: cpus.to_vec(),
                            memory_bytes: None,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn allowed_cpus(pool: &PartitionPool) -> Vec<u32> {
        pool.handle().block_on(async {
            tokio::spawn(async {
                let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
                (0..CpuSet::count() as u32)
                    .filter(|c| set.is_set(*c as usize).unwrap())
                    .collect()
            })
            .await
            .unwrap()
        })
    }

    #[test]
    fn pools_run_on_their_partitions_cpus_and_follow_a_new_placement() {
        let threads = WasmThreads::default();
        assert!(threads.pool_for("gold").unwrap().is_none(), "nothing placed yet");

        threads.apply(&placement(&[0], &[("gold", &[1])]));
        let gold = threads.pool_for("gold").unwrap().unwrap();
        let shared = threads.pool_for("default").unwrap().unwrap();
        assert!(Arc::ptr_eq(&shared, &threads.pool_for("other").unwrap().unwrap()));
        assert_eq!(allowed_cpus(&gold), [1]);
        assert_eq!(allowed_cpus(&shared), [0]);

        // Gold goes back to shared: its pool keeps its instances, on the shared CPUs,
        // and gold's next instances go to the shared pool.
        threads.apply(&placement(&[0, 1], &[]));
        assert_eq!(allowed_cpus(&gold), [0, 1]);
        assert_eq!(allowed_cpus(&shared), [0, 1]);
        assert!(Arc::ptr_eq(&shared, &threads.pool_for("gold").unwrap().unwrap()));
    }
}
