//! Ports for instances on the host network. The kernel's "any free port" is free only
//! at the instant it is asked, so two instances started together could be handed the
//! same one; the allocator remembers what live instances hold and never repeats it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct PortAllocator {
    in_use: Arc<Mutex<HashSet<u16>>>,
}

/// A port held for one instance; released when dropped.
pub struct PortLease {
    pub port: u16,
    in_use: Arc<Mutex<HashSet<u16>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.port);
    }
}

impl PortAllocator {
    /// Records a port this process already listens on, so no instance is given it.
    pub fn hold(&self, port: u16) -> std::io::Result<PortLease> {
        if !self.in_use.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("port {port} is held"),
            ));
        }
        Ok(PortLease {
            port,
            in_use: self.in_use.clone(),
        })
    }

    pub fn allocate(&self) -> std::io::Result<PortLease> {
        for _ in 0..64 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            if self.in_use.lock().unwrap_or_else(|p| p.into_inner()).insert(port) {
                return Ok(PortLease {
                    port,
                    in_use: self.in_use.clone(),
                });
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "no free port that no instance holds",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_held_port_twice() {
        let ports = PortAllocator::default();
        let leases: Vec<PortLease> = (0..200).map(|_| ports.allocate().unwrap()).collect();
        let distinct: HashSet<u16> = leases.iter().map(|l| l.port).collect();
        assert_eq!(distinct.len(), leases.len());
        let first = leases[0].port;
        drop(leases);
        assert!(
            ports.in_use.lock().unwrap().is_empty(),
            "released on drop, {first} included"
        );
    }
}
