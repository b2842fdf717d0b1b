//! The peers measured in the same run: raw QUIC loopback with the same frames, decoding alone
//! on every core, and the pack's SQL as DataFusion batch queries.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use vedette_actors::tls;
use vedette_engine::pki;
use vedette_schemas::frame::{self, ALPN, Encoding};

use super::Load;
use super::frames::{Template, event, now_us};

pub(super) struct Peers {
    pub(super) quinn: f64,
    pub(super) decode: f64,
    pub(super) batch: f64,
}

pub(super) async fn run_peers(
    templates: &[Template],
    load: &Load,
    catalog: &vedette_schemas::tables::Catalog,
    pack: &Path,
) -> anyhow::Result<Peers> {
    // The QUIC peer's server uses a development PKI of its own.
    let pki_dir = tempfile::tempdir()?;
    pki::ensure_dev_pki(pki_dir.path())?;
    let paths = &pki::PkiPaths::new(pki_dir.path());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Decoding alone, on every core.
    let decode = {
        let per_thread = Duration::from_secs(2);
        let counts: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..cores)
                .map(|_| {
                    s.spawn(|| {
                        let id = vedette_schemas::decode::Identity {
                            sensor_id: "bench",
                            tenant: "bench",
                            default_host: None,
                            trust_rows: false,
                        };
                        let (started, mut n, mut seq) = (Instant::now(), 0u64, 0u64);
                        let mut buf = Vec::new();
                        while started.elapsed() < per_thread {
                            for t in templates {
                                seq += 1;
                                t.encode(&mut buf, load.encoding, seq, now_us());
                                let body = &buf[frame::HEADER_LEN..];
                                let ty = if load.encoding == Encoding::Arrow {
                                    frame::FrameType::DataArrow
                                } else {
                                    frame::FrameType::DataNdjson
                                };
                                if let (Ok(f), Ok(def)) = (frame::parse_data(ty, body), catalog.get(t.table))
                                    && vedette_schemas::decode::decode_frame(def, &f, &id, usize::MAX).is_ok()
                                {
                                    n += t.rows;
                                }
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        counts.iter().sum::<u64>() as f64 / per_thread.as_secs_f64()
    };

    // The rule SQL as one DataFusion batch query per rule over the process events.
    let batch = {
        let text = std::fs::read_to_string(pack)?;
        let p = vedette_pipelines::rule::Pack::from_yaml(&pack.display().to_string(), &text)?;
        let rows: Vec<String> = (0..65_536)
            .map(|n| {
                let (mut v, _) = event("process_events", n, "peer", load.suspicious_every);
                v["ts"] = json!(1_700_000_000_000_000i64 + n as i64);
                v.to_string()
            })
            .collect();
        let batches = crate::decode_batches("process_events", rows.into_iter(), 8192)?;
        let ctx = crate::datafusion_ctx(&batches)?;
        let started = Instant::now();
        for r in p.rules.iter().filter(|r| r.sql.contains("process_events")) {
            ctx.sql(&r.sql).await?.collect().await?;
        }
        65_536.0 / started.elapsed().as_secs_f64()
    };

    // Raw QUIC loopback: the same frames, received and dropped.
    let quinn = quinn_peer(templates, load.encoding, paths, load.sensors.min(64)).await?;
    Ok(Peers { quinn, decode, batch })
}

struct NoRevocations;

impl tls::RevocationCheck for NoRevocations {
    fn is_revoked(&self, _: &tls::PeerIdentity) -> bool {
        false
    }
}

async fn quinn_peer(
    templates: &[Template],
    encoding: Encoding,
    paths: &pki::PkiPaths,
    conns: usize,
) -> anyhow::Result<f64> {
    let ca = std::fs::read(&paths.ca_cert)?;
    let server = tls::server_config(
        &ca,
        &std::fs::read(&paths.server_cert)?,
        &std::fs::read(&paths.server_key)?,
        Duration::from_secs(30),
        vedette_config::IngestConfig::default().receive_window_bytes,
        Arc::new(NoRevocations),
        false,
    )?;
    let ep = super::endpoint(Some(server))?;
    let addr = ep.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let acceptor = {
        let (ep, received) = (ep.clone(), Arc::clone(&received));
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok(mut s) = conn.accept_uni().await {
                        let received = Arc::clone(&received);
                        tokio::spawn(async move {
                            while let Ok(Some(chunk)) = s.read_chunk(usize::MAX, true).await {
                                received.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                            }
                        });
                    }
                });
            }
        })
    };
    let ca_pem = std::fs::read(&paths.ca_cert)?;
    let (cert, key) = paths.sensor(pki::DEMO_SENSOR_ID);
    let (cert, key) = (std::fs::read(cert)?, std::fs::read(key)?);
    let client = tls::client_config(&ca_pem, Some((&cert, &key)), ALPN)?;
    let frames: Arc<Vec<(Vec<u8>, u64)>> = Arc::new(
        templates
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut b = Vec::new();
                t.encode(&mut b, encoding, i as u64 + 1, now_us());
                (b, t.rows)
            })
            .collect(),
    );
    let cycle_bytes: u64 = frames.iter().map(|(b, _)| b.len() as u64).sum();
    let cycle_rows: u64 = frames.iter().map(|(_, r)| *r).sum();
    let run_for = Duration::from_secs(3);
    let client_ep = super::endpoint(None)?;
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (client_ep, client, frames) = (client_ep.clone(), client.clone(), Arc::clone(&frames));
        senders.push(tokio::spawn(async move {
            let conn = client_ep.connect_with(client, addr, "localhost").ok()?.await.ok()?;
            let mut s = conn.open_uni().await.ok()?;
            let started = Instant::now();
            while started.elapsed() < run_for {
                for (b, _) in frames.iter() {
                    s.write_all(b).await.ok()?;
                }
            }
            let _ = s.finish();
            Some(conn)
        }));
    }
    let started = Instant::now();
    let mut conns_done = Vec::new();
    for s in senders {
        conns_done.push(s.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let bytes = received.load(Ordering::Relaxed);
    drop(conns_done);
    acceptor.abort();
    ep.close(0u32.into(), b"");
    Ok(bytes as f64 / cycle_bytes as f64 * cycle_rows as f64 / secs)
}
