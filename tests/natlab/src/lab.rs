//! One lab: an "internet" bridge, the DHT namespace, and the per-run sites of a topology.
//!
//! - Every namespace is named `<prefix>-...` with `prefix = nl<pid>-<n>`; the interfaces live
//!   only inside the namespaces (a veth is created straight into its two namespaces), so the
//!   host's own network is never touched.
//! - [`Lab`] deletes what it created on drop. A janitor process (`sh`, in its own process
//!   group so Ctrl-C does not reach it, ignoring INT/TERM/HUP) waits for its stdin to close,
//!   which happens however the harness ends, then kills what runs in `<prefix>-*` namespaces
//!   and deletes them. [`Lab::new`] also sweeps namespaces of `nl<pid>-` labs whose process is
//!   gone.
//! - Internet-facing interfaces get a MAC derived from their address, so a site rebuilt for
//!   the next run does not leave stale ARP entries in the DHT namespace.
//! - Sites are rebuilt for every run: each run starts with empty conntrack tables.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{self, ip, nft, sysctl};
use crate::nft::{LAN, WAN};
use crate::peer::{Event, Peer, Vars};
use crate::topology::{Layout, Site, Topology};
use crate::Error;

/// Where the DHT nodes bind: five internet hosts, so NAT sampling sees five referrers with
/// five addresses, as on the real network.
pub const DHT_HOSTS: [Ipv4Addr; 5] = [
    Ipv4Addr::new(44, 0, 0, 11),
    Ipv4Addr::new(44, 0, 0, 12),
    Ipv4Addr::new(44, 0, 0, 13),
    Ipv4Addr::new(44, 0, 0, 14),
    Ipv4Addr::new(44, 0, 0, 15),
];
/// The DHT nodes' port (hyperdht's default).
pub const DHT_PORT: u16 = 49737;
/// How long the DHT may take to print `ready`.
pub const DHT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The lab's internet, `44.0.0.0/16`.
const INTERNET: &str = "44.0.0.0/16";
const INTERNET_PREFIX: u8 = 16;

/// Site index of the server, the client and the relay host (the third address byte).
const SERVER_SITE: u8 = 1;
const CLIENT_SITE: u8 = 2;
const RELAY_SITE: u8 = 3;

static LABS: AtomicU32 = AtomicU32::new(0);

/// Where a peer runs.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace.
    pub ns: String,
    /// Its own address (private behind a NAT).
    pub addr: Ipv4Addr,
    /// The namespace that holds the site's internet-facing interface ([`WAN`]): the host's
    /// own for an open host, else its (outermost) router's.
    pub wan_ns: String,
    /// The site's address on the internet (`44.0.<site>.1`).
    pub public: Ipv4Addr,
}

/// The namespaces of one run's topology.
#[derive(Debug)]
pub struct Sites {
    /// Where the server runs.
    pub server: Host,
    /// Where the client runs.
    pub client: Host,
    /// Where the blind relay runs, if the topology has one.
    pub relay: Option<Host>,
    /// Every namespace of these sites, deleted by [`Lab::teardown`].
    namespaces: Vec<String>,
    /// Their ports on the internet bridge, deleted first so the bridge forgets them at once.
    ports: Vec<String>,
}

/// A lab: the internet namespace with its bridge, the DHT namespace, and the janitor.
#[derive(Debug)]
pub struct Lab {
    /// `nl<pid>-<n>`: every namespace of this lab starts with it.
    prefix: String,
    /// The internet namespace: one bridge, no addresses, no routes.
    inet: String,
    /// The DHT namespace: the five DHT addresses on one interface.
    dht_ns: String,
    /// Namespaces alive now, deleted on drop (sites are removed on teardown).
    namespaces: Vec<String>,
    /// Counter for interface names on the internet bridge (`p<n>`).
    next_port: u32,
    /// Counter that keeps each run's namespace names unique.
    next_run: u32,
    /// The DHT process, once started.
    dht: Option<Peer>,
    /// The DHT's bootstrap addresses, as it printed them.
    bootstrap: Vec<SocketAddrV4>,
    /// Deletes `<prefix>-*` when its stdin closes: the cleanup that survives a killed harness.
    janitor: Option<Child>,
}

impl Lab {
    /// Installs the tools if needed, sweeps dead labs, and creates the internet and the DHT
    /// namespace (the DHT itself starts with [`Lab::start_dht`]).
    pub fn new() -> Result<Lab, Error> {
        cmd::ensure_tools()?;
        sweep_stale();
        let prefix = format!(
            "nl{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let janitor = spawn_janitor(&prefix)?;
        let mut lab = Lab {
            inet: format!("{prefix}-inet"),
            dht_ns: format!("{prefix}-dht"),
            prefix,
            namespaces: Vec::new(),
            next_port: 0,
            next_run: 0,
            dht: None,
            bootstrap: Vec::new(),
            janitor: Some(janitor),
        };
        let inet = lab.inet.clone();
        lab.add_ns(&inet)?;
        ip(&inet, &["link", "add", "br0", "type", "bridge"])?;
        ip(&inet, &["link", "set", "br0", "up"])?;
        let dht = lab.dht_ns.clone();
        lab.add_ns(&dht)?;
        // Its bridge port goes with the lab's namespaces; no need to keep the name.
        lab.internet_iface(&dht, WAN, DHT_HOSTS[0])?;
        for h in &DHT_HOSTS[1..] {
            ip(
                &dht,
                &["addr", "add", &format!("{h}/{INTERNET_PREFIX}"), "dev", WAN],
            )?;
        }
        Ok(lab)
    }

    /// This lab's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The DHT's bootstrap addresses (empty before [`Lab::start_dht`]).
    pub fn bootstrap(&self) -> &[SocketAddrV4] {
        &self.bootstrap
    }

    /// Starts the DHT nodes in the DHT namespace from a command template (`{hosts}` expands
    /// to `--host <ip>` per DHT address, `{host}` to the first, `{port}` to [`DHT_PORT`]) and
    /// waits for `bootstrap <ip:port>` lines and `ready`. Every bootstrap address must be on
    /// the lab's internet: a testnet bound to 127.0.0.1 is refused with an explanation.
    pub fn start_dht(&mut self, template: &str, base: &Vars<'_>) -> Result<(), Error> {
        let vars = Vars {
            dht_hosts: &DHT_HOSTS,
            dht_port: DHT_PORT,
            ..base.clone()
        };
        let argv = vars.expand(template);
        let mut peer = Peer::spawn("dht", &self.dht_ns, &argv)?;
        let deadline = Instant::now() + DHT_READY_TIMEOUT;
        let mut bootstrap = Vec::new();
        let ready = peer.wait_for(deadline, |e| match e {
            Event::Bootstrap(a) => {
                bootstrap.push(*a);
                None
            }
            Event::Ready => Some(()),
            _ => None,
        });
        if ready.is_none() || bootstrap.is_empty() {
            return Err(Error::Peer(format!(
                "the DHT (`{}`) printed no `bootstrap` lines and `ready` within {:?}:\n{}",
                argv.join(" "),
                DHT_READY_TIMEOUT,
                peer.transcript()
            )));
        }
        if let Some(bad) = bootstrap.iter().find(|a| !DHT_HOSTS.contains(a.ip())) {
            return Err(Error::Peer(format!(
                "the DHT bound {bad}, which peers in other namespaces cannot reach: it must bind \
                 the lab's DHT addresses ({}). (corenet's `testnet` binds 127.0.0.1 unless it \
                 honours --host.)",
                DHT_HOSTS.map(|h| h.to_string()).join(", ")
            )));
        }
        self.bootstrap = bootstrap;
        self.dht = Some(peer);
        Ok(())
    }

    /// Creates the sites of `topo` for one run, with `loss` percent UDP loss on each site's
    /// internet-facing interface.
    pub fn build(&mut self, topo: &Topology, loss: u8) -> Result<Sites, Error> {
        let tag = format!("{}-r{}", self.prefix, self.next_run);
        self.next_run += 1;
        let mut b = Building {
            namespaces: Vec::new(),
            ports: Vec::new(),
        };
        let result = self.build_into(&tag, topo, loss, &mut b);
        match result {
            Ok((server, client, relay)) => Ok(Sites {
                server,
                client,
                relay,
                namespaces: b.namespaces,
                ports: b.ports,
            }),
            Err(e) => {
                self.remove(&b.ports, &b.namespaces);
                Err(e)
            }
        }
    }

    fn build_into(
        &mut self,
        tag: &str,
        topo: &Topology,
        loss: u8,
        b: &mut Building,
    ) -> Result<(Host, Host, Option<Host>), Error> {
        let (server, client) = match topo.layout {
            Layout::Apart { server, client } => {
                let s = self.site(b, &format!("{tag}-srv"), SERVER_SITE, server, 1, loss)?;
                let c = self.site(b, &format!("{tag}-cli"), CLIENT_SITE, client, 1, loss)?;
                (s[0].clone(), c[0].clone())
            }
            Layout::SameLan(nat) => {
                let hosts = self.site(
                    b,
                    &format!("{tag}-lan"),
                    SERVER_SITE,
                    Site::Nat(nat),
                    2,
                    loss,
                )?;
                (hosts[0].clone(), hosts[1].clone())
            }
        };
        let relay = if topo.relay {
            let r = self.site(b, &format!("{tag}-relay"), RELAY_SITE, Site::Open, 1, 0)?;
            Some(r[0].clone())
        } else {
            None
        };
        Ok((server, client, relay))
    }

    /// Deletes a run's sites (processes still running in them are killed).
    pub fn teardown(&mut self, sites: Sites) {
        self.remove(&sites.ports, &sites.namespaces);
    }

    fn remove(&mut self, ports: &[String], namespaces: &[String]) {
        for p in ports {
            let _ = ip(&self.inet, &["link", "del", p]);
        }
        for ns in namespaces.iter().rev() {
            delete_ns(ns);
            self.namespaces.retain(|n| n != ns);
        }
    }

    /// Builds one site with `hosts` peer hosts; returns them.
    fn site(
        &mut self,
        b: &mut Building,
        name: &str,
        index: u8,
        site: Site,
        hosts: u8,
        loss: u8,
    ) -> Result<Vec<Host>, Error> {
        let public = Ipv4Addr::new(44, 0, index, 1);
        let lan_gw = Ipv4Addr::new(192, 168, index, 1);
        match site {
            Site::Open => {
                let ns = self.site_ns(b, name)?;
                b.ports.push(self.internet_iface(&ns, WAN, public)?);
                if loss > 0 {
                    nft(&ns, &crate::nft::loss(loss))?;
                }
                Ok(vec![Host {
                    wan_ns: ns.clone(),
                    ns,
                    addr: public,
                    public,
                }])
            }
            Site::Nat(nat) => {
                let router = self.site_ns(b, &format!("{name}-nat"))?;
                b.ports.push(self.internet_iface(&router, WAN, public)?);
                self.router(&router, nat, &format!("{lan_gw}/24"), loss)?;
                self.lan_hosts(b, name, &router, &router, index, hosts)
            }
            Site::Cgnat { isp, home } => {
                let isp_ns = self.site_ns(b, &format!("{name}-isp"))?;
                b.ports.push(self.internet_iface(&isp_ns, WAN, public)?);
                let isp_gw = Ipv4Addr::new(100, 64, index, 1);
                self.router(&isp_ns, isp, &format!("{isp_gw}/10"), loss)?;
                let home_ns = self.site_ns(b, &format!("{name}-nat"))?;
                self.lan_link(&isp_ns, &home_ns, WAN)?;
                ip(
                    &home_ns,
                    &["addr", "add", &format!("100.64.{index}.2/10"), "dev", WAN],
                )?;
                ip(&home_ns, &["link", "set", WAN, "up"])?;
                ip(
                    &home_ns,
                    &["route", "add", INTERNET, "via", &isp_gw.to_string()],
                )?;
                self.router(&home_ns, home, &format!("{lan_gw}/24"), 0)?;
                self.lan_hosts(b, name, &home_ns, &isp_ns, index, hosts)
            }
        }
    }

    /// Hosts `192.168.<index>.2..` on `router`'s LAN, routed to the internet through it
    /// (`wan_ns` holds the site's internet-facing interface).
    #[allow(clippy::too_many_arguments)]
    fn lan_hosts(
        &mut self,
        b: &mut Building,
        name: &str,
        router: &str,
        wan_ns: &str,
        index: u8,
        hosts: u8,
    ) -> Result<Vec<Host>, Error> {
        let gw = Ipv4Addr::new(192, 168, index, 1).to_string();
        let mut out = Vec::new();
        for k in 0..hosts {
            let ns = self.site_ns(
                b,
                if hosts == 1 {
                    name.to_string()
                } else {
                    format!("{name}-h{k}")
                }
                .as_str(),
            )?;
            let addr = Ipv4Addr::new(192, 168, index, 2 + k);
            self.lan_link(router, &ns, "eth0")?;
            ip(&ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&ns, &["link", "set", "eth0", "up"])?;
            ip(&ns, &["route", "add", INTERNET, "via", &gw])?;
            out.push(Host {
                ns,
                addr,
                wan_ns: wan_ns.to_string(),
                public: Ipv4Addr::new(44, 0, index, 1),
            });
        }
        Ok(out)
    }

    /// A router: LAN bridge with `lan_cidr`, forwarding on, the NAT ruleset, optional loss.
    fn router(
        &mut self,
        ns: &str,
        nat: crate::topology::Nat,
        lan_cidr: &str,
        loss: u8,
    ) -> Result<(), Error> {
        ip(ns, &["link", "add", LAN, "type", "bridge"])?;
        ip(ns, &["addr", "add", lan_cidr, "dev", LAN])?;
        ip(ns, &["link", "set", LAN, "up"])?;
        sysctl(ns, &["net.ipv4.ip_forward=1"])?;
        nft(ns, &crate::nft::router(nat))?;
        if loss > 0 {
            nft(ns, &crate::nft::loss(loss))?;
        }
        Ok(())
    }

    /// A veth from `router`'s LAN bridge to interface `ifname` in `ns`.
    fn lan_link(&mut self, router: &str, ns: &str, ifname: &str) -> Result<(), Error> {
        let port = self.port_name();
        ip(
            router,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ],
        )?;
        ip(router, &["link", "set", &port, "master", LAN, "up"])?;
        Ok(())
    }

    /// A veth from the internet bridge to `ifname` in `ns`, with `addr/16` and a MAC derived
    /// from `addr`; returns the bridge-side port name.
    fn internet_iface(&mut self, ns: &str, ifname: &str, addr: Ipv4Addr) -> Result<String, Error> {
        let port = self.port_name();
        ip(
            &self.inet,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ],
        )?;
        ip(&self.inet, &["link", "set", &port, "master", "br0", "up"])?;
        let o = addr.octets();
        let mac = format!("02:4e:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
        ip(ns, &["link", "set", ifname, "address", &mac])?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{addr}/{INTERNET_PREFIX}"),
                "dev",
                ifname,
            ],
        )?;
        ip(ns, &["link", "set", ifname, "up"])?;
        Ok(port)
    }

    fn port_name(&mut self) -> String {
        self.next_port += 1;
        format!("p{}", self.next_port)
    }

    fn site_ns(&mut self, b: &mut Building, name: &str) -> Result<String, Error> {
        self.add_ns(name)?;
        b.namespaces.push(name.to_string());
        Ok(name.to_string())
    }

    /// Creates namespace `name` with loopback up, IPv6 off and bridged traffic kept out of
    /// the IP firewall hooks (br_netfilter is on by default here).
    fn add_ns(&mut self, name: &str) -> Result<(), Error> {
        debug_assert!(name.starts_with(&self.prefix));
        cmd::run("ip", &["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(name, &["link", "set", "lo", "up"])?;
        sysctl(
            name,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        // Not every kernel has br_netfilter; where it is absent there is nothing to turn off.
        let _ = sysctl(
            name,
            &[
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ],
        );
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut dht) = self.dht.take() {
            dht.stop();
        }
        for ns in self.namespaces.drain(..).rev() {
            delete_ns(&ns);
        }
        if let Some(mut j) = self.janitor.take() {
            drop(j.stdin.take());
            let _ = j.wait();
        }
    }
}

/// What a half-built run has created, so a failure removes exactly that.
#[derive(Debug)]
struct Building {
    namespaces: Vec<String>,
    ports: Vec<String>,
}

/// Kills every process in `ns` (all started by this lab) and deletes it.
fn delete_ns(ns: &str) {
    if let Ok(pids) = cmd::run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = cmd::run("kill", &["-KILL", pid]);
        }
    }
    let _ = cmd::run("ip", &["netns", "del", ns]);
}

/// The lab namespaces that exist now.
pub fn lab_namespaces() -> Vec<String> {
    cmd::run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| lab_pid(n).is_some())
        .map(str::to_string)
        .collect()
}

/// The pid in a lab namespace name `nl<pid>-<n>-...`.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nl")?;
    let (pid, tail) = rest.split_once('-')?;
    let (n, _) = tail.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Deletes the namespaces of labs whose process is gone (a crashed run, a killed janitor).
pub fn sweep_stale() -> usize {
    let mut n = 0;
    for ns in lab_namespaces() {
        if let Some(pid) = lab_pid(&ns) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                delete_ns(&ns);
                n += 1;
            }
        }
    }
    n
}

fn spawn_janitor(prefix: &str) -> Result<Child, Error> {
    let script = format!(
        r#"trap '' INT TERM HUP
cat >/dev/null
for ns in $(ip netns list | cut -d' ' -f1); do
  case "$ns" in {prefix}-*) ;; *) continue ;; esac
  for p in $(ip netns pids "$ns"); do kill -KILL "$p"; done
  ip netns del "$ns"
done"#
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Setup(format!("janitor: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_pid_parses_only_lab_names() {
        assert_eq!(lab_pid("nl123-0-inet"), Some(123));
        assert_eq!(lab_pid("nl123-4-r7-srv-nat"), Some(123));
        assert_eq!(lab_pid("nl123-inet"), None);
        assert_eq!(lab_pid("nlx-0-inet"), None);
        assert_eq!(lab_pid("other"), None);
    }
}
