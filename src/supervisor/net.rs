//! The supervisor's side of the project network (see [`crate::network`]): the bridge with
//! its subnet and the services' virtual addresses, chosen and made under a lock shared by
//! every rcompose process (so that two projects coming up at once never pick the same
//! subnet); an address per pod replica; the pods' `/etc/hosts` and `/etc/resolv.conf`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Supervisor, SupervisorError};
use crate::balancer;
use crate::network::{self, NetworkError, Subnet, link};

/// The project network as the supervisor keeps it (and `state.json` records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectNet {
    /// The bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// The bridge's address: the pods' gateway.
    pub gateway: Ipv4Addr,
    /// Each service's virtual address (on the bridge).
    #[serde(default)]
    pub services: BTreeMap<String, Ipv4Addr>,
}

/// The lock every rcompose process takes to choose a subnet and make its bridge.
fn lock(run_root: &Path) -> Result<Flock<File>, SupervisorError> {
    let path = run_root.join("network.lock");
    let io = |source| SupervisorError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(run_root).map_err(io)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))
}

impl From<balancer::BalancerError> for SupervisorError {
    fn from(source: balancer::BalancerError) -> Self {
        SupervisorError::Balancer { source }
    }
}

impl From<NetworkError> for SupervisorError {
    fn from(source: NetworkError) -> Self {
        SupervisorError::Network { source }
    }
}

impl Supervisor {
    /// Makes the project network when a pod of the desired state is on it and it does not
    /// exist yet (the subnet the manifest names, else a free /24 of the default pool; the
    /// choice is recorded in `state.json` before the bridge is made), and gives each
    /// service a virtual address on the bridge (a new service a new one; a service gone
    /// loses its own).
    pub(super) fn ensure_network(&mut self) -> Result<(), SupervisorError> {
        let wanted = self.opts.desired.pods.values().any(|p| p.network);
        if !wanted && self.net.is_none() {
            return Ok(());
        }
        if self.net.is_none() {
            let bridge = network::bridge_name(&self.paths.project);
            let run_root = self.paths.dir.parent().unwrap_or(Path::new("/"));
            let _lock = lock(run_root)?;
            let routes = network::host_routes(&self.opts.proc_root)?;
            let subnet = match self.opts.desired.subnet {
                Some(subnet) => {
                    if let Some(what) = network::conflict(subnet, &routes, &bridge) {
                        return Err(NetworkError::InUse { subnet, what }.into());
                    }
                    subnet
                }
                None => {
                    let pool: Subnet = network::DEFAULT_POOL
                        .parse()
                        .unwrap_or_else(|_| Subnet::new(Ipv4Addr::new(10, 90, 0, 0), 16));
                    network::choose_subnet(pool, &routes, &bridge)?
                }
            };
            let gateway = network::gateway(subnet);
            self.net = Some(ProjectNet {
                bridge: bridge.clone(),
                subnet,
                gateway,
                services: BTreeMap::new(),
            });
            // recorded before the bridge exists, so that `down` after a crash removes it
            self.save()?;
            link::create_bridge(&bridge, subnet, gateway)?;
            // beyond the host (a nameserver, a registry) the pods' traffic is masqueraded;
            // without nftables they still reach the host and each other
            if let Err(e) = network::nat::enable(&bridge, subnet) {
                self.emit(&super::Event::Warning {
                    message: format!("pods cannot reach beyond this host: {}", super::chain(&e)),
                });
            }
            network::write_in_place(&self.resolv_conf_file(), &resolv_conf())?;
        } else if let (Some(net), Some(subnet)) = (&self.net, self.opts.desired.subnet)
            && net.subnet != subnet
        {
            return Err(SupervisorError::Config(format!(
                "the network's subnet cannot change while the project is up (it is {}, the manifest says {subnet}); run `rcompose down` first",
                net.subnet
            )));
        }
        self.service_addresses()?;
        Ok(())
    }

    /// Gives every service of the desired state a virtual address on the bridge, and takes
    /// theirs from services that are gone.
    fn service_addresses(&mut self) -> Result<(), SupervisorError> {
        let Some(mut net) = self.net.take() else {
            return Ok(());
        };
        let result = (|| {
            let gone: Vec<String> = net
                .services
                .keys()
                .filter(|s| !self.opts.desired.services.contains_key(*s))
                .cloned()
                .collect();
            for name in gone {
                if let Some(ip) = net.services.remove(&name) {
                    link::delete_address(&net.bridge, ip)?;
                }
            }
            for name in self.opts.desired.services.keys() {
                if net.services.contains_key(name) {
                    continue;
                }
                let taken = self.taken_addresses(&net);
                let ip = network::free_service_address(
                    net.subnet,
                    &taken,
                    &format!("service `{name}`"),
                )?;
                net.services.insert(name.clone(), ip);
                link::add_address(&net.bridge, ip)?;
            }
            Ok::<(), NetworkError>(())
        })();
        self.net = Some(net);
        result?;
        Ok(())
    }

    /// Addresses in use: the gateway, the services' and the replicas'.
    pub(super) fn taken_addresses(&self, net: &ProjectNet) -> Vec<Ipv4Addr> {
        let mut taken: Vec<Ipv4Addr> = self.slots.iter().filter_map(|s| s.record.ip).collect();
        taken.push(net.gateway);
        taken.extend(net.services.values());
        taken
    }

    /// An address for a new replica of a pod on the network, not in `also` (the replicas
    /// being made) nor in use.
    pub(super) fn replica_address(
        &self,
        replica: &str,
        also: &[Ipv4Addr],
    ) -> Result<Ipv4Addr, SupervisorError> {
        let Some(net) = &self.net else {
            return Err(SupervisorError::Config(format!(
                "replica `{replica}` is on the project network, which does not exist"
            )));
        };
        let mut taken = self.taken_addresses(net);
        taken.extend(also);
        Ok(network::free_pod_address(
            net.subnet,
            &taken,
            &format!("replica `{replica}`"),
        )?)
    }

    /// What launching a container on the network needs, if the network exists.
    pub(super) fn net_files(&self) -> Option<super::NetFiles> {
        Some(super::NetFiles {
            net: self.net.clone()?,
            project: self.paths.project.clone(),
            hosts: self.hosts_file(),
            resolv: self.resolv_conf_file(),
        })
    }

    /// The pods' `/etc/hosts`, shared by every container on the network (bind-mounted
    /// read-only), rewritten in place whenever replicas come or go.
    pub(super) fn hosts_file(&self) -> PathBuf {
        self.paths.dir.join("hosts")
    }

    /// The pods' `/etc/resolv.conf`.
    pub(super) fn resolv_conf_file(&self) -> PathBuf {
        self.paths.dir.join("resolv.conf")
    }

    /// Writes [`Supervisor::hosts_file`] from the services and the replicas that have an
    /// address.
    pub(super) fn write_hosts(&self) -> Result<(), SupervisorError> {
        let Some(net) = &self.net else {
            return Ok(());
        };
        // during a rollout two revisions of a replica run under its name: the name goes to
        // the one that is ready, the newer when both are (the older is being replaced)
        let mut best: BTreeMap<String, ((bool, u32), String, Ipv4Addr)> = BTreeMap::new();
        for s in &self.slots {
            if let Some(ip) = s.record.ip {
                let rank = (
                    s.record.state == super::ContainerState::Running && s.record.ready,
                    s.record.revision,
                );
                let name = s.record.replica_name();
                if best.get(&name).is_none_or(|(r, _, _)| rank > *r) {
                    best.insert(name, (rank, s.record.pod.clone(), ip));
                }
            }
        }
        let mut replicas: Vec<(String, String, Ipv4Addr)> = Vec::new();
        for s in &self.slots {
            let name = s.record.replica_name();
            if let Some((_, pod, ip)) = best.remove(&name) {
                replicas.push((pod, name, ip));
            }
        }
        network::write_in_place(
            &self.hosts_file(),
            &network::hosts_file(&net.services, &replicas),
        )?;
        Ok(())
    }
}

/// How long connections to a replica that stopped being an endpoint may go on.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Environment variable: the balancer's worker threads (default: one per two CPUs).
pub const ENV_BALANCER_THREADS: &str = "RCOMPOSE_BALANCER_THREADS";

/// How many workers the balancer gets: [`ENV_BALANCER_THREADS`], else one per two CPUs
/// (at least one). The balancer shares the machine with the pods it serves and, on one
/// machine, with their clients: measured on 2 CPUs with part g's setup (docs/architecture.md,
/// Network), a second worker made each new connection cost about 10 % more CPU (the workers
/// preempt each other and the pods) and the p99 latency 40 % worse, for more keep-alive
/// throughput.
fn balancer_threads() -> Result<usize, SupervisorError> {
    match std::env::var(ENV_BALANCER_THREADS) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(SupervisorError::Config(format!(
                "{ENV_BALANCER_THREADS} must be a number of threads from 1 to 64, not `{v}`"
            ))),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))),
    }
}

/// What the balancer serves for one service (to tell a changed service from an unchanged
/// one on an apply).
pub(super) type Served = (Vec<balancer::Listen>, balancer::Balance);

impl Supervisor {
    /// Serves every service with ports on the balancer (started with the first one): its
    /// virtual address and port, and its published host ports. A service whose ports
    /// changed is served anew, one that is gone no more.
    pub(super) fn ensure_balancer(&mut self) -> Result<(), SupervisorError> {
        let Some(net) = &self.net else {
            return Ok(());
        };
        let mut wanted: BTreeMap<String, Served> = BTreeMap::new();
        for (name, svc) in &self.opts.desired.services {
            let Some(vip) = net.services.get(name) else {
                continue;
            };
            let ports: Vec<balancer::Listen> = svc
                .ports
                .iter()
                .map(|p| {
                    let mut addrs = vec![SocketAddr::from((*vip, p.port))];
                    if let Some(publish) = p.publish {
                        addrs.push(SocketAddr::from((p.host_ip, publish)));
                    }
                    balancer::Listen {
                        addrs,
                        target: p.target,
                    }
                })
                .collect();
            if !ports.is_empty() {
                wanted.insert(name.clone(), (ports, svc.balance));
            }
        }
        if let Some(b) = &self.balancer {
            for name in self.served.keys() {
                if !wanted.contains_key(name) {
                    b.remove_service(name);
                }
            }
        }
        self.served.retain(|name, _| wanted.contains_key(name));
        for (name, served) in wanted {
            if self.served.get(&name) == Some(&served) {
                continue;
            }
            if self.balancer.is_none() {
                let threads = balancer_threads()?;
                // The workers share the supervisor's one malloc arena (see `new`: glibc fixes
                // the arena limit when the first thread asks for an arena, so it cannot be
                // raised here): per connection they allocate only the task, the relay keeps
                // its buffers in a pool of its own (`balancer::relay`).
                let b = balancer::Balancer::new(threads)?;
                // partitions made before the first service had ports
                b.set_cut(self.faults.cut.iter().copied());
                self.balancer = Some(b);
            }
            if let Some(b) = &self.balancer {
                b.set_service(&name, &served.0, served.1)?;
            }
            self.endpoints.remove(&name);
            self.served.insert(name, served);
        }
        self.update_endpoints();
        Ok(())
    }

    /// Tells the balancer, for each service, which replicas are its endpoints now: those of
    /// the pods it selects whose containers all run and are ready. Called whenever states
    /// change; only changes reach the balancer.
    pub(super) fn update_endpoints(&mut self) {
        let Some(b) = &self.balancer else {
            return;
        };
        for name in self.served.keys() {
            let Some(svc) = self.opts.desired.services.get(name) else {
                continue;
            };
            let mut ips: Vec<Ipv4Addr> = Vec::new();
            let mut not_ready: Vec<Ipv4Addr> = Vec::new();
            for s in self
                .slots
                .iter()
                .filter(|s| !s.record.init && svc.pods.contains(&s.record.pod))
            {
                let Some(ip) = s.record.ip else { continue };
                let up = s.record.state == super::ContainerState::Running && s.record.ready;
                if up {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                } else {
                    not_ready.push(ip);
                }
            }
            ips.retain(|ip| !not_ready.contains(ip));
            ips.sort();
            if self.endpoints.get(name) != Some(&ips) {
                b.set_endpoints(name, &ips, DRAIN_GRACE);
                self.endpoints.insert(name.clone(), ips);
            }
        }
    }

    /// Each served service's address, ports, strategy and counters.
    pub(super) fn service_status(&self) -> BTreeMap<String, super::control::ServiceStatus> {
        let stats = self
            .balancer
            .as_ref()
            .map(balancer::Balancer::stats)
            .unwrap_or_default();
        self.opts
            .desired
            .services
            .iter()
            .map(|(name, svc)| {
                let address = self
                    .net
                    .as_ref()
                    .and_then(|n| n.services.get(name).copied());
                let ports = svc
                    .ports
                    .iter()
                    .map(|p| match p.publish {
                        Some(h) => format!("{}:{h}->{}->{}", p.host_ip, p.port, p.target),
                        None => format!("{}->{}", p.port, p.target),
                    })
                    .collect();
                let status = super::control::ServiceStatus {
                    address,
                    ports,
                    balance: match svc.balance {
                        balancer::Balance::RoundRobin => "round_robin".into(),
                        balancer::Balance::LeastConn => "least_conn".into(),
                    },
                    stats: stats.get(name).cloned().unwrap_or_default(),
                };
                (name.clone(), status)
            })
            .collect()
    }
}

/// The host's resolver configuration for the pods (see [`network::resolv_conf`]).
fn resolv_conf() -> String {
    network::resolv_conf(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Whether the project's bridge exists.
pub(super) fn has_bridge(project: &str) -> bool {
    link::exists(&network::bridge_name(project))
}

/// Deletes the host ends of the project's veths that are left (best effort).
pub(super) fn remove_veths(project: &str) {
    let prefix = network::veth_prefix(project);
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let _ = link::delete_link(&name);
        }
    }
}

/// Removes the project's bridge (its veths go with the replicas' namespaces); missing is
/// fine.
pub(super) fn remove_bridge(project: &str) -> Result<(), SupervisorError> {
    let bridge = network::bridge_name(project);
    if link::exists(&bridge) {
        network::nat::disable(&bridge);
        link::delete_link(&bridge)?;
    }
    Ok(())
}
