//! Pod networking: one network namespace per pod, a veth pair with the
//! host end on the cluster bridge, an address from the node's /24 and a
//! default route through the host. Done with `ip`, as a CNI plugin would.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

/// Prefix of every namespace and host-side veth this node creates, so a
/// restart can find and remove what a previous run left.
pub const PREFIX: &str = "llorch-";
const VETH_PREFIX: &str = "lv";

/// Pod addresses in use.
#[derive(Debug)]
pub struct IpPool {
    net: [u8; 3],
    first: u8,
    last: u8,
    used: Mutex<BTreeSet<u8>>,
}

impl IpPool {
    pub fn new(host: Ipv4Addr, first: u8, last: u8) -> IpPool {
        let [a, b, c, _] = host.octets();
        IpPool {
            net: [a, b, c],
            first,
            last,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn take(&self) -> Result<Ipv4Addr> {
        let mut used = self
            .used
            .lock()
            .map_err(|_| anyhow::anyhow!("ip pool poisoned"))?;
        let Some(n) = (self.first..=self.last).find(|n| !used.contains(n)) else {
            bail!(
                "no pod address left in {}.{}.{}.0/24",
                self.net[0],
                self.net[1],
                self.net[2]
            );
        };
        used.insert(n);
        Ok(Ipv4Addr::new(self.net[0], self.net[1], self.net[2], n))
    }

    pub fn give_back(&self, ip: Ipv4Addr) {
        if let Ok(mut used) = self.used.lock() {
            used.remove(&ip.octets()[3]);
        }
    }
}

/// The absolute path of `ip`, so a container's own PATH never matters.
pub fn ip_binary() -> &'static str {
    static IP: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    IP.get_or_init(|| {
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("ip")
    })
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_binary())
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespace name of a pod (`llorch-` and 8 hex digits of its uid).
pub fn netns_name(uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("{PREFIX}{short}")
}

/// The MAC of a pod's `eth0`: `0a:58:` and the four bytes of its address.
fn mac_of(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Creates `ns` with `eth0` at `addr`, attached to `bridge` through `gw`.
pub fn create(ns: &str, addr: Ipv4Addr, gw: Ipv4Addr, bridge: &str) -> Result<()> {
    let short = &ns[PREFIX.len()..];
    let host_if = format!("{VETH_PREFIX}{short}");
    let tmp_if = format!("lp{short}");
    let _ = delete(ns);
    ip(&["netns", "add", ns])?;
    let result = (|| {
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &tmp_if,
        ])?;
        ip(&["link", "set", &tmp_if, "netns", ns])?;
        ip(&["link", "set", &host_if, "master", bridge, "up"])?;
        ip(&["-n", ns, "link", "set", &tmp_if, "name", "eth0"])?;
        // The MAC follows the address, as the CNI bridge plugin sets it: a
        // pod that gets the address of one that went keeps its MAC, so
        // neighbours' ARP entries for the address stay right (a fresh MAC
        // would leave other pods sending to the old one until their entry
        // expires, tens of seconds).
        ip(&["-n", ns, "link", "set", "eth0", "address", &mac_of(addr)])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &gw.to_string()])
    })();
    if result.is_err() {
        let _ = delete(ns);
    }
    result
}

/// Deletes `ns` (its veth pair goes with it); kills what still runs in it.
pub fn delete(ns: &str) -> Result<()> {
    if let Ok(out) = Command::new(ip_binary())
        .args(["netns", "pids", ns])
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) with a pid read from the kernel; no memory involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let short = &ns[PREFIX.len().min(ns.len())..];
    let _ = ip(&["link", "del", &format!("{VETH_PREFIX}{short}")]);
    ip(&["netns", "delete", ns])
}

/// Removes the namespaces of the pods this node ran (found by their
/// directories under `state_dir/pods`, named `NS_POD_UID`), so a restart
/// cleans up after a crash, and other nodes on the machine are left alone.
pub fn delete_stale(state_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return;
    };
    let Ok(out) = Command::new(ip_binary()).args(["netns", "list"]).output() else {
        return;
    };
    let existing = String::from_utf8_lossy(&out.stdout).into_owned();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(uid) = name.rsplit('_').next() else {
            continue;
        };
        let ns = netns_name(uid);
        if existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns.as_str()))
        {
            tracing::info!(netns = %ns, "removing a namespace left by an earlier run");
            let _ = delete(&ns);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pod_mac_follows_its_address() {
        assert_eq!(
            super::mac_of(std::net::Ipv4Addr::new(10, 244, 0, 15)),
            "0a:58:0a:f4:00:0f"
        );
    }

    use super::*;

    #[test]
    fn pool_hands_out_each_address_once() {
        let pool = IpPool::new(Ipv4Addr::new(10, 244, 0, 1), 10, 11);
        let a = pool.take().expect("a");
        let b = pool.take().expect("b");
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 244, 0, 10), Ipv4Addr::new(10, 244, 0, 11))
        );
        assert!(pool.take().is_err());
        pool.give_back(a);
        assert_eq!(pool.take().expect("again"), a);
        assert_eq!(netns_name("6f1c2d3e-aaaa-bbbb"), "llorch-6f1c2d3e");
    }
}
