//! One simulated sensor: its own certificate, HELLO/WELCOME, one data stream, frames replayed
//! while the engine acknowledges them (or at a fixed rate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vedette_engine::sensor::read_control;
use vedette_schemas::frame::{Control, Encoding, Hello, PROTOCOL_VERSION};

use super::frames::{Template, now_us};

/// Counters shared by every sensor task.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent_events: AtomicU64,
    pub(super) acked_events: AtomicU64,
    pub(super) rejected_rows: AtomicU64,
    pub(super) errors: AtomicU64,
}

pub(super) struct SensorIdentity {
    pub(super) id: String,
    pub(super) client: quinn::ClientConfig,
}

/// One sensor: HELLO, one data stream, frames replayed as long as the engine acknowledges
/// them (at most `window` outstanding), or at `frames_per_sec`.
/// What every sensor task shares.
#[derive(Clone)]
pub(super) struct Run {
    pub(super) server: SocketAddr,
    pub(super) encoding: Encoding,
    pub(super) window: u64,
    pub(super) frames_per_sec: Option<f64>,
    pub(super) counters: Arc<Counters>,
    pub(super) stop: tokio::sync::watch::Receiver<bool>,
    pub(super) handshakes: Arc<tokio::sync::Semaphore>,
}

pub(super) async fn run_sensor(
    ep: quinn::Endpoint,
    me: SensorIdentity,
    templates: Arc<Vec<Template>>,
    run: Run,
) -> anyhow::Result<()> {
    let Run { server, encoding, window, frames_per_sec, counters, stop, handshakes } = run;
    // A few handshakes at a time (as a fleet reconnecting after an engine restart would be
    // paced by its backoff), retried until the run ends.
    let permit = handshakes.acquire_owned().await?;
    let conn = loop {
        match ep.connect_with(me.client.clone(), server, "localhost")?.await {
            Ok(c) => break c,
            Err(e) if *stop.borrow() => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let (mut control, mut recv) = conn.open_bi().await?;
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        sensor_version: "vedette-bench/1".into(),
        host: Some(me.id.clone()),
        sensor_id: None,
        schemas: Default::default(),
        low_seq: 0,
    };
    control.write_all(&Control::Hello(hello).to_frame()).await?;
    match read_control(&mut recv).await? {
        Control::Welcome(_) => {}
        other => anyhow::bail!("{}: expected WELCOME, got {other:?}", me.id),
    }
    drop(permit);
    let connected = std::time::Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let rows_of = |seq: u64| templates[(seq as usize - 1) % templates.len()].rows;
    let reader = {
        let (acked, notify, counters, templates) =
            (Arc::clone(&acked), Arc::clone(&notify), Arc::clone(&counters), Arc::clone(&templates));
        tokio::spawn(async move {
            let rows = |seq: u64| templates[(seq as usize - 1) % templates.len()].rows;
            while let Ok(msg) = read_control(&mut recv).await {
                match msg {
                    Control::Ack(a) => {
                        let before = acked.load(Ordering::Acquire);
                        if a.through > before {
                            let n: u64 = (before + 1..=a.through).map(rows).sum();
                            counters.acked_events.fetch_add(n, Ordering::Relaxed);
                            acked.store(a.through, Ordering::Release);
                            notify.notify_one();
                        }
                    }
                    Control::RowErrors(e) => {
                        counters.rejected_rows.fetch_add(e.errors.len() as u64, Ordering::Relaxed);
                    }
                    Control::Error(_) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    let mut data = conn.open_uni().await?;
    let mut buf = Vec::new();
    let mut tick = frames_per_sec.map(|f| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f.max(0.001)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    let mut seq = 0u64;
    while !*stop.borrow() {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        while seq >= acked.load(Ordering::Acquire) + window {
            if *stop.borrow() {
                break;
            }
            if let Some(why) = conn.close_reason() {
                // Lost while waiting for acknowledgements: report it now, with the real time.
                anyhow::bail!(
                    "{}: connection lost after {:.0} s waiting for the ack of frame {}: {why}",
                    me.id,
                    connected.elapsed().as_secs_f64(),
                    acked.load(Ordering::Acquire) + 1
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
        }
        seq += 1;
        let t = &templates[(seq as usize - 1) % templates.len()];
        t.encode(&mut buf, encoding, seq, now_us());
        if let Err(e) = data.write_all(&buf).await {
            // Why the connection went: the engine's close reason, an idle timeout, a reset.
            let why = conn.close_reason().map_or_else(|| e.to_string(), |r| r.to_string());
            anyhow::bail!("{}: frame {seq} not sent after {:.0} s: {why}", me.id, connected.elapsed().as_secs_f64());
        }
        counters.sent_events.fetch_add(rows_of(seq), Ordering::Relaxed);
    }
    let _ = data.finish();
    // Let the last acknowledgements arrive before closing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.abort();
    conn.close(0u32.into(), b"bench done");
    Ok(())
}
