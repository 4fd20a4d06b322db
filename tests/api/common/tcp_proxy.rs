//! A TCP proxy in front of PostgreSQL, owned by a test, for the network's
//! failures while the database runs on: every connection cut at once, or
//! all of them falling silent (open, passing nothing either way, as a
//! half-open connection or a hung path: no error reaches either end).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct TcpProxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    silent: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let silent = Arc::new(AtomicBool::new(false));
        let (set, quiet) = (Arc::clone(&connections), Arc::clone(&silent));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let quiet = Arc::clone(&quiet);
                let mut set = set.lock().unwrap();
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let (client, server) = (client.into_split(), server.into_split());
                        tokio::join!(
                            pump(client.0, server.1, &quiet),
                            pump(server.0, client.1, &quiet)
                        );
                    }
                });
            }
        });
        TcpProxy {
            addr,
            connections,
            silent,
            accept,
        }
    }

    /// A proxy in front of the PostgreSQL server of `url` (on this machine),
    /// and the same URL through it.
    pub async fn in_front_of(url: &str) -> (TcpProxy, String) {
        let mut url = url::Url::parse(url).expect("a database URL");
        let upstream = SocketAddr::from(([127, 0, 0, 1], url.port().unwrap_or(5432)));
        let proxy = TcpProxy::start(upstream).await;
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(proxy.addr.port())).expect("a port");
        (proxy, url.into())
    }

    /// Closes every open connection (both ends); returns how many. A COMMIT
    /// already forwarded still commits, but its answer never arrives.
    pub fn cut(&self) -> usize {
        let cut = std::mem::take(&mut *self.connections.lock().unwrap());
        let n = cut.len();
        drop(cut); // aborts the tasks, dropping their sockets
        n
    }

    /// From now on nothing passes; connections stay open.
    pub fn fall_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }

    /// Passes bytes on again (what was dropped meanwhile stays lost).
    pub fn speak_again(&self) {
        self.silent.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either ends, dropping what arrives while
/// silent; dropping `to` then closes its side.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, silent: &AtomicBool) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        if !silent.load(Ordering::SeqCst) && to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
