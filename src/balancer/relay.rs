//! The hot path: one client connection relayed to one endpoint, both directions in one
//! hand-written future (no `select!`, no per-poll lock: a keep-alive request costs the
//! four socket calls it needs and little else).
//!
//! Until the endpoint has sent its first byte, what the client sent is kept (up to
//! [`REPLAY_LIMIT`]), so that an endpoint that fails or closes without answering (a replica
//! killed with a request in flight) can be replaced by the next one, which gets the same
//! bytes: the relay then ends with [`Outcome::Retry`].
//!
//! A side that has sent its end (read returned 0) is passed on with `shutdown(SHUT_WR)` only
//! while the other side still talks; once both have ended, dropping the sockets closes
//! them (one system call per connection fewer in the common close-after-answer case).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Endpoint, Shard};

/// Until the first byte comes back from an endpoint, what the client sent (up to this much)
/// is kept for a replay on the next endpoint.
pub(super) const REPLAY_LIMIT: usize = 64 * 1024;

/// Buffer of each direction (the size tokio's `copy_bidirectional` uses).
const BUF: usize = 8 * 1024;

/// What the client sent before the endpoint answered, and whether it ended its side.
#[derive(Default)]
pub(super) struct Replay {
    /// The bytes (empty once the limit was passed or the endpoint answered).
    pub(super) bytes: Vec<u8>,
    /// The client ended its side (its read returned 0).
    pub(super) client_eof: bool,
    /// The limit was passed: a failing endpoint can no longer be replaced.
    pub(super) overflowed: bool,
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Both sides ended (or failed after the endpoint answered, or the endpoint was closed
    /// for good): the connection is over.
    Done,
    /// The endpoint failed or closed before answering: try the next with [`Replay`].
    Retry,
    /// The client left without sending a byte and the endpoint closed in turn (a TCP
    /// check, a port scan): a plain close.
    Quiet,
}

/// One direction: read into `buf`, write it on.
struct Pipe {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    /// The reader ended (read returned 0).
    eof: bool,
    /// The writer was shut down (or will not be: see the module doc).
    shut: bool,
}

thread_local! {
    /// Each worker's spare buffers: a connection takes two and gives them back (no
    /// allocation and no zeroing of 16 KiB per connection, no malloc lock shared by the
    /// workers).
    static SPARE: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare buffers kept per worker at most (their memory stays with the process).
const SPARE_MAX: usize = 256;

impl Pipe {
    fn new() -> Self {
        let buf = SPARE
            .with(|s| s.borrow_mut().pop())
            .unwrap_or_else(|| vec![0; BUF].into_boxed_slice());
        Pipe {
            buf,
            pos: 0,
            cap: 0,
            eof: false,
            shut: false,
        }
    }

    fn flushed(&self) -> bool {
        self.pos == self.cap
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARE_MAX {
                s.push(buf);
            }
        });
    }
}

/// Which way a failure happened.
enum Fail {
    /// Reading from or writing to the endpoint.
    Server,
    /// Reading from or writing to the client.
    Client,
}

/// The relay of one connection to one endpoint (see the module doc).
pub(super) struct Relay<'a> {
    client: &'a mut TcpStream,
    server: TcpStream,
    endpoint: &'a Endpoint,
    worker: usize,
    shard: &'a Shard,
    replay: &'a mut Replay,
    up: Pipe,
    down: Pipe,
    /// The endpoint sent its first byte.
    answered: bool,
    /// Slot of this relay's waker in the endpoint's list (to be woken when it closes).
    waker_slot: Option<usize>,
}

impl<'a> Relay<'a> {
    pub(super) fn new(
        client: &'a mut TcpStream,
        server: TcpStream,
        endpoint: &'a Endpoint,
        worker: usize,
        shard: &'a Shard,
        replay: &'a mut Replay,
    ) -> Self {
        let mut up = Pipe::new();
        // a client that ended before this endpoint: its end was passed on already
        up.eof = replay.client_eof;
        up.shut = replay.client_eof;
        Relay {
            client,
            server,
            endpoint,
            worker,
            shard,
            replay,
            up,
            down: Pipe::new(),
            answered: false,
            waker_slot: None,
        }
    }

    /// Whether a failure of the endpoint now can still be hidden by the next one.
    fn replayable(&self) -> bool {
        !self.answered && !self.replay.overflowed
    }

    fn fail(&self, side: Fail) -> Outcome {
        match side {
            Fail::Server if self.replayable() => Outcome::Retry,
            _ => Outcome::Done,
        }
    }

    /// Client to endpoint: `Ready(Ok)` once this direction is over.
    fn poll_up(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        loop {
            if self.up.flushed() && !self.up.eof {
                let mut rb = ReadBuf::new(&mut self.up.buf);
                match Pin::new(&mut *self.client).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Fail::Client)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = rb.filled().len();
                if n == 0 {
                    self.up.eof = true;
                    self.replay.client_eof = true;
                } else {
                    self.up.pos = 0;
                    self.up.cap = n;
                    add(&self.shard.bytes_in, n);
                    if self.replayable() {
                        if self.replay.bytes.len() + n > REPLAY_LIMIT {
                            self.replay.overflowed = true;
                            self.replay.bytes = Vec::new();
                        } else {
                            self.replay.bytes.extend_from_slice(&self.up.buf[..n]);
                        }
                    }
                }
            }
            while !self.up.flushed() {
                let chunk = &self.up.buf[self.up.pos..self.up.cap];
                match ready!(Pin::new(&mut self.server).poll_write(cx, chunk)) {
                    Ok(n) if n > 0 => self.up.pos += n,
                    _ => return Poll::Ready(Err(Fail::Server)),
                }
            }
            if self.up.eof {
                if !self.up.shut
                    && !self.down.eof
                    && ready!(Pin::new(&mut self.server).poll_shutdown(cx)).is_err()
                {
                    return Poll::Ready(Err(Fail::Server));
                }
                self.up.shut = true;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Endpoint to client.
    fn poll_down(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        loop {
            if self.down.flushed() && !self.down.eof {
                let mut rb = ReadBuf::new(&mut self.down.buf);
                match Pin::new(&mut self.server).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Fail::Server)),
                    Poll::Ready(Ok(())) => {}
                }
                let n = rb.filled().len();
                if n == 0 {
                    if self.replayable() {
                        // closed before answering
                        return Poll::Ready(Err(Fail::Server));
                    }
                    self.down.eof = true;
                } else {
                    if !self.answered {
                        self.answered = true;
                        self.replay.bytes = Vec::new();
                    }
                    self.down.pos = 0;
                    self.down.cap = n;
                    add(&self.shard.bytes_out, n);
                }
            }
            while !self.down.flushed() {
                let chunk = &self.down.buf[self.down.pos..self.down.cap];
                match ready!(Pin::new(&mut *self.client).poll_write(cx, chunk)) {
                    Ok(n) if n > 0 => self.down.pos += n,
                    _ => return Poll::Ready(Err(Fail::Client)),
                }
            }
            if self.down.eof {
                if !self.down.shut
                    && !self.up.eof
                    && ready!(Pin::new(&mut *self.client).poll_shutdown(cx)).is_err()
                {
                    return Poll::Ready(Err(Fail::Client));
                }
                self.down.shut = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl Future for Relay<'_> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let this = self.get_mut();
        if this.waker_slot.is_none() {
            this.waker_slot = Some(this.endpoint.watch(this.worker, cx.waker()));
        }
        // removed, and its grace period is over (or its replica is gone)
        if this.endpoint.closed.load(Ordering::Acquire) {
            return Poll::Ready(this.fail(Fail::Server));
        }
        let up = if this.up.shut {
            Poll::Ready(Ok(()))
        } else {
            this.poll_up(cx)
        };
        if let Poll::Ready(Err(side)) = up {
            return Poll::Ready(this.fail(side));
        }
        let down = if this.down.shut {
            Poll::Ready(Ok(()))
        } else {
            this.poll_down(cx)
        };
        match (up, down) {
            (_, Poll::Ready(Err(Fail::Server))) if this.replay.client_eof && !this.answered => {
                // the client left without a byte, the endpoint closed in turn
                if this.replay.bytes.is_empty() && !this.replay.overflowed {
                    Poll::Ready(Outcome::Quiet)
                } else {
                    Poll::Ready(this.fail(Fail::Server))
                }
            }
            (_, Poll::Ready(Err(side))) => Poll::Ready(this.fail(side)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Outcome::Done),
            _ => Poll::Pending,
        }
    }
}

impl Drop for Relay<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.waker_slot {
            self.endpoint.unwatch(self.worker, slot);
        }
    }
}

/// Adds to a counter only this worker writes (a plain load and store: no locked
/// instruction on the hot path).
pub(super) fn add(counter: &std::sync::atomic::AtomicU64, n: usize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n as u64),
        Ordering::Relaxed,
    );
}

/// Writes the replay to a new endpoint (and passes on the client's end).
pub(super) async fn resend(server: &mut TcpStream, replay: &Replay) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if !replay.bytes.is_empty() {
        server.write_all(&replay.bytes).await?;
    }
    if replay.client_eof {
        server.shutdown().await?;
    }
    Ok(())
}
