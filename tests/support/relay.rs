//! A UDP relay between a QUIC client and server that a test can cut (drop every datagram,
//! both ways) and heal: a network partition on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;

/// A running relay.
pub struct Relay {
    /// Where clients send (instead of the server).
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays between clients on a fresh loopback port and `server`.
    pub async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        back.connect(server).await.expect("connect relay");
        let addr = front.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (c, f, b) = (Arc::clone(&cut), Arc::clone(&front), Arc::clone(&back));
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            loop {
                tokio::select! {
                    Ok((n, from)) = f.recv_from(&mut up) => {
                        client = Some(from);
                        if !c.load(Ordering::Relaxed) {
                            let _ = b.send(&up[..n]).await;
                        }
                    }
                    Ok(n) = b.recv(&mut down) => {
                        if let (Some(to), false) = (client, c.load(Ordering::Relaxed)) {
                            let _ = f.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        Self { addr, cut, task }
    }

    /// Drops everything from now on (`true`) or relays again (`false`).
    pub fn cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
