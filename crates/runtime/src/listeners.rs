//! Who listens on a port: socket inodes in LISTEN state from the kernel's `sock_diag`
//! netlink interface, matched against the sockets a set of processes holds. Readiness
//! needs this on the host network, where a stranger may hold the port an instance was
//! given. (`/proc/net/tcp` answers the same question, but the kernel walks every
//! connection to print it: ~9 ms with a few hundred sockets. A LISTEN-only dump walks
//! only the listeners.)

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::mem::size_of;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagMsg {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: InetDiagSockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

#[repr(C)]
struct Request {
    header: NlMsgHdr,
    body: InetDiagReqV2,
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

/// The TCP sockets of `family` listening on `port` (on any, with `None`): inode → port.
fn dump_listeners(family: u8, port: Option<u16>, found: &mut HashMap<u64, u16>) -> io::Result<()> {
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = Fd(fd);
    let request = Request {
        header: NlMsgHdr {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            seq: 1,
            pid: 0,
        },
        body: InetDiagReqV2 {
            family,
            protocol: libc::IPPROTO_TCP as u8,
            states: 1 << TCP_LISTEN,
            ..Default::default()
        },
    };
    let sent = unsafe { libc::send(fd.0, (&request as *const Request).cast(), size_of::<Request>(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut offset = 0usize;
        while offset + size_of::<NlMsgHdr>() <= n as usize {
            // SAFETY: bounds checked above; read_unaligned copes with any alignment.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
            match header.kind as i32 {
                libc::NLMSG_DONE => return Ok(()),
                libc::NLMSG_ERROR => return Err(io::Error::other("sock_diag answered with an error")),
                _ => {}
            }
            let body = offset + size_of::<NlMsgHdr>();
            if body + size_of::<InetDiagMsg>() <= n as usize {
                let msg: InetDiagMsg = unsafe { std::ptr::read_unaligned(buf[body..].as_ptr().cast()) };
                let local = u16::from_be(msg.id.sport);
                if port.is_none_or(|p| p == local) {
                    found.insert(u64::from(msg.inode), local);
                }
            }
            if header.len == 0 {
                return Ok(());
            }
            // Messages are padded to 4 bytes (NLMSG_ALIGN).
            offset += (header.len as usize + 3) & !3;
        }
    }
}

/// Inodes of the TCP sockets listening on `port`, over IPv4 and IPv6.
pub fn listening_inodes(port: u16) -> io::Result<HashSet<u64>> {
    Ok(listeners(Some(port))?.into_keys().collect())
}

fn listeners(port: Option<u16>) -> io::Result<HashMap<u64, u16>> {
    let mut found = HashMap::new();
    dump_listeners(libc::AF_INET as u8, port, &mut found)?;
    dump_listeners(libc::AF_INET6 as u8, port, &mut found)?;
    Ok(found)
}

/// The inodes of the sockets `pids` hold open.
fn socket_inodes(pids: &[i32]) -> impl Iterator<Item = u64> + '_ {
    pids.iter().flat_map(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| {
                let target = fs::read_link(fd.path()).ok()?;
                target
                    .to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
    })
}

/// The TCP ports `pids` listen on, in order.
pub fn ports_listened_by(pids: &[i32]) -> Vec<u16> {
    let Ok(listening) = listeners(None) else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = socket_inodes(pids)
        .filter_map(|inode| listening.get(&inode).copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The same from the text of `/proc/net/tcp` or `tcp6`, for kernels without `tcp_diag`.
fn listening_inodes_in_table(table: &str, port: u16) -> HashSet<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == LISTEN;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// Whether one of `pids` holds a socket listening on `port`.
pub fn port_owned_by(port: u16, pids: &[i32]) -> bool {
    let inodes = listening_inodes(port).unwrap_or_else(|_| {
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .flat_map(|t| listening_inodes_in_table(&fs::read_to_string(t).unwrap_or_default(), port))
            .collect()
    });
    if inodes.is_empty() {
        return false;
    }
    socket_inodes(pids).any(|inode| inodes.contains(&inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listeners_of_both_families_and_only_on_their_port() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let (p4, p6) = (v4.local_addr().unwrap().port(), v6.local_addr().unwrap().port());
        assert_eq!(listening_inodes(p4).unwrap().len(), 1);
        assert_eq!(listening_inodes(p6).unwrap().len(), 1);
        // A connected socket on a listener's port is not a listener.
        let _client = std::net::TcpStream::connect(("127.0.0.1", p4)).unwrap();
        assert_eq!(listening_inodes(p4).unwrap().len(), 1);
        drop(v4);
        assert!(listening_inodes(p4).unwrap().is_empty());
    }

    #[test]
    fn the_proc_table_fallback_reads_only_listeners() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(listening_inodes_in_table(table, 8080), HashSet::from([4242]));
        assert!(listening_inodes_in_table(table, 80).is_empty());
    }

    #[test]
    fn a_process_owns_its_own_listener_and_not_another() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(port_owned_by(port, &[std::process::id() as i32]));
        assert!(!port_owned_by(port, &[1]), "pid 1 does not hold this test's socket");
    }
}
