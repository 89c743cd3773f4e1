//! L2, I/O: the built-in L4 balancer, a userspace TCP proxy on tokio. Each service listens
//! on its virtual address and port (and on its published host ports) and spreads the
//! connections over its ready endpoints: round robin, or the endpoint with the fewest open
//! connections. A connect that fails (refused: a replica that is going away) is retried on
//! the next endpoint, so it costs the client nothing. An endpoint that is removed gets no new
//! connections at once; its open ones may finish during a grace period, then are closed.
//! The supervisor sets the endpoints (the replicas that are ready) and reads the counters.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::manifest::Balance;

/// How long a connect to an endpoint may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the balancer.
#[derive(Debug, thiserror::Error)]
pub enum BalancerError {
    /// Its runtime could not start.
    #[error("failed to start the balancer")]
    Start(#[source] io::Error),
    /// A listening address could not be bound.
    #[error("service `{service}` cannot listen on {addr}")]
    Bind {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// The cause (in use, not an address of this host, ...).
        #[source]
        source: io::Error,
    },
}

/// One port of a service: where it listens, and the port on the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The addresses it listens on (the service's virtual address and port, a published
    /// host address and port).
    pub addrs: Vec<SocketAddr>,
    /// The port on the endpoints.
    pub target: u16,
}

/// A service's counters, since it was set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Connections open now.
    pub active: u64,
    /// Connections accepted.
    pub total: u64,
    /// Bytes from clients to endpoints.
    pub bytes_in: u64,
    /// Bytes from endpoints to clients.
    pub bytes_out: u64,
    /// Connections that no endpoint took (none ready, or every connect failed).
    pub errors: u64,
    /// Connects retried on another endpoint.
    pub retries: u64,
    /// The endpoints (ready replicas) now.
    pub endpoints: Vec<Ipv4Addr>,
}

#[derive(Default)]
struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
}

/// An endpoint: a ready replica's address, its open connections, and the signal that ends
/// them once it was removed and its grace period passed.
struct Endpoint {
    ip: Ipv4Addr,
    active: AtomicUsize,
    closed: watch::Sender<bool>,
}

struct Service {
    balance: Balance,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    /// Endpoints removed whose grace period runs.
    draining: Mutex<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    counters: Counters,
    listeners: Mutex<Vec<JoinHandle<()>>>,
}

/// The balancer: a tokio runtime and the services it serves.
pub struct Balancer {
    rt: tokio::runtime::Runtime,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl Balancer {
    /// Starts the runtime, with `threads` workers.
    ///
    /// # Errors
    ///
    /// The runtime could not start.
    pub fn new(threads: usize) -> Result<Self, BalancerError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("balancer")
            .thread_stack_size(256 * 1024)
            .enable_io()
            .enable_time()
            .build()
            .map_err(BalancerError::Start)?;
        Ok(Balancer {
            rt,
            services: Mutex::new(BTreeMap::new()),
        })
    }

    /// Serves service `name` on `ports` (replacing what it served before), with no endpoint
    /// yet. Every address is bound before anything changes.
    ///
    /// # Errors
    ///
    /// An address cannot be bound (a published port in use, ...).
    pub fn set_service(
        &self,
        name: &str,
        ports: &[Listen],
        balance: Balance,
    ) -> Result<(), BalancerError> {
        let mut bound = Vec::new();
        for port in ports {
            for addr in &port.addrs {
                let listener = self.bind(*addr).map_err(|source| BalancerError::Bind {
                    service: name.to_string(),
                    addr: *addr,
                    source,
                })?;
                bound.push((listener, port.target));
            }
        }
        let service = Arc::new(Service {
            balance,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            draining: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            counters: Counters::default(),
            listeners: Mutex::new(Vec::new()),
        });
        let mut handles = Vec::new();
        for (listener, target) in bound {
            let svc = Arc::clone(&service);
            handles.push(self.rt.spawn(accept(listener, svc, target)));
        }
        *service.listeners.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        let old = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), service);
        if let Some(old) = old {
            stop_service(&old);
        }
        Ok(())
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let _guard = self.rt.enter();
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// Stops serving service `name`: its listeners close and its connections end.
    pub fn remove_service(&self, name: &str) {
        let old = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(old) = old {
            stop_service(&old);
        }
    }

    /// The names of the services served.
    #[must_use]
    pub fn services(&self) -> Vec<String> {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Sets the endpoints of service `name` (the ready replicas' addresses). New connections
    /// go to these at once; connections to an endpoint no longer listed are closed after
    /// `grace`.
    pub fn set_endpoints(&self, name: &str, ips: &[Ipv4Addr], grace: Duration) {
        let Some(service) = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
        else {
            return;
        };
        let mut slot = service.endpoints.write().unwrap_or_else(|e| e.into_inner());
        let old = Arc::clone(&slot);
        let mut new: Vec<Arc<Endpoint>> = Vec::with_capacity(ips.len());
        for ip in ips {
            match old.iter().find(|e| e.ip == *ip) {
                Some(e) => new.push(Arc::clone(e)),
                None => new.push(Arc::new(Endpoint {
                    ip: *ip,
                    active: AtomicUsize::new(0),
                    closed: watch::channel(false).0,
                })),
            }
        }
        for gone in old.iter().filter(|e| !ips.contains(&e.ip)) {
            service
                .draining
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(gone));
            let (gone, svc) = (Arc::clone(gone), Arc::clone(&service));
            self.rt.spawn(async move {
                tokio::time::sleep(grace).await;
                let _ = gone.closed.send(true);
                svc.draining
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|e| !Arc::ptr_eq(e, &gone));
            });
        }
        *slot = Arc::new(new);
    }

    /// Ends at once every connection to `ip` of an endpoint that was removed (its replica
    /// is gone, with its network: nothing would answer or close them). One that has not had
    /// an answer yet is replayed on another endpoint.
    pub fn forget(&self, ip: Ipv4Addr) {
        let services: Vec<Arc<Service>> = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for s in services {
            let mut draining = s.draining.lock().unwrap_or_else(|e| e.into_inner());
            for e in draining.iter().filter(|e| e.ip == ip) {
                let _ = e.closed.send(true);
            }
            draining.retain(|e| e.ip != ip);
        }
    }

    /// Each service's counters and endpoints.
    #[must_use]
    pub fn stats(&self) -> BTreeMap<String, ServiceStats> {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services
            .iter()
            .map(|(name, s)| {
                let c = &s.counters;
                let endpoints = s
                    .endpoints
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|e| e.ip)
                    .collect();
                (
                    name.clone(),
                    ServiceStats {
                        active: c.active.load(Ordering::Relaxed),
                        total: c.total.load(Ordering::Relaxed),
                        bytes_in: c.bytes_in.load(Ordering::Relaxed),
                        bytes_out: c.bytes_out.load(Ordering::Relaxed),
                        errors: c.errors.load(Ordering::Relaxed),
                        retries: c.retries.load(Ordering::Relaxed),
                        endpoints,
                    },
                )
            })
            .collect()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        for s in self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            stop_service(s);
        }
    }
}

/// Closes a service's listeners and ends its connections.
fn stop_service(s: &Service) {
    for h in s
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        h.abort();
    }
    for e in s.endpoints.read().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = e.closed.send(true);
    }
}

async fn accept(listener: TcpListener, service: Arc<Service>, target: u16) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(proxy(conn, Arc::clone(&service), target));
            }
            // out of descriptors and the like: a moment, then on
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// The endpoints in the order to try them: the strategy's pick first, then the others
/// (no allocation: this runs for every connection).
fn order(service: &Service, endpoints: &[Arc<Endpoint>]) -> Order {
    let n = endpoints.len();
    if n == 0 {
        return Order {
            first: 0,
            n: 0,
            k: 0,
        };
    }
    let first = match service.balance {
        Balance::RoundRobin => service.next.fetch_add(1, Ordering::Relaxed) % n,
        Balance::LeastConn => {
            // the fewest open connections; ties go round robin
            let start = service.next.fetch_add(1, Ordering::Relaxed) % n;
            (0..n)
                .map(|k| (start + k) % n)
                .min_by_key(|&i| endpoints[i].active.load(Ordering::Relaxed))
                .unwrap_or(start)
        }
    };
    Order { first, n, k: 0 }
}

/// [`order`]'s iterator: `first`, `first + 1`, ... modulo `n`.
struct Order {
    first: usize,
    n: usize,
    k: usize,
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        (self.k < self.n).then(|| {
            self.k += 1;
            (self.first + self.k - 1) % self.n
        })
    }
}

/// Until the first byte comes back from an endpoint, what the client sent (up to this much)
/// is kept, so that an endpoint that closes or fails without answering (a replica killed
/// with a request in flight) is replaced by the next one, which gets the same bytes.
const REPLAY_LIMIT: usize = 64 * 1024;

/// Connects to the next endpoint of `candidates` that accepts (refused or timed out: the
/// next), counting the ones skipped in `skipped`.
async fn connect_next(
    candidates: &mut impl Iterator<Item = usize>,
    endpoints: &[Arc<Endpoint>],
    target: u16,
    skipped: &mut u64,
) -> Option<(TcpStream, Arc<Endpoint>)> {
    for i in candidates.by_ref() {
        let ep = &endpoints[i];
        if *ep.closed.borrow() {
            continue;
        }
        let addr = SocketAddr::from((ep.ip, target));
        if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            let _ = s.set_nodelay(true);
            return Some((s, Arc::clone(ep)));
        }
        *skipped += 1;
    }
    None
}

async fn proxy(mut client: TcpStream, service: Arc<Service>, target: u16) {
    let c = &service.counters;
    c.total.fetch_add(1, Ordering::Relaxed);
    c.active.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let endpoints = Arc::clone(&service.endpoints.read().unwrap_or_else(|e| e.into_inner()));
    let mut candidates = order(&service, &endpoints);
    let mut skipped = 0u64;
    let mut sent: Vec<u8> = Vec::new();
    let mut client_eof = false;
    // small: a request and the start of an answer; `copy_bidirectional` takes over after
    let mut from_client = [0u8; 4096];
    let mut from_server = [0u8; 4096];
    // the first endpoint that answers (or takes more than REPLAY_LIMIT bytes)
    let found = 'endpoint: loop {
        let Some((mut server, ep)) =
            connect_next(&mut candidates, &endpoints, target, &mut skipped).await
        else {
            break None;
        };
        if (!sent.is_empty() && server.write_all(&sent).await.is_err())
            || (client_eof && server.shutdown().await.is_err())
        {
            skipped += 1;
            continue;
        }
        let mut gone = ep.closed.subscribe();
        loop {
            tokio::select! {
                // removed and gone (or its grace is over) before answering: the next one
                r = gone.changed() => {
                    let is_gone = r.is_err() || *gone.borrow_and_update();
                    if is_gone {
                        skipped += 1;
                        continue 'endpoint;
                    }
                }
                r = server.read(&mut from_server) => match r {
                    Ok(n) if n > 0 => break 'endpoint Some((server, ep, n)),
                    // the client left without a byte (a TCP check, a port scan) and the
                    // endpoint closed in turn: a plain close, nothing to replay
                    Ok(_) if client_eof && sent.is_empty() => {
                        c.active.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    // closed or failed before answering: the next endpoint gets the bytes
                    _ => {
                        skipped += 1;
                        continue 'endpoint;
                    }
                },
                r = client.read(&mut from_client), if !client_eof => match r {
                    Ok(0) => {
                        client_eof = true;
                        let _ = server.shutdown().await;
                    }
                    Ok(n) => {
                        sent.extend_from_slice(&from_client[..n]);
                        if server.write_all(&from_client[..n]).await.is_err() {
                            skipped += 1;
                            continue 'endpoint;
                        }
                        if sent.len() > REPLAY_LIMIT {
                            break 'endpoint Some((server, ep, 0));
                        }
                    }
                    // the client is gone
                    Err(_) => {
                        c.active.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                },
            }
        }
    };
    if skipped > 0 {
        c.retries.fetch_add(skipped, Ordering::Relaxed);
    }
    let Some((mut server, ep, first)) = found else {
        c.errors.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_sub(1, Ordering::Relaxed);
        let _ = client.shutdown().await;
        return;
    };
    ep.active.fetch_add(1, Ordering::Relaxed);
    c.bytes_in.fetch_add(sent.len() as u64, Ordering::Relaxed);
    drop(sent);
    let mut closed = ep.closed.subscribe();
    tokio::select! {
        r = async {
            client.write_all(&from_server[..first]).await?;
            tokio::io::copy_bidirectional(&mut client, &mut server).await
        } => {
            c.bytes_out.fetch_add(first as u64, Ordering::Relaxed);
            if let Ok((to_server, to_client)) = r {
                c.bytes_in.fetch_add(to_server, Ordering::Relaxed);
                c.bytes_out.fetch_add(to_client, Ordering::Relaxed);
            }
        }
        // removed, and its grace period is over
        _ = closed.wait_for(|c| *c) => {}
    }
    ep.active.fetch_sub(1, Ordering::Relaxed);
    c.active.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn fetch(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn round_robin_spreads_and_a_refused_endpoint_is_skipped() {
        let b = Balancer::new(1).unwrap();
        let ips = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        // both backends on one port number, on two loopback addresses
        let l1 = std::net::TcpListener::bind((ips[0], 0)).unwrap();
        let port = l1.local_addr().unwrap().port();
        let l2 = std::net::TcpListener::bind((ips[1], port)).unwrap();
        for (l, name) in [(l1, "one"), (l2, "two")] {
            std::thread::spawn(move || {
                for c in l.incoming().take(100) {
                    let Ok(mut c) = c else { continue };
                    let _ = c.write_all(name.as_bytes());
                }
            });
        }
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        drop(front);
        b.set_service(
            "web",
            &[Listen {
                addrs: vec![addr],
                target: port,
            }],
            Balance::RoundRobin,
        )
        .unwrap();
        // no endpoint: the connection is closed, and counted as an error
        assert_eq!(fetch(addr), "");
        b.set_endpoints("web", &ips, Duration::from_secs(5));
        let got: Vec<String> = (0..4).map(|_| fetch(addr)).collect();
        assert_eq!(got.iter().filter(|g| *g == "one").count(), 2, "{got:?}");
        assert_eq!(got.iter().filter(|g| *g == "two").count(), 2, "{got:?}");
        // an endpoint nobody listens on: its connects are refused and retried elsewhere
        let dead = Ipv4Addr::new(127, 0, 0, 3);
        b.set_endpoints("web", &[dead, ips[0]], Duration::from_secs(5));
        let got: Vec<String> = (0..4).map(|_| fetch(addr)).collect();
        assert!(got.iter().all(|g| g == "one"), "{got:?}");
        // the counters are updated as each connection ends, just after the client saw it end
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while b.stats()["web"].active > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = &b.stats()["web"];
        assert_eq!(stats.active, 0);
        assert_eq!(stats.total, 9);
        assert_eq!(stats.errors, 1);
        assert!(stats.retries >= 2, "{stats:?}");
        assert_eq!(stats.endpoints, [dead, ips[0]]);
        assert_eq!(stats.bytes_out, 8 * 3);
        // a second service on the same address cannot bind it
        let e = b
            .set_service(
                "other",
                &[Listen {
                    addrs: vec![addr],
                    target: 1,
                }],
                Balance::RoundRobin,
            )
            .unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        // removed: the listener closes (its task is cancelled at its next wake-up)
        b.remove_service("web");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::net::TcpStream::connect(addr).is_ok() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again() {
        let b = Balancer::new(1).unwrap();
        // 127.0.0.1 reads the request and closes without a byte (killed mid-request);
        // 127.0.0.2 answers with what it read
        let dying = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dying.local_addr().unwrap().port();
        let good = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
        std::thread::spawn(move || {
            for c in dying.incoming().take(10).flatten() {
                let mut c = c;
                let mut buf = [0u8; 64];
                let _ = c.read(&mut buf);
            }
        });
        std::thread::spawn(move || {
            for c in good.incoming().take(10).flatten() {
                let mut c = c;
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap_or(0);
                let _ = c.write_all(b"got ");
                let _ = c.write_all(&buf[..n]);
            }
        });
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        drop(front);
        b.set_service(
            "api",
            &[Listen {
                addrs: vec![addr],
                target: port,
            }],
            Balance::RoundRobin,
        )
        .unwrap();
        b.set_endpoints(
            "api",
            &[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
            Duration::from_secs(5),
        );
        for _ in 0..4 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /x").unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            assert_eq!(out, "got GET /x");
        }
        let stats = &b.stats()["api"];
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.retries, 2, "{stats:?}");
        // a client that leaves without a byte (a TCP check) is no error and no retry
        for _ in 0..2 {
            drop(std::net::TcpStream::connect(addr).unwrap());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while (b.stats()["api"].active > 0 || b.stats()["api"].total < 6)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = &b.stats()["api"];
        assert_eq!(
            (stats.total, stats.errors, stats.retries),
            (6, 0, 2),
            "{stats:?}"
        );
    }

    #[test]
    fn least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain() {
        let b = Balancer::new(1).unwrap();
        // an echo-less backend that keeps connections open until told
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let l2 = std::net::TcpListener::bind(("127.0.0.2", port)).unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        for l in [l, l2] {
            let held = Arc::clone(&held);
            std::thread::spawn(move || {
                for c in l.incoming().take(100).flatten() {
                    let mut c = c;
                    let _ = c.write_all(c.local_addr().unwrap().ip().to_string().as_bytes());
                    held.lock().unwrap().push(c);
                }
            });
        }
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        drop(front);
        b.set_service(
            "db",
            &[Listen {
                addrs: vec![addr],
                target: port,
            }],
            Balance::LeastConn,
        )
        .unwrap();
        let ips = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
        b.set_endpoints("db", &ips, Duration::from_millis(200));
        let read_some = |s: &mut std::net::TcpStream| {
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        let a = read_some(&mut first);
        // the other endpoint has no connection: the next two go there, then alternate
        let mut second = std::net::TcpStream::connect(addr).unwrap();
        let b2 = read_some(&mut second);
        assert_ne!(a, b2);
        // removing the first's endpoint closes its connection after the grace period
        let a_ip: Ipv4Addr = a.parse().unwrap();
        let keep: Vec<Ipv4Addr> = ips.iter().copied().filter(|i| *i != a_ip).collect();
        b.set_endpoints("db", &keep, Duration::from_millis(200));
        first
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let n = first.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < Duration::from_secs(4));
        // the kept endpoint's connection is still open
        second
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert!(
            second.read(&mut buf).is_err(),
            "the kept connection was closed"
        );
        // new connections go to the kept endpoint only
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(read_some(&mut third), b2);
    }
}
