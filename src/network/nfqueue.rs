//! A user-space delay line for netfilter queues: latency (with jitter) and silent drops on
//! kernels without netem. iptables' `NFQUEUE` hands each matching packet to a netlink socket (only its
//! metadata is copied: an id); a thread of the supervisor, living in the replica's network
//! namespace, keeps the ids and gives the kernel the `ACCEPT` verdict when each packet's
//! time has come, in order.
//!
//! The nfnetlink_queue protocol is spoken directly (a dozen fields, see
//! `include/uapi/linux/netfilter/nfnetlink_queue.h`): the `nfq` crate hides its socket, so it
//! cannot wait for a packet and a deadline at once, and libnetfilter_queue is C.
//!
//! The socket pins its namespace: drop the [`Delayer`] when the replica goes.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::NetworkError;

/// What one queue does to its packets: holds them `latency` ± `jitter`, or drops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Added delay.
    pub latency: Duration,
    /// Uniform ± variation.
    pub jitter: Duration,
    /// Drop every packet instead (a drop decided here, after the sender's `send` returned,
    /// is silent, as on a real link; an iptables `DROP` on the sender's own path makes its
    /// `send` fail with EPERM).
    pub drop: bool,
}

/// Packets one queue holds at most (the kernel drops more, as netem's `limit`).
const MAX_QUEUED: u32 = 10_000;

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;

/// A netfilter queue socket.
struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A netlink message of the queue subsystem: header, `nfgenmsg` (family, version, the queue
/// number big-endian), then attributes.
fn message(kind: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = vec![0u8; NLMSG_HDRLEN];
    buf.extend([0, 0]);
    buf.extend(queue.to_be_bytes());
    for (ty, payload) in attrs {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        buf.extend(len.to_ne_bytes());
        buf.extend(ty.to_ne_bytes());
        buf.extend(*payload);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }
    let total = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    buf[0..4].copy_from_slice(&total.to_ne_bytes());
    buf[4..6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
    buf[6..8].copy_from_slice(&flags.to_ne_bytes());
    buf[8..12].copy_from_slice(&seq.to_ne_bytes());
    buf
}

/// What a received message says.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// A queued packet: its queue and id.
    Packet { queue: u16, id: u32 },
    /// The answer to request `seq`: 0 or a negative errno.
    Ack { seq: u32, error: i32 },
}

/// Parses every message of one datagram (malformed ones are skipped).
fn parse(buf: &[u8]) -> Vec<Incoming> {
    let mut out = Vec::new();
    let mut at = 0;
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while at + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let msg = &buf[at..at + len];
        let kind = u16_at(msg, 4);
        if kind == NLMSG_ERROR && msg.len() >= NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
            let error = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
            let seq = u32_at(msg, NLMSG_HDRLEN + 4 + 8);
            out.push(Incoming::Ack { seq, error });
        } else if kind == NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET && msg.len() >= 20 {
            let queue = u16::from_be_bytes([msg[18], msg[19]]);
            let mut a = 20;
            while a + 4 <= msg.len() {
                let alen = u16_at(msg, a) as usize;
                let ty = u16_at(msg, a + 2) & 0x3fff;
                if alen < 4 || a + alen > msg.len() {
                    break;
                }
                if ty == NFQA_PACKET_HDR && alen >= 8 {
                    let id = u32::from_be_bytes([msg[a + 4], msg[a + 5], msg[a + 6], msg[a + 7]]);
                    out.push(Incoming::Packet { queue, id });
                    break;
                }
                a += (alen + 3) & !3;
            }
        }
        at += (len + 3) & !3;
    }
    out
}

fn last_error(what: &str) -> NetworkError {
    NetworkError::Io {
        what: what.to_string(),
        source: io::Error::last_os_error(),
    }
}

impl Socket {
    /// A netfilter netlink socket in the calling thread's network namespace.
    fn open() -> Result<Socket, NetworkError> {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(last_error("open a netfilter queue socket"));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        let size: libc::c_int = 8 << 20;
        for (level, name, value) in [
            (libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, one),
            (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size),
        ] {
            // SAFETY: setsockopt with an int option; failure only costs buffer room.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    name,
                    std::ptr::from_ref(&value).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        Ok(Socket { fd, seq: 0 })
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl is the kernel's address; the buffer outlives the call.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        loop {
            // SAFETY: valid buffer and address for the duration of the call.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    std::ptr::from_ref(&addr).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => wait(self.fd.as_raw_fd(), libc::POLLOUT, None),
                _ => return Err(e),
            }
        }
    }

    /// One datagram, or `None` when nothing waits.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                return Ok(Some(n));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return Ok(None),
                _ if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                _ => return Err(e),
            }
        }
    }

    /// Sends a configuration request for `queue` and waits for its answer; packets that
    /// arrive meanwhile go to `held`.
    fn config(
        &mut self,
        queue: u16,
        attrs: &[(u16, &[u8])],
        line: &mut Line,
    ) -> Result<(), NetworkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let what = format!("configure netfilter queue {queue}");
        let msg = message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            queue,
            attrs,
        );
        self.send(&msg).map_err(|source| NetworkError::Io {
            what: what.clone(),
            source,
        })?;
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.recv(&mut buf).map_err(|source| NetworkError::Io {
                what: what.clone(),
                source,
            })?;
            let Some(n) = got else {
                if Instant::now() >= deadline {
                    return Err(NetworkError::Netlink {
                        what,
                        message: "the kernel did not answer".into(),
                    });
                }
                wait(
                    self.fd.as_raw_fd(),
                    libc::POLLIN,
                    Some(Duration::from_millis(100)),
                );
                continue;
            };
            for incoming in parse(&buf[..n]) {
                match incoming {
                    Incoming::Ack { seq: s, error } if s == seq => {
                        return if error == 0 {
                            Ok(())
                        } else {
                            Err(NetworkError::Netlink {
                                what,
                                message: io::Error::from_raw_os_error(-error).to_string(),
                            })
                        };
                    }
                    Incoming::Ack { .. } => {}
                    Incoming::Packet { queue, id } => line.hold(queue, id, Instant::now()),
                }
            }
        }
    }

    /// Listens to `queue`: metadata only, GSO packets whole, at most [`MAX_QUEUED`] held.
    fn bind(&mut self, queue: u16, line: &mut Line) -> Result<(), NetworkError> {
        self.config(
            queue,
            &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])],
            line,
        )?;
        self.config(
            queue,
            &[(NFQA_CFG_PARAMS, &[0, 0, 0, 0, NFQNL_COPY_META])],
            line,
        )?;
        self.config(
            queue,
            &[(NFQA_CFG_QUEUE_MAXLEN, &MAX_QUEUED.to_be_bytes())],
            line,
        )?;
        self.config(
            queue,
            &[
                (NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes()),
                (NFQA_CFG_FLAGS, &NFQA_CFG_F_GSO.to_be_bytes()),
            ],
            line,
        )
    }

    fn unbind(&mut self, queue: u16, line: &mut Line) -> Result<(), NetworkError> {
        self.config(
            queue,
            &[(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0])],
            line,
        )
    }

    /// Lets packet `id` of `queue` go on (`accept`) or drops it.
    fn verdict(&self, queue: u16, id: u32, accept: bool) -> io::Result<()> {
        let mut verdict = [0u8; 8];
        let value = if accept { NF_ACCEPT } else { NF_DROP };
        verdict[..4].copy_from_slice(&value.to_be_bytes());
        verdict[4..].copy_from_slice(&id.to_be_bytes());
        let msg = message(
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            0,
            queue,
            &[(NFQA_VERDICT_HDR, &verdict)],
        );
        self.send(&msg)
    }
}

/// Waits until `fd` is ready for `events`, or `timeout` passed (`None`: no limit).
fn wait(fd: RawFd, events: libc::c_short, timeout: Option<Duration>) {
    let mut fds = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    poll(&mut fds, timeout);
}

/// ppoll(2) with a precise timeout (poll's milliseconds would round every delay).
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos().cast_signed()),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: `fds` and `ts` are valid for the call; no signal mask change.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        );
    }
}

/// The packets held, per queue, with when each may go (never before the one ahead of it).
struct Line {
    delays: BTreeMap<u16, Delay>,
    /// Per queue: when each packet goes, its id, and whether it goes on (else dropped).
    held: BTreeMap<u16, VecDeque<(Instant, u32, bool)>>,
    rng: u64,
}

impl Line {
    fn new(delays: BTreeMap<u16, Delay>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
        Line {
            delays,
            held: BTreeMap::new(),
            rng: seed | 1,
        }
    }

    /// A uniform value in [0, 1) (xorshift64*).
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Holds packet `id` of `queue`, seen at `now`.
    fn hold(&mut self, queue: u16, id: u32, now: Instant) {
        let delay = self.delays.get(&queue).copied().unwrap_or(Delay {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            drop: false,
        });
        if delay.drop {
            self.held
                .entry(queue)
                .or_default()
                .push_back((now, id, false));
            return;
        }
        let mut wait = delay.latency;
        if !delay.jitter.is_zero() {
            let offset = delay.jitter.mul_f64(self.uniform() * 2.0);
            wait = (wait + offset).saturating_sub(delay.jitter);
        }
        let list = self.held.entry(queue).or_default();
        let due = list
            .back()
            .map_or(now + wait, |&(last, ..)| last.max(now + wait));
        list.push_back((due, id, true));
    }

    /// The earliest time a held packet may go.
    fn next_due(&self) -> Option<Instant> {
        self.held
            .values()
            .filter_map(|l| l.front().map(|p| p.0))
            .min()
    }

    /// The packets (queue, id, go on) due by `now`, removed from the line, in order; all of
    /// them when `now` is `None`.
    fn release(&mut self, now: Option<Instant>) -> Vec<(u16, u32, bool)> {
        let mut out = Vec::new();
        for (&queue, list) in &mut self.held {
            while let Some(&(due, id, accept)) = list.front() {
                if now.is_some_and(|n| due > n) {
                    break;
                }
                out.push((queue, id, accept));
                list.pop_front();
            }
        }
        self.held.retain(|_, l| !l.is_empty());
        out
    }
}

/// A request to the delay thread.
enum Control {
    /// Listen to exactly these queues, with these delays.
    Set(BTreeMap<u16, Delay>, mpsc::Sender<Result<(), NetworkError>>),
}

/// The delay line of one network namespace: a thread in it that holds the packets of its
/// queues. Dropping it lets every held packet go and stops the thread.
pub struct Delayer {
    control: Option<mpsc::Sender<Control>>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Delayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delayer")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl Delayer {
    /// Starts the delay line of the namespace pinned at `pin`, listening to `queues`.
    ///
    /// # Errors
    ///
    /// The namespace is gone, or the kernel refused the socket or a queue (no
    /// `nfnetlink_queue`, or another process listens to it).
    pub fn start(pin: &Path, queues: BTreeMap<u16, Delay>) -> Result<Delayer, NetworkError> {
        let (wake_read, wake) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| NetworkError::Io {
                    what: "make a pipe".into(),
                    source: e.into(),
                })?;
        let (control, requests) = mpsc::channel::<Control>();
        let (ready_tx, ready) = mpsc::channel();
        let pin = pin.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("fault-delay".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut line = Line::new(BTreeMap::new());
                let started = super::enter_netns(&pin).and_then(|()| {
                    let mut socket = Socket::open()?;
                    for &queue in queues.keys() {
                        socket.bind(queue, &mut line)?;
                    }
                    line.delays = queues;
                    Ok(socket)
                });
                match started {
                    Ok(socket) => {
                        let _ = ready_tx.send(Ok(()));
                        run(socket, line, &wake_read, &requests);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| NetworkError::Io {
                what: "start a delay thread".into(),
                source,
            })?;
        let mut delayer = Delayer {
            control: Some(control),
            wake,
            thread: Some(thread),
        };
        match ready.recv() {
            Ok(Ok(())) => Ok(delayer),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                delayer.control = None;
                Err(NetworkError::Io {
                    what: "start a delay thread".into(),
                    source: io::Error::other("it ended before it was ready"),
                })
            }
        }
    }

    /// Listens to exactly `queues` from now on (packets of a queue no longer listened to
    /// go at once).
    ///
    /// # Errors
    ///
    /// The kernel refused a queue, or the thread is gone.
    pub fn set(&self, queues: BTreeMap<u16, Delay>) -> Result<(), NetworkError> {
        let gone = || NetworkError::Io {
            what: "reach the delay thread".into(),
            source: io::Error::other("it has ended"),
        };
        let (reply, answer) = mpsc::channel();
        self.control
            .as_ref()
            .ok_or_else(gone)?
            .send(Control::Set(queues, reply))
            .map_err(|_| gone())?;
        self.poke();
        answer.recv().map_err(|_| gone())?
    }

    fn poke(&self) {
        let _ = nix::unistd::write(&self.wake, &[1]);
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.control = None;
        self.poke();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The delay thread's loop: wait for a packet, a request or the next due time; hold
/// packets, let them go when due. Ends (letting every held packet go) when the
/// [`Delayer`] is dropped.
fn run(mut socket: Socket, mut line: Line, wake: &OwnedFd, requests: &mpsc::Receiver<Control>) {
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let timeout = line
            .next_due()
            .map(|due| due.saturating_duration_since(Instant::now()));
        let mut fds = [
            libc::pollfd {
                fd: socket.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        poll(&mut fds, timeout);
        if fds[1].revents != 0 {
            let mut drain = [0u8; 64];
            while matches!(nix::unistd::read(wake, &mut drain), Ok(n) if n > 0) {}
            loop {
                match requests.try_recv() {
                    Ok(Control::Set(queues, reply)) => {
                        let _ = reply.send(set_queues(&mut socket, &mut line, queues));
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        for (queue, id, accept) in line.release(None) {
                            let _ = socket.verdict(queue, id, accept);
                        }
                        return;
                    }
                }
            }
        }
        // every datagram waiting, then whatever is due
        loop {
            match socket.recv(&mut buf) {
                Ok(Some(n)) => {
                    let now = Instant::now();
                    for incoming in parse(&buf[..n]) {
                        if let Incoming::Packet { queue, id } = incoming {
                            line.hold(queue, id, now);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // the socket broke: nothing more will come; wait for the drop
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
        for (queue, id, accept) in line.release(Some(Instant::now())) {
            let _ = socket.verdict(queue, id, accept);
        }
    }
}

/// Binds the new queues, lets the packets of the dropped ones go and unbinds them.
fn set_queues(
    socket: &mut Socket,
    line: &mut Line,
    queues: BTreeMap<u16, Delay>,
) -> Result<(), NetworkError> {
    for &queue in queues.keys() {
        if !line.delays.contains_key(&queue) {
            socket.bind(queue, line)?;
        }
    }
    let gone: Vec<u16> = line
        .delays
        .keys()
        .filter(|q| !queues.contains_key(q))
        .copied()
        .collect();
    line.delays = queues;
    for queue in gone {
        for (_, id, accept) in line.held.remove(&queue).unwrap_or_default() {
            let _ = socket.verdict(queue, id, accept);
        }
        socket.unbind(queue, line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_the_queue_and_padded_attributes() {
        let m = message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            258,
            &[(NFQA_CFG_PARAMS, &[0, 0, 0, 0, 1])],
        );
        assert_eq!(m.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 3 << 8 | 2);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[18..20], &[1, 2]);
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 9);
    }

    #[test]
    fn parses_packets_and_acks() {
        // a packet message of queue 5: nfgenmsg, then an attribute before the header one
        let mut p = message(
            NFQNL_MSG_PACKET,
            0,
            0,
            5,
            &[(9, &[1, 2, 3]), (NFQA_PACKET_HDR, &[0, 0, 1, 2, 8, 0, 1])],
        );
        // an error message answering seq 7 with -EBUSY, echoing the request header
        let mut ack = vec![0u8; 16];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend((-libc::EBUSY).to_ne_bytes());
        let mut echoed = vec![0u8; 16];
        echoed[8..12].copy_from_slice(&7u32.to_ne_bytes());
        ack.extend(echoed);
        p.append(&mut ack);
        assert_eq!(
            parse(&p),
            [
                Incoming::Packet { queue: 5, id: 258 },
                Incoming::Ack {
                    seq: 7,
                    error: -libc::EBUSY
                }
            ]
        );
        assert_eq!(parse(&p[..10]), []);
    }

    #[test]
    fn the_line_keeps_order_and_releases_what_is_due() {
        let ms = Duration::from_millis;
        let mut line = Line::new(BTreeMap::from([
            (
                1,
                Delay {
                    latency: ms(100),
                    jitter: ms(50),
                    drop: false,
                },
            ),
            (
                2,
                Delay {
                    latency: ms(10),
                    jitter: Duration::ZERO,
                    drop: false,
                },
            ),
            (
                3,
                Delay {
                    latency: Duration::ZERO,
                    jitter: Duration::ZERO,
                    drop: true,
                },
            ),
        ]));
        let t0 = Instant::now();
        for id in 0..100 {
            line.hold(1, id, t0 + ms(u64::from(id)));
        }
        line.hold(2, 500, t0);
        let dues: Vec<Instant> = line.held[&1].iter().map(|p| p.0).collect();
        line.hold(3, 600, t0);
        assert!(dues.windows(2).all(|w| w[0] <= w[1]), "out of order");
        assert!(dues[0] >= t0 + ms(50) && dues[0] <= t0 + ms(150));
        assert_eq!(line.next_due(), Some(t0));
        assert_eq!(line.release(Some(t0)), [(3, 600, false)]);
        assert_eq!(line.next_due(), Some(t0 + ms(10)));
        assert_eq!(line.release(Some(t0 + ms(10))), [(2, 500, true)]);
        assert!(line.release(Some(t0 + ms(49))).is_empty());
        let all = line.release(None);
        assert_eq!(all.len(), 100);
        assert_eq!(all[99], (1, 99, true));
        assert_eq!(line.next_due(), None);
    }
}
