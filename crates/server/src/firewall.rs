//! What a sandboxed instance may reach on this machine: the gateway and the API (both
//! ask for a token where it matters) and DNS, nothing else. Without it an instance
//! could call another namespace's instances on their loopback ports, around the
//! gateway and its checks.
//!
//! One nftables table per server matches the server's block of uids on the socket's
//! owner: it costs an instance nothing to start, where a network namespace and a veth
//! pair each would (see the README's security model for the figures).

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

pub struct Firewall {
    table: String,
}

impl Firewall {
    /// Replaces this block's table (one a crashed server left included) with one that
    /// lets `uids` open connections to this machine's addresses on `ports` only.
    pub fn install(uids: (u32, u32), ports: &[u16]) -> anyhow::Result<Firewall> {
        let table = format!("updraft-{}", uids.0);
        let _ = nft(&format!("delete table inet {table}\n"));
        nft(&rules(&table, uids, ports)).context(
            "installing the sandbox's firewall (nftables; on Debian: apt-get install nftables), or start with --sandbox off",
        )?;
        Ok(Firewall { table })
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}

fn rules(table: &str, (first, last): (u32, u32), ports: &[u16]) -> String {
    let mut ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.sort();
    ports.dedup();
    let ports = ports.join(", ");
    format!(
        "table inet {table} {{
  chain output {{
    type filter hook output priority filter; policy accept;
    meta skuid {first}-{last} ct state new fib daddr type local tcp dport != {{ 53, {ports} }} reject with tcp reset
    meta skuid {first}-{last} ct state new fib daddr type local meta l4proto udp udp dport != 53 reject
  }}
}}
"
    )
}

fn nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!("nft: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_gateway_the_api_and_dns_are_left_open() {
        let rules = super::rules("updraft-7", (100, 199), &[8081, 8080, 8080]);
        assert!(
            rules.contains(
                "meta skuid 100-199 ct state new fib daddr type local tcp dport != { 53, 8080, 8081 } reject"
            ),
            "{rules}"
        );
        assert!(rules.contains("udp dport != 53 reject"), "{rules}");
    }
}
