//! Who listens on a port: the socket inodes in LISTEN state from `/proc/net/tcp{,6}`,
//! matched against the sockets a set of processes holds. Readiness needs this on the
//! host network, where a stranger may hold the port an instance was given.

use std::collections::HashSet;
use std::fs;

const TCP_LISTEN: &str = "0A";

/// Socket inodes listening on `port`, from the text of `/proc/net/tcp` or `tcp6`.
pub fn listening_inodes(table: &str, port: u16) -> HashSet<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == TCP_LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// Whether one of `pids` holds a socket listening on `port`.
pub fn port_owned_by(port: u16, pids: &[i32]) -> bool {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        inodes.extend(listening_inodes(&fs::read_to_string(table).unwrap_or_default(), port));
    }
    if inodes.is_empty() {
        return false;
    }
    pids.iter().any(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                fs::read_link(fd.path())
                    .ok()
                    .and_then(|target| {
                        target
                            .to_str()?
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .parse::<u64>()
                            .ok()
                    })
                    .is_some_and(|inode| inodes.contains(&inode))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_only_listening_sockets_on_the_port() {
        assert_eq!(listening_inodes(TABLE, 8080), HashSet::from([4242]));
        assert_eq!(listening_inodes(TABLE, 80), HashSet::from([4444]));
        assert!(listening_inodes(TABLE, 9999).is_empty());
    }

    #[test]
    fn a_process_owns_its_own_listener_and_not_another() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_owned_by(port, &[std::process::id() as i32]));
        assert!(!port_owned_by(port, &[1]), "pid 1 does not hold this test's socket");
    }
}
