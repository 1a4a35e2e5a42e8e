//! Shared and exclusive editions on one machine: the CPUs an exclusive namespace
//! holds for itself and the memory reserved for it, and what is left to the shared
//! namespaces. Pure: the machine's CPUs and memory are parameters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// What an exclusive (dedicated) namespace holds on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exclusive {
    /// CPUs only this namespace's instances run on.
    #[schema(minimum = 1, maximum = 1024)]
    pub cpus: u32,
    /// Memory only this namespace's instances may use, all together; shared
    /// namespaces' instances together cannot take it.
    #[schema(minimum = 67108864, maximum = 9223372036854775807_i64)]
    pub memory_bytes: u64,
}

/// Less than this and the reservation cannot hold one instance.
pub const MIN_RESERVED_MEMORY: u64 = 64 << 20;
/// What the shared namespaces (and the server) always keep.
pub const MIN_SHARED_MEMORY: u64 = 256 << 20;

/// The CPUs and memory the platform may give out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// CPU ids, ascending.
    pub cpus: Vec<u32>,
    pub memory_bytes: u64,
}

/// Where one group of namespaces runs: its CPUs, and the memory its instances may use
/// together (none: no cap beyond the machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub cpus: Vec<u32>,
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub shared: Partition,
    pub exclusive: BTreeMap<String, Partition>,
}

impl Exclusive {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.cpus == 0 || self.cpus > 1024 {
            return Err(FieldError::new(
                "exclusive.cpus",
                format!("{} is out of range: from 1 to 1024", self.cpus),
            ));
        }
        if self.memory_bytes < MIN_RESERVED_MEMORY || self.memory_bytes > i64::MAX as u64 {
            return Err(FieldError::new(
                "exclusive.memory_bytes",
                format!(
                    "{} is out of range: from {MIN_RESERVED_MEMORY} (64Mi) to {}",
                    self.memory_bytes,
                    i64::MAX
                ),
            ));
        }
        Ok(())
    }
}

/// Gives each exclusive namespace, in name order, CPUs from the highest id down and
/// its reserved memory; the shared namespaces keep the other CPUs (at least one) and
/// the memory not reserved (at least [`MIN_SHARED_MEMORY`]).
pub fn place(machine: &Machine, exclusive: &BTreeMap<String, Exclusive>) -> Result<Placement, FieldError> {
    let wanted_cpus: u32 = exclusive.values().map(|e| e.cpus).sum();
    let available = machine.cpus.len().saturating_sub(1) as u32;
    if wanted_cpus > available {
        return Err(FieldError::new(
            "exclusive.cpus",
            format!(
                "exclusive namespaces would hold {wanted_cpus} CPUs; this machine has {}, and shared namespaces keep one: at most {available} in all",
                machine.cpus.len()
            ),
        ));
    }
    let reserved: u64 = exclusive.values().map(|e| e.memory_bytes).sum();
    let reservable = machine.memory_bytes.saturating_sub(MIN_SHARED_MEMORY);
    if reserved > reservable {
        return Err(FieldError::new(
            "exclusive.memory_bytes",
            format!(
                "exclusive namespaces would reserve {reserved} bytes; this machine has {}, and shared namespaces keep {MIN_SHARED_MEMORY}: at most {reservable} in all",
                machine.memory_bytes
            ),
        ));
    }
    let mut free = machine.cpus.clone();
    let mut placed = BTreeMap::new();
    for (namespace, wants) in exclusive {
        let mut cpus = free.split_off(free.len() - wants.cpus as usize);
        cpus.sort_unstable();
        placed.insert(
            namespace.clone(),
            Partition {
                cpus,
                memory_bytes: Some(wants.memory_bytes),
            },
        );
    }
    Ok(Placement {
        shared: Partition {
            cpus: free,
            memory_bytes: (reserved > 0).then(|| machine.memory_bytes - reserved),
        },
        exclusive: placed,
    })
}

/// Reads a kernel CPU list (`0-3,8,10-11`); `None` if it is not one.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to): (u32, u32) = (from.parse().ok()?, to.parse().ok()?);
                if from > to || to - from > 4096 {
                    return None;
                }
                cpus.extend(from..=to);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Writes CPU ids as the kernel takes them (`0,2,3`).
pub fn format_cpu_list(cpus: &[u32]) -> String {
    cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn machine(cpus: u32) -> Machine {
        Machine {
            cpus: (0..cpus).collect(),
            memory_bytes: 8 * GI,
        }
    }

    fn wants(entries: &[(&str, u32, u64)]) -> BTreeMap<String, Exclusive> {
        entries
            .iter()
            .map(|(ns, cpus, memory_bytes)| {
                (
                    ns.to_string(),
                    Exclusive {
                        cpus: *cpus,
                        memory_bytes: *memory_bytes,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn exclusive_namespaces_take_cpus_from_the_top_and_memory_from_the_shared() {
        let placed = place(&machine(8), &wants(&[("a", 2, GI), ("b", 1, 2 * GI)])).unwrap();
        assert_eq!(placed.exclusive["a"].cpus, [6, 7]);
        assert_eq!(placed.exclusive["b"].cpus, [5]);
        assert_eq!(placed.exclusive["b"].memory_bytes, Some(2 * GI));
        assert_eq!(placed.shared.cpus, [0, 1, 2, 3, 4]);
        assert_eq!(placed.shared.memory_bytes, Some(5 * GI));
        let none = place(&machine(2), &BTreeMap::new()).unwrap();
        assert_eq!(none.shared.cpus, [0, 1]);
        assert_eq!(none.shared.memory_bytes, None, "no reservation, no cap");
    }

    #[test]
    fn shared_namespaces_always_keep_a_cpu_and_some_memory() {
        let e = place(&machine(2), &wants(&[("a", 1, GI), ("b", 1, GI)])).unwrap_err();
        assert_eq!(e.field, "exclusive.cpus");
        assert!(e.message.contains("at most 1 in all"), "{e}");
        assert!(place(&machine(2), &wants(&[("a", 1, GI)])).is_ok());
        let e = place(&machine(4), &wants(&[("a", 1, 8 * GI - MIN_SHARED_MEMORY + 1)])).unwrap_err();
        assert_eq!(e.field, "exclusive.memory_bytes");
    }

    #[test]
    fn reservations_are_checked() {
        let ok = Exclusive {
            cpus: 1,
            memory_bytes: MIN_RESERVED_MEMORY,
        };
        assert!(ok.validate().is_ok());
        let e = Exclusive { cpus: 0, ..ok }.validate().unwrap_err();
        assert_eq!(e.field, "exclusive.cpus");
        let e = Exclusive {
            memory_bytes: 1 << 20,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "exclusive.memory_bytes");
    }

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        for bad in ["3-1", "a", "0-999999", "1,,x"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad}");
        }
        assert_eq!(format_cpu_list(&[0, 2, 3]), "0,2,3");
    }
}
