//! L2, I/O: the built-in L4 balancer, a userspace TCP proxy on tokio. Each service listens
//! on its virtual address and port (and on its published host ports) and spreads the
//! connections over its ready endpoints: round robin, or the endpoint with the fewest open
//! connections. A connect that fails (refused: a replica that is going away) is retried on
//! the next endpoint, so it costs the client nothing. An endpoint that is removed gets no new
//! connections at once; its open ones may finish during a grace period, then are closed.
//! The supervisor sets the endpoints (the replicas that are ready) and reads the counters.
//!
//! Threads: one worker per CPU (at most `threads`), each a current-thread tokio runtime of its
//! own that accepts on its own listening socket (`SO_REUSEPORT`: the kernel spreads the new
//! connections) and relays the connections it accepted: no task ever moves between threads,
//! and nothing on a connection's path is shared but the endpoint list (read once per
//! connection) and its counters (a shard per worker). The relay itself is in `relay`.

mod relay;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Waker;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

pub use crate::manifest::Balance;
use relay::{Outcome, Relay, Replay};

/// SYN retransmissions of a connect to an endpoint before the next one is tried: with one,
/// a connect that gets no answer fails after about 3 s (1 s, then 2 s). The kernel keeps
/// this time: a tokio timer per connect would cost every connection a timer-wheel insert,
/// and often a wake-up of the worker's own poller.
const CONNECT_SYN_RETRIES: libc::c_int = 1;

/// Backlog of each listening socket (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

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

/// One worker's share of a service's counters: only that worker writes them (plain loads
/// and stores, see `relay::add`), anyone may read them. Aligned to its own cache lines so
/// that two workers never write the same line.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    /// Connections accepted.
    total: AtomicU64,
    /// Connections ended (`total - ended` are open).
    ended: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
}

/// An endpoint: a ready replica's address, its open connections, and whether it was
/// closed for good (removed and its grace period over, or its replica gone). The relays
/// of its connections leave their wakers here so that a close reaches the idle ones.
struct Endpoint {
    ip: Ipv4Addr,
    /// Open connections (counted for `least_conn` only: a shared counter costs every
    /// connection two locked instructions on a cache line both workers write).
    active: AtomicUsize,
    closed: AtomicBool,
    /// One list per worker (each on cache lines of its own).
    wakers: Box<[Padded<Mutex<Wakers>>]>,
}

/// A value on cache lines of its own (two workers writing neighbours would share a line).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A slab of wakers: a relay registers once and leaves when it ends.
#[derive(Default)]
struct Wakers {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Endpoint {
    fn new(ip: Ipv4Addr, workers: usize) -> Self {
        Endpoint {
            ip,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            wakers: (0..workers).map(|_| Padded::default()).collect(),
        }
    }

    /// Registers a relay's waker, to be woken by [`Endpoint::close`]; the slot to give back.
    /// The relay reads `closed` after this (a close between its read and this registration
    /// is not lost: `close` sets the flag before it takes the lock).
    fn watch(&self, worker: usize, waker: &Waker) -> usize {
        let mut w = self.wakers[worker]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let waker = Some(waker.clone());
        match w.free.pop() {
            Some(i) => {
                w.slots[i] = waker;
                i
            }
            None => {
                w.slots.push(waker);
                w.slots.len() - 1
            }
        }
    }

    fn unwatch(&self, worker: usize, slot: usize) {
        let mut w = self.wakers[worker]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(s) = w.slots.get_mut(slot) {
            *s = None;
            w.free.push(slot);
        }
    }

    /// Connections relayed to this endpoint now: the relays registered in its slabs (a
    /// relay registers at its first poll, right after its connect, and leaves when it ends).
    fn open(&self) -> usize {
        self.wakers
            .iter()
            .map(|list| {
                let w = list.0.lock().unwrap_or_else(|e| e.into_inner());
                w.slots.len() - w.free.len()
            })
            .sum()
    }

    /// Ends every connection to this endpoint (each relay sees the flag when woken).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .wakers
            .iter()
            .flat_map(|list| {
                let mut w = list.0.lock().unwrap_or_else(|e| e.into_inner());
                w.slots
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect::<Vec<_>>()
            })
            .collect();
        for w in wakers {
            w.wake();
        }
    }
}

/// Counts an endpoint's open connection while it lives, for `least_conn` (none otherwise).
struct Active<'a>(Option<&'a Endpoint>);

impl<'a> Active<'a> {
    fn new(ep: &'a Endpoint, balance: Balance) -> Self {
        if balance != Balance::LeastConn {
            return Active(None);
        }
        ep.active.fetch_add(1, Ordering::Relaxed);
        Active(Some(ep))
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Some(ep) = self.0 {
            ep.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A list of endpoints, as one worker reads it.
type Endpoints = Arc<Vec<Arc<Endpoint>>>;

/// How long a connect through a partition takes to fail: what a SYN nobody answers costs
/// with [`CONNECT_SYN_RETRIES`] (1 s, then 2 s more).
const PARTITIONED_CONNECT: Duration = Duration::from_secs(3);

/// The (client, backend) address pairs a network partition cuts apart (see
/// `plan::faults::cut_pairs`): a connection from the client is never relayed to that
/// backend; trying it costs what a connect into a partition costs, then the next endpoint
/// is tried, as for a backend that does not answer.
#[derive(Default)]
struct Cut {
    /// Whether any pair is cut (read by every connection; the set only when set).
    any: std::sync::atomic::AtomicBool,
    pairs: RwLock<std::collections::HashSet<(Ipv4Addr, Ipv4Addr)>>,
}

impl Cut {
    fn cuts(&self, from: Option<Ipv4Addr>, to: Ipv4Addr) -> bool {
        let Some(from) = from else { return false };
        self.any.load(Ordering::Relaxed)
            && self
                .pairs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(from, to))
    }
}

struct Service {
    balance: Balance,
    /// The balancer's partitions.
    cut: Arc<Cut>,
    /// The endpoints now (changed under this lock).
    endpoints: RwLock<Endpoints>,
    /// The same, one copy per worker: what a new connection reads (the worker's own lock
    /// and reference count, on cache lines no other worker writes).
    views: Box<[Padded<Mutex<Endpoints>>]>,
    /// Endpoints removed whose grace period runs.
    draining: Mutex<Vec<Arc<Endpoint>>>,
    next: AtomicUsize,
    /// One per worker.
    shards: Box<[Shard]>,
    listeners: Mutex<Vec<AbortHandle>>,
}

/// A worker thread and its current-thread runtime, which runs until `stop` is sent.
struct Worker {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(index: usize) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("balancer".to_string())
            .stack_size(256 * 1024)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // dropping the runtime drops its tasks: their sockets close
            })?;
        let handle = rx
            .recv()
            .map_err(|_| io::Error::other(format!("balancer worker {index} did not start")))??;
        Ok(Worker {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The balancer: its workers and the services it serves.
pub struct Balancer {
    workers: Vec<Worker>,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    cut: Arc<Cut>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Starts `threads` workers (at least one).
    ///
    /// # Errors
    ///
    /// A worker could not start.
    pub fn new(threads: usize) -> Result<Self, BalancerError> {
        let mut workers = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            workers.push(Worker::start(i).map_err(BalancerError::Start)?);
        }
        Ok(Balancer {
            workers,
            services: Mutex::new(BTreeMap::new()),
            cut: Arc::new(Cut::default()),
        })
    }

    /// The (client, backend) pairs network partitions cut apart, replacing the previous
    /// set: new connections from such a client are not relayed to such a backend.
    pub fn set_cut(&self, pairs: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) {
        let mut set = self.cut.pairs.write().unwrap_or_else(|e| e.into_inner());
        set.clear();
        set.extend(pairs);
        self.cut.any.store(!set.is_empty(), Ordering::Relaxed);
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
        // per address, one listening socket per worker
        let mut bound = Vec::new();
        for port in ports {
            for addr in &port.addrs {
                let sockets = self.bind(*addr).map_err(|source| BalancerError::Bind {
                    service: name.to_string(),
                    addr: *addr,
                    source,
                })?;
                bound.push((sockets, port.target));
            }
        }
        let service = Arc::new(Service {
            balance,
            cut: Arc::clone(&self.cut),
            endpoints: RwLock::new(Arc::new(Vec::new())),
            views: (0..self.workers.len()).map(|_| Padded::default()).collect(),
            draining: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            shards: (0..self.workers.len()).map(|_| Shard::default()).collect(),
            listeners: Mutex::new(Vec::new()),
        });
        let mut handles = Vec::new();
        for (sockets, target) in bound {
            for (worker, listener) in sockets.into_iter().enumerate() {
                let svc = Arc::clone(&service);
                handles.push(
                    self.workers[worker]
                        .handle
                        .spawn(accept(listener, svc, target, worker))
                        .abort_handle(),
                );
            }
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

    /// One listening socket on `addr`, registered with every worker's runtime (a duplicate
    /// descriptor each): whichever worker is free first accepts a new connection.
    fn bind(&self, addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        // accepted connections inherit it (one system call per connection fewer)
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        let listener = {
            let _guard = self.workers[0].handle.enter();
            socket.listen(BACKLOG)?
        };
        let std = listener.into_std()?;
        let mut out = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let dup = std.try_clone()?;
            let _guard = w.handle.enter();
            out.push(TcpListener::from_std(dup)?);
        }
        Ok(out)
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
                None => new.push(Arc::new(Endpoint::new(*ip, self.workers.len()))),
            }
        }
        for gone in old.iter().filter(|e| !ips.contains(&e.ip)) {
            service
                .draining
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(gone));
            let (gone, svc) = (Arc::clone(gone), Arc::clone(&service));
            self.workers[0].handle.spawn(async move {
                tokio::time::sleep(grace).await;
                gone.close();
                svc.draining
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|e| !Arc::ptr_eq(e, &gone));
            });
        }
        for view in &service.views {
            *view.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(new.clone());
        }
        *slot = Arc::new(new);
    }

    /// The services served now (a copy: the lock is not held while they are read).
    fn service_list(&self) -> Vec<Arc<Service>> {
        self.services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Ends at once every connection to `ip` of an endpoint that was removed (its replica
    /// is gone, with its network: nothing would answer or close them). One that has not had
    /// an answer yet is replayed on another endpoint.
    pub fn forget(&self, ip: Ipv4Addr) {
        for s in self.service_list() {
            let mut draining = s.draining.lock().unwrap_or_else(|e| e.into_inner());
            for e in draining.iter().filter(|e| e.ip == ip) {
                e.close();
            }
            draining.retain(|e| e.ip != ip);
        }
    }

    /// Connections relayed to `ip` now, over every service (endpoints listed or draining):
    /// what a replica about to be stopped waits for, so that no request is cut.
    #[must_use]
    pub fn open_connections(&self, ip: Ipv4Addr) -> usize {
        self.service_list()
            .iter()
            .map(|s| {
                let of = |list: &[Arc<Endpoint>]| -> usize {
                    list.iter().filter(|e| e.ip == ip).map(|e| e.open()).sum()
                };
                of(&s.endpoints.read().unwrap_or_else(|e| e.into_inner()))
                    + of(&s.draining.lock().unwrap_or_else(|e| e.into_inner()))
            })
            .sum()
    }

    /// Each service's counters and endpoints.
    #[must_use]
    pub fn stats(&self) -> BTreeMap<String, ServiceStats> {
        let services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        services
            .iter()
            .map(|(name, s)| {
                let endpoints = s
                    .endpoints
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|e| e.ip)
                    .collect();
                let sum = |f: fn(&Shard) -> &AtomicU64| -> u64 {
                    s.shards
                        .iter()
                        .map(|sh| f(sh).load(Ordering::Relaxed))
                        .sum()
                };
                let total = sum(|sh| &sh.total);
                (
                    name.clone(),
                    ServiceStats {
                        // the shards are read one after the other: never below zero
                        active: total.saturating_sub(sum(|sh| &sh.ended)),
                        total,
                        bytes_in: sum(|sh| &sh.bytes_in),
                        bytes_out: sum(|sh| &sh.bytes_out),
                        errors: sum(|sh| &sh.errors),
                        retries: sum(|sh| &sh.retries),
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
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
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
        e.close();
    }
    for e in s.draining.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        e.close();
    }
}

async fn accept(listener: TcpListener, service: Arc<Service>, target: u16, worker: usize) {
    loop {
        match listener.accept().await {
            Ok((conn, from)) => {
                let from = match from {
                    SocketAddr::V4(a) => Some(*a.ip()),
                    SocketAddr::V6(_) => None,
                };
                // spawned on this worker's runtime: the connection stays on this thread
                tokio::spawn(proxy(conn, Arc::clone(&service), target, worker, from));
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

/// Connects to the next endpoint of `candidates` that accepts (refused or timed out: the
/// next), counting the ones skipped in `skipped`. One a partition cuts from the client
/// `from` times out as a connect into the partition would.
async fn connect_next<'e>(
    candidates: &mut impl Iterator<Item = usize>,
    endpoints: &'e [Arc<Endpoint>],
    (target, from, cut): (u16, Option<Ipv4Addr>, &Cut),
    skipped: &mut u64,
) -> Option<(TcpStream, &'e Endpoint)> {
    for i in candidates.by_ref() {
        let ep = &endpoints[i];
        if ep.closed.load(Ordering::Acquire) {
            continue;
        }
        if cut.cuts(from, ep.ip) {
            tokio::time::sleep(PARTITIONED_CONNECT).await;
            *skipped += 1;
            continue;
        }
        let addr = SocketAddr::from((ep.ip, target));
        if let Ok(s) = connect(addr).await {
            return Some((s, ep));
        }
        *skipped += 1;
    }
    None
}

/// A connect with `TCP_NODELAY` and [`CONNECT_SYN_RETRIES`].
async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_nodelay(true)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: `fd` is the socket's own open descriptor and the option value is a c_int
    // that outlives the call (nix has no TCP_SYNCNT).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            std::ptr::from_ref(&CONNECT_SYN_RETRIES).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.connect(addr).await
}

async fn proxy(
    mut client: TcpStream,
    service: Arc<Service>,
    target: u16,
    worker: usize,
    from: Option<Ipv4Addr>,
) {
    let shard = &service.shards[worker];
    relay::add(&shard.total, 1);
    let endpoints = Arc::clone(
        &service.views[worker]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let mut candidates = order(&service, &endpoints);
    let mut skipped = 0u64;
    let mut replay = Replay::default();
    let taken = loop {
        let Some((mut server, ep)) = connect_next(
            &mut candidates,
            &endpoints,
            (target, from, &service.cut),
            &mut skipped,
        )
        .await
        else {
            break false;
        };
        let _active = Active::new(ep, service.balance);
        if relay::resend(&mut server, &replay).await.is_err() {
            skipped += 1;
            continue;
        }
        match Relay::new(&mut client, server, ep, worker, shard, &mut replay).await {
            Outcome::Done | Outcome::Quiet => break true,
            // closed or failed before answering: the next endpoint gets the bytes
            Outcome::Retry => skipped += 1,
        }
    };
    if skipped > 0 {
        relay::add(
            &shard.retries,
            usize::try_from(skipped).unwrap_or(usize::MAX),
        );
    }
    if !taken {
        relay::add(&shard.errors, 1);
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
    }
    relay::add(&shard.ended, 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Service `name`'s counters once `done` holds for them (the counters are updated as
    /// each connection ends, just after its client saw it end), or after 2 s.
    fn settled(b: &Balancer, name: &str, done: impl Fn(&ServiceStats) -> bool) -> ServiceStats {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let stats = b.stats()[name].clone();
            if done(&stats) || std::time::Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn fetch(addr: SocketAddr) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    fn round_robin_spreads_and_a_refused_endpoint_is_skipped(threads: usize) {
        let b = Balancer::new(threads).unwrap();
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
        let stats = &settled(&b, "web", |s| s.active == 0);
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

    fn an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again(
        threads: usize,
    ) {
        let b = Balancer::new(threads).unwrap();
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
        let stats = &settled(&b, "api", |s| s.active == 0 && s.total >= 6);
        assert_eq!(
            (stats.total, stats.errors, stats.retries),
            (6, 0, 2),
            "{stats:?}"
        );
    }

    fn least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain(threads: usize) {
        let b = Balancer::new(threads).unwrap();
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

    #[test]
    fn round_robin_spreads_and_a_refused_endpoint_is_skipped_1_worker() {
        round_robin_spreads_and_a_refused_endpoint_is_skipped(1);
    }

    #[test]
    fn round_robin_spreads_and_a_refused_endpoint_is_skipped_2_workers() {
        round_robin_spreads_and_a_refused_endpoint_is_skipped(2);
    }

    #[test]
    fn an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again_1_worker() {
        an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again(1);
    }

    #[test]
    fn an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again_2_workers() {
        an_endpoint_that_dies_before_answering_is_replaced_and_gets_the_request_again(2);
    }

    #[test]
    fn least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain_1_worker() {
        least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain(1);
    }

    #[test]
    fn least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain_2_workers() {
        least_conn_prefers_the_idle_endpoint_and_removed_endpoints_drain(2);
    }

    /// An echo server on 127.0.0.1 (each connection in a thread of its own): what it reads
    /// it writes back; at the client's end it writes `bye` and closes.
    fn echo_server() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming().take(20).flatten() {
                std::thread::spawn(move || {
                    let mut c = c;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = c.write_all(b"bye");
                });
            }
        });
        port
    }

    fn serve(b: &Balancer, name: &str, target: u16) -> SocketAddr {
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = front.local_addr().unwrap();
        drop(front);
        b.set_service(
            name,
            &[Listen {
                addrs: vec![addr],
                target,
            }],
            Balance::RoundRobin,
        )
        .unwrap();
        b.set_endpoints(name, &[Ipv4Addr::LOCALHOST], Duration::from_secs(5));
        addr
    }

    #[test]
    fn large_transfers_and_half_closes_pass_through_both_ways() {
        for threads in [1, 2] {
            let b = Balancer::new(threads).unwrap();
            let addr = serve(&b, "echo", echo_server());
            // 4 MiB each way (many buffers' worth), written while the echo is read
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let data: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
            let mut w = s.try_clone().unwrap();
            let sent = data.clone();
            let writer = std::thread::spawn(move || {
                w.write_all(&sent).unwrap();
                // the client's end of sending: the endpoint sees it and answers `bye`
                w.shutdown(std::net::Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            writer.join().unwrap();
            assert_eq!(got.len(), data.len() + 3, "{threads} worker(s)");
            assert!(
                got[..data.len()] == data[..],
                "{threads} worker(s): bytes differ"
            );
            assert_eq!(&got[data.len()..], b"bye");
            let stats = &settled(&b, "echo", |s| s.active == 0);
            assert_eq!(
                (stats.active, stats.total, stats.errors),
                (0, 1, 0),
                "{stats:?}"
            );
            assert_eq!(stats.bytes_in, data.len() as u64);
            assert_eq!(stats.bytes_out, data.len() as u64 + 3);
        }
    }

    #[test]
    fn an_endpoint_that_speaks_first_is_relayed() {
        // a greeting before any request (SMTP, MySQL): the endpoint answers first
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming().take(4).flatten() {
                let mut c = c;
                let _ = c.write_all(b"220 hello\r\n");
                let mut buf = [0u8; 64];
                let n = c.read(&mut buf).unwrap_or(0);
                let _ = c.write_all(&buf[..n]);
            }
        });
        let b = Balancer::new(2).unwrap();
        let addr = serve(&b, "smtp", port);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 11];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"220 hello\r\n");
        s.write_all(b"QUIT").unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "QUIT");
    }

    #[test]
    fn an_address_in_use_is_refused_with_every_worker_count() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        for threads in [1, 2] {
            let b = Balancer::new(threads).unwrap();
            let e = b
                .set_service(
                    "web",
                    &[Listen {
                        addrs: vec![addr],
                        target: 80,
                    }],
                    Balance::RoundRobin,
                )
                .unwrap_err();
            assert!(matches!(e, BalancerError::Bind { .. }), "{e:?}");
            assert!(b.services().is_empty());
        }
    }
}
