//! A loopback TCP proxy that can **freeze**: every connection open at that
//! moment goes silent for good (sockets stay open, no byte is forwarded
//! either way), as when a NAT entry or a firewall state is lost, and
//! connections accepted while frozen are silent too. After
//! [`thaw`](FreezeProxy::thaw), new connections are forwarded again; the
//! silent ones stay silent until the proxy is dropped.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

#[derive(Default)]
struct State {
    frozen: AtomicBool,
    /// One "dead" flag per connection ever accepted.
    conns: Mutex<Vec<Arc<AtomicBool>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// See the module docs.
pub struct FreezeProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl FreezeProxy {
    /// Listen on 127.0.0.1:0 and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let dead = Arc::new(AtomicBool::new(st.frozen.load(Ordering::SeqCst)));
                st.conns.lock().unwrap().push(Arc::clone(&dead));
                let task = tokio::spawn(async move {
                    if dead.load(Ordering::SeqCst) {
                        // Accepted while frozen: hold the socket, say nothing.
                        let _hold = client;
                        std::future::pending::<()>().await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, Arc::clone(&dead));
                    let down = pump(sr, cw, dead);
                    tokio::join!(up, down);
                });
                st.tasks.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    /// Silence every open connection for good, and every new one until
    /// [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
        for dead in self.state.conns.lock().unwrap().iter() {
            dead.store(true, Ordering::SeqCst);
        }
    }

    /// Forward new connections again.
    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.conns.lock().unwrap().len()
    }
}

impl Drop for FreezeProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Copy `from` to `to` until EOF, or until `dead`: then hold both sockets
/// open and forward nothing more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) if dead.load(Ordering::SeqCst) => {
                // A silent path does not carry the close either.
                let _hold = to;
                std::future::pending::<()>().await;
                return;
            }
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            let _hold = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
