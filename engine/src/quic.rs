//! The QUIC listener's endpoint, made to survive a crash gracefully.
//!
//! quinn gives every process a random stateless-reset key and connection-id key. After a
//! kill -9 the restarted engine would then drop the packets of its predecessor's connections
//! silently, and sensors would wait for their idle timeout before reconnecting. Both keys are
//! derived from a secret kept in the data dir (`quic-reset.key`, mode 600), so the new process
//! recognises the old connection ids and answers with stateless resets the sensors accept:
//! they reconnect at once.
//!
//! The socket asks for large kernel buffers ([`SOCKET_BUFFER_BYTES`]): with the default
//! (~208 KiB on Linux) a loaded engine with a thousand sensors dropped ~15 % of incoming
//! datagrams (`RcvbufErrors` in `/proc/net/snmp`), and QUIC's loss recovery then stalled the
//! affected connections and retransmitted (see docs/benchmarks.md).
//!
//! The endpoint and every connection's driver (UDP receive, decryption, ACKs, sends) run on a
//! runtime thread of their own ([`QuicRuntime`]): on the engine's runtime they waited behind
//! rule evaluation and commits whenever both workers were busy, the socket buffer overflowed,
//! and sensors lost packets in bursts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;

use crate::error::{EngineError, Result};

/// Binds the ingest endpoint on `listen` with keys from `data_dir`.
pub fn bind(server: quinn::ServerConfig, listen: SocketAddr, data_dir: &Path) -> Result<quinn::Endpoint> {
    let secret = secret(data_dir)?;
    let reset = hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret, b"stateless reset"));
    let cids = hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret, b"connection ids"));
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(reset));
    endpoint.cid_generator(move || Box::new(KeyedCids(cids.clone())));
    let bind_err = || EngineError::io(format!("binding QUIC listener ingest.listen={listen}"));
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_err())?;
    let (recv, send) = enlarge_buffers(&socket);
    if recv < SOCKET_BUFFER_BYTES / 8 {
        tracing::warn!(
            granted_bytes = recv,
            asked_bytes = SOCKET_BUFFER_BYTES,
            "The kernel capped the QUIC listener's receive buffer: under load datagrams will be dropped and \
             connections stall on loss recovery. Raise it: sysctl -w net.core.rmem_max=16777216 \
             net.core.wmem_max=16777216"
        );
    } else {
        tracing::debug!(recv, send, "QUIC listener socket buffers (bytes, as granted by the kernel)");
    }
    quinn::Endpoint::new(endpoint, Some(server), socket, Arc::new(QuicRuntime::shared())).map_err(bind_err())
}

/// A quinn runtime that drives endpoints and connections on one dedicated thread (shared by
/// every endpoint of the process, kept for its lifetime).
#[derive(Debug, Clone)]
pub struct QuicRuntime(tokio::runtime::Handle);

impl QuicRuntime {
    /// The process's QUIC thread.
    pub fn shared() -> Self {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let rt = RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("vedette-quic")
                .enable_all()
                .build()
                .expect("the QUIC runtime thread starts")
        });
        Self(rt.handle().clone())
    }
}

impl quinn::Runtime for QuicRuntime {
    fn new_timer(&self, i: std::time::Instant) -> std::pin::Pin<Box<dyn quinn::AsyncTimer>> {
        let _in = self.0.enter();
        quinn::TokioRuntime.new_timer(i)
    }

    fn spawn(&self, future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _in = self.0.enter();
        quinn::TokioRuntime.wrap_udp_socket(t)
    }
}

/// The kernel buffer size asked for on QUIC sockets, each way. Linux caps it at
/// `net.core.rmem_max` / `net.core.wmem_max` (raise those for large fleets, see
/// docs/operations.md).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Asks for [`SOCKET_BUFFER_BYTES`] of receive and send buffer on `socket`; returns the sizes
/// the kernel granted (a refusal keeps the default: the socket works, only with more loss
/// under load).
pub fn enlarge_buffers(socket: &std::net::UdpSocket) -> (usize, usize) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    (s.recv_buffer_size().unwrap_or(0), s.send_buffer_size().unwrap_or(0))
}

/// The data dir's QUIC secret (32 random bytes, hex), created on first use.
fn secret(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join("quic-reset.key");
    if let Ok(hex) = std::fs::read_to_string(&path)
        && let Some(bytes) = unhex(hex.trim())
        && bytes.len() == 32
    {
        return Ok(bytes);
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| EngineError::io("generating the QUIC reset key")(std::io::Error::other("no randomness")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::pki::write_file(&path, &hex, true).map_err(EngineError::io(format!("writing {}", path.display())))?;
    Ok(bytes.to_vec())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn derive(secret: &[u8], purpose: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), purpose).as_ref().to_vec()
}

const NONCE: usize = 8;
const TAG: usize = 8;

/// Connection ids = 8 random bytes + 8 bytes of HMAC over them: any process holding the key
/// recognises them.
struct KeyedCids(hmac::Key);

impl KeyedCids {
    fn tag(&self, nonce: &[u8]) -> [u8; TAG] {
        let mut out = [0u8; TAG];
        out.copy_from_slice(&hmac::sign(&self.0, nonce).as_ref()[..TAG]);
        out
    }
}

impl quinn::ConnectionIdGenerator for KeyedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; NONCE + TAG];
        // A failed random source would repeat ids, not break anything security-relevant.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..NONCE]);
        let tag = self.tag(&bytes[..NONCE]);
        bytes[NONCE..].copy_from_slice(&tag);
        quinn::ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> std::result::Result<(), quinn_proto::InvalidCid> {
        let (nonce, tag) = cid.split_at(NONCE.min(cid.len()));
        if tag == self.tag(nonce) { Ok(()) } else { Err(quinn_proto::InvalidCid) }
    }

    fn cid_len(&self) -> usize {
        NONCE + TAG
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use quinn::ConnectionIdGenerator;

    use super::*;

    #[test]
    fn quic_sockets_ask_the_kernel_for_large_buffers() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let (recv, send) = enlarge_buffers(&socket);
        // Linux grants min(asked, net.core.rmem_max), doubled for its bookkeeping.
        let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap().trim().parse().unwrap();
        assert_eq!(recv, 2 * max.min(SOCKET_BUFFER_BYTES).max(before / 2), "receive buffer {before} → {recv}");
        assert!(send > 0);
    }

    fn cids(dir: &Path) -> KeyedCids {
        KeyedCids(hmac::Key::new(hmac::HMAC_SHA256, &derive(&secret(dir).unwrap(), b"connection ids")))
    }

    #[test]
    fn a_restarted_process_recognises_its_predecessors_connection_ids_and_no_one_elses() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut before = cids(a.path());
        let id = before.generate_cid();
        assert_eq!(id.len(), 16);
        assert!(cids(a.path()).validate(&id).is_ok(), "same data dir, same key");
        assert!(cids(b.path()).validate(&id).is_err(), "another engine's ids are not ours");
        assert!(cids(a.path()).validate(&quinn::ConnectionId::new(&[7; 3])).is_err(), "short ids are refused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path().join("quic-reset.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
