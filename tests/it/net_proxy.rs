//! A TCP proxy between riffle and a server that can fail the way networks
//! do, on every connection open at the moment of the fault (connections
//! opened later pass):
//!
//! - `blackhole`: nothing passes in either direction, closes included,
//!   while the sockets stay open, like a path that starts dropping packets
//!   (a NAT that forgot the flow, a firewall, a failed link);
//! - `reset`: both ends get a connection reset (RST), as when a middlebox or
//!   the server's host drops the connection;
//! - `half_close`: riffle's end reads end-of-stream (the server's side sent
//!   FIN) while what riffle writes still reaches the server.
//!
//! And `garble` changes bytes on their way to riffle, on every connection,
//! until `ungarble`: a server (or a path) that sends bytes riffle must refuse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    Silent = 0,
    Reset = 1,
    HalfClose = 2,
}

/// Which way a pipe copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    ToServer,
    ToClient,
}

pub struct Proxy {
    pub port: u16,
    /// How many connections were accepted so far; each is numbered.
    accepted: Arc<AtomicU64>,
    /// Connections numbered up to this one are cut (with `fault`).
    cut: watch::Sender<u64>,
    fault: Arc<AtomicU8>,
    garbling: Garbling,
    tasks: JoinSet<()>,
}

/// Bytes to find, and the bytes put in their place.
type Swap = (Vec<u8>, Vec<u8>);

/// What `garble` replaces and how many times it did.
#[derive(Clone, Default)]
struct Garbling {
    with: Arc<std::sync::Mutex<Option<Swap>>>,
    done: Arc<AtomicU64>,
}

impl Garbling {
    /// Replaces what is asked in `bytes` (a chunk as read: the tests make
    /// sure what they garble arrives in one read).
    fn apply(&self, bytes: &mut [u8]) {
        let with = self.with.lock().unwrap();
        let Some((find, put)) = with.as_ref() else { return };
        let mut i = 0;
        while i + find.len() <= bytes.len() {
            if bytes[i..].starts_with(find) {
                bytes[i..i + put.len()].copy_from_slice(put);
                self.done.fetch_add(1, Ordering::SeqCst);
                i += find.len();
            } else {
                i += 1;
            }
        }
    }
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy::on(listener, target)
    }

    /// A proxy listening on `port` (for a server that must advertise the
    /// proxy's address, such as a Kafka broker).
    pub async fn start_on(port: u16, target: u16) -> Proxy {
        Proxy::on(TcpListener::bind(("127.0.0.1", port)).await.unwrap(), target)
    }

    fn on(listener: TcpListener, target: u16) -> Proxy {
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = watch::channel(0u64);
        let fault = Arc::new(AtomicU8::new(Fault::Silent as u8));
        let mut tasks = JoinSet::new();
        let accepted = Arc::new(AtomicU64::new(0));
        let garbling = Garbling::default();
        let (accepted2, fault2, garbling2, target) =
            (accepted.clone(), fault.clone(), garbling.clone(), SocketAddr::from(([127, 0, 0, 1], target)));
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                // A close is then a reset: what `reset` needs.
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                let born = accepted2.fetch_add(1, Ordering::SeqCst) + 1;
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pipes.spawn(pipe(cr, sw, born, Way::ToServer, cut_rx.clone(), fault2.clone(), None));
                pipes.spawn(pipe(sr, cw, born, Way::ToClient, cut_rx.clone(), fault2.clone(), Some(garbling2.clone())));
            }
        });
        Proxy { port, accepted, cut, fault, garbling, tasks }
    }

    fn cut(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.cut.send_replace(self.accepted.load(Ordering::SeqCst));
    }

    /// Every connection open now goes silent, for good.
    pub fn blackhole(&self) {
        self.cut(Fault::Silent);
    }

    /// Every connection open now is reset, both ends.
    pub fn reset(&self) {
        self.cut(Fault::Reset);
    }

    /// Every connection open now reads end-of-stream on riffle's side.
    pub fn half_close(&self) {
        self.cut(Fault::HalfClose);
    }

    /// From now on, `find` on its way to riffle arrives as `put` (as long).
    pub fn garble(&self, find: &[u8], put: &[u8]) {
        assert_eq!(find.len(), put.len(), "a garbled stream keeps its length");
        *self.garbling.with.lock().unwrap() = Some((find.to_vec(), put.to_vec()));
    }

    /// Bytes pass unchanged again.
    pub fn ungarble(&self) {
        *self.garbling.with.lock().unwrap() = None;
    }

    /// How many times bytes were garbled so far.
    pub fn garbled(&self) -> u64 {
        self.garbling.done.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    way: Way,
    mut cut: watch::Receiver<u64>,
    fault: Arc<AtomicU8>,
    garbling: Option<Garbling>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = cut.changed() => None,
        };
        if born <= *cut.borrow() {
            match fault.load(Ordering::SeqCst) {
                f if f == Fault::Reset as u8 => return, // both halves dropped with linger 0: RST
                f if f == Fault::HalfClose as u8 && way == Way::ToClient => {
                    let _ = to.shutdown().await;
                    // Hold the sockets; drop what the server sends.
                    let _hold = to;
                    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
                    std::future::pending::<()>().await;
                    return;
                }
                f if f == Fault::HalfClose as u8 => {} // riffle's writes still pass
                _ => {
                    // Silent: hold both sockets open and pass nothing, not even a close.
                    let _hold = (from, to);
                    std::future::pending::<()>().await;
                    return;
                }
            }
        }
        match read {
            None => continue,
            Some(Ok(0)) | Some(Err(_)) => {
                let _ = to.shutdown().await;
                return;
            }
            Some(Ok(n)) => {
                if let Some(g) = &garbling {
                    g.apply(&mut buf[..n]);
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
