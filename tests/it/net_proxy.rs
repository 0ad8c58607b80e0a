//! A TCP proxy between riffle and a server that can fail the way networks
//! do: `blackhole` makes every connection open now pass nothing in either
//! direction, closes included, while the sockets stay open, like a path
//! that starts dropping packets (a NAT that forgot the flow, a firewall, a
//! failed link); connections opened later pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub struct Proxy {
    pub port: u16,
    /// How many connections were accepted so far; each is numbered.
    accepted: Arc<AtomicU64>,
    /// Connections numbered up to this one are silent.
    cut: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let accepted = Arc::new(AtomicU64::new(0));
        let (cut2, accepted2, target) = (cut.clone(), accepted.clone(), SocketAddr::from(([127, 0, 0, 1], target)));
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let born = accepted2.fetch_add(1, Ordering::SeqCst) + 1;
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pipes.spawn(pipe(cr, sw, born, cut2.clone()));
                pipes.spawn(pipe(sr, cw, born, cut2.clone()));
            }
        });
        Proxy { port, accepted, cut, tasks }
    }

    /// Every connection open now goes silent, for good; later ones pass.
    pub fn blackhole(&self) {
        self.cut.store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, born: u64, cut: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let read = from.read(&mut buf).await;
        if born <= cut.load(Ordering::SeqCst) {
            // Silent: hold both sockets open and pass nothing, not even a close.
            let _hold = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
