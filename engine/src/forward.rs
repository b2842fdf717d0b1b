//! The `forward` sink: an edge engine's alerts to an upstream vedette, over the same QUIC +
//! mTLS protocol sensors speak, as ALERTS frames. The edge authenticates with an edge
//! certificate (tenant `vedette-edge`); each batch is one frame with its own sequence number,
//! and counts as delivered only when the upstream acknowledged it — which it does once the
//! alerts are durable in its own spools. A batch that is not acknowledged within `ack_timeout`
//! is sent again as a new frame; the upstream's dedup ledger drops the alerts it already has.
//!
//! Each forwarded alert names the sinks this edge delivers to itself (`claimed`): the upstream
//! skips its sinks of those names for that alert, so a destination both nodes know gets it once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use vedette_actors::sinks::delivery::{Connector, Outcome, Outgoing, all};
use vedette_config::sinks::ForwardSinkConfig;
use vedette_config::{Connector as Kind, Route, SinkConfig};
use vedette_pipelines::alert::Forwarded;
use vedette_schemas::frame::{self, Control, Heartbeat, Hello, PROTOCOL_VERSION};

use crate::sensor::{self, SensorConfig};

/// The sink names an edge claims: the sinks it delivers to itself that the upstream may also
/// have — network destinations with route `direct`, and with route `hybrid` those that cannot
/// fold a repeat by alert id (Elasticsearch and Kafka can: both nodes deliver to them). Files
/// and stdout are local to each node and never claimed.
pub fn claimed(sinks: &[SinkConfig]) -> Vec<String> {
    sinks
        .iter()
        .filter(|s| {
            !matches!(
                (&s.connector, s.common.route),
                (Kind::Stdout {} | Kind::File(_) | Kind::History {} | Kind::Forward(_), _)
                    | (_, Route::Proxy)
                    | (Kind::Elasticsearch(_) | Kind::Kafka(_), Route::Hybrid)
            )
        })
        .map(|s| s.name().to_string())
        .collect()
}

/// What the upstream answered about a frame.
type Answer = Result<(), String>;

struct Link {
    conn: quinn::Connection,
    data: quinn::SendStream,
    answers: mpsc::UnboundedReceiver<(u64, Answer)>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.conn.close(0u32.into(), b"edge reconnecting");
    }
}

/// The forward connector.
pub struct Forward {
    cfg: SensorConfig,
    ack_timeout: Duration,
    claimed: Vec<String>,
    next_seq: u64,
    link: Option<Link>,
    /// Where rule sets from the upstream go (`rules.follow_upstream`); `None`: ignored.
    follow: Option<mpsc::UnboundedSender<crate::rulesync::Received>>,
    /// While idle and following: no reconnect attempt before this, and the current wait.
    idle_retry: (std::time::Instant, Duration),
}

/// First and longest wait between idle reconnect attempts to an unreachable upstream.
const IDLE_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

impl Forward {
    /// A connector for `config`; relative paths are inside `data_dir`.
    pub fn new(
        config: &ForwardSinkConfig,
        data_dir: &Path,
        claimed: Vec<String>,
        follow: Option<mpsc::UnboundedSender<crate::rulesync::Received>>,
    ) -> Result<Self, String> {
        let server = config.server.parse().map_err(|_| format!("`{}` is not an ip:port address", config.server))?;
        let path = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) };
        let mut cfg = SensorConfig::new(server, path(&config.ca), path(&config.cert), path(&config.key), "edge");
        cfg.server_name = config.server_name.clone();
        let idle_retry = (std::time::Instant::now(), IDLE_RETRY.0);
        Ok(Self { cfg, ack_timeout: config.ack_timeout, claimed, next_seq: 0, link: None, follow, idle_retry })
    }

    async fn connect(&mut self) -> Result<&mut Link, String> {
        if self.link.is_none() {
            let ep = sensor::endpoint(&self.cfg).map_err(|e| e.to_string())?;
            let hello = Hello {
                protocol: PROTOCOL_VERSION,
                sensor_version: format!("vedette-edge/{}", env!("CARGO_PKG_VERSION")),
                host: None,
                sensor_id: None,
                schemas: Default::default(),
                low_seq: self.next_seq,
            };
            let s = sensor::connect(&ep, &self.cfg, hello).await.map_err(|e| e.to_string())?;
            self.next_seq = self.next_seq.max(s.welcome.highest_seq + 1);
            let data = s.conn.open_uni().await.map_err(|e| e.to_string())?;
            let (tx, answers) = mpsc::unbounded_channel();
            let beat = Duration::from_millis(s.welcome.heartbeat_interval_ms.max(100));
            let (mut ctrl_send, mut ctrl_recv) = (s.ctrl_send, s.ctrl_recv);
            let (control, mut outgoing) = mpsc::unbounded_channel::<Control>();
            // Heartbeats keep the edge "online" in the upstream's fleet view between batches;
            // RULES_APPLIED answers go out on the same stream.
            let writer = tokio::spawn(async move {
                let mut tick = tokio::time::interval(beat);
                loop {
                    let msg = tokio::select! {
                        _ = tick.tick() => Control::Heartbeat(Heartbeat { ts: chrono::Utc::now().timestamp_micros() }),
                        m = outgoing.recv() => match m { Some(m) => m, None => return },
                    };
                    if ctrl_send.write_all(&msg.to_frame()).await.is_err() {
                        return;
                    }
                }
            });
            // Answers are read all the time, so the upstream's control stream never backs up.
            let (follow, answer_to) = (self.follow.clone(), control);
            let reader = tokio::spawn(async move {
                while let Ok(msg) = sensor::read_control(&mut ctrl_recv).await {
                    let answer = match msg {
                        Control::Ack(a) => (a.seq, Ok(())),
                        Control::Error(e) => (e.seq.unwrap_or(0), Err(format!("{}: {}", e.code, e.message))),
                        Control::Rules(set) => {
                            if let Some(f) = &follow {
                                let _ = f.send((set, answer_to.clone()));
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    if tx.send(answer).is_err() {
                        return;
                    }
                }
            });
            self.link = Some(Link { conn: s.conn, data, answers, tasks: [writer, reader] });
        }
        Ok(self.link.as_mut().expect("connected above"))
    }

    async fn forward(&mut self, batch: &[Outgoing]) -> Result<(), String> {
        let mut lines = Vec::new();
        for o in batch {
            let f = Forwarded { alert: o.alert.clone(), claimed: self.claimed.clone() };
            serde_json::to_writer(&mut lines, &f).map_err(|e| e.to_string())?;
            lines.push(b'\n');
        }
        let timeout = self.ack_timeout;
        self.connect().await?;
        // A frame sent again gets a new number: the upstream drops the alerts it has.
        let seq = {
            let s = self.next_seq;
            self.next_seq += 1;
            s
        };
        let link = self.link.as_mut().ok_or("not connected")?;
        let mut frame_bytes = Vec::with_capacity(lines.len() + 16);
        frame::encode_alerts(&mut frame_bytes, seq, &lines);
        link.data.write_all(&frame_bytes).await.map_err(|e| format!("sending to the upstream: {e}"))?;
        let wait = async {
            while let Some((at, answer)) = link.answers.recv().await {
                match answer {
                    Ok(()) if at >= seq => return Ok(()),
                    Err(e) if at == seq || at == 0 => return Err(format!("the upstream refused the alerts: {e}")),
                    _ => {}
                }
            }
            Err("the upstream closed the connection".to_string())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(format!("no acknowledgement from the upstream within {timeout:?}")),
        }
    }
}

impl Connector for Forward {
    /// An engine that follows its upstream's rules stays connected without alerts to send, so
    /// rule sets reach it.
    fn idle(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let dead = self.link.as_ref().is_some_and(|l| l.conn.close_reason().is_some());
            if dead {
                self.link = None;
            }
            if self.follow.is_none() || self.link.is_some() || std::time::Instant::now() < self.idle_retry.0 {
                return;
            }
            match self.connect().await {
                Ok(_) => self.idle_retry = (std::time::Instant::now(), IDLE_RETRY.0),
                Err(e) => {
                    let wait = self.idle_retry.1;
                    tracing::debug!(error = %e, retry_in_s = wait.as_secs(), "Cannot reach the upstream to follow its rules.");
                    self.idle_retry = (std::time::Instant::now() + wait, (wait * 2).min(IDLE_RETRY.1));
                }
            }
        })
    }

    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            match self.forward(batch).await {
                Ok(()) => all(batch, Outcome::Delivered),
                Err(e) => {
                    self.link = None;
                    all(batch, Outcome::Retry(e))
                }
            }
        })
    }
}

/// The connector factory for a forward sink of an engine whose sinks are `sinks`.
pub fn factory(
    config: &ForwardSinkConfig,
    data_dir: &Path,
    sinks: &[SinkConfig],
    follow: Option<mpsc::UnboundedSender<crate::rulesync::Received>>,
) -> Result<vedette_actors::sinks::ConnectorFactory, String> {
    let (config, dir, claimed) = (config.clone(), data_dir.to_path_buf(), claimed(sinks));
    Forward::new(&config, &dir, claimed.clone(), follow.clone())?;
    Ok(Arc::new(move || {
        Forward::new(&config, &dir, claimed.clone(), follow.clone())
            .map(|f| Box::new(f) as Box<dyn Connector>)
            .map_err(|reason| vedette_actors::ActorError::Spawn { name: "forward".into(), reason })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_claims_the_network_destinations_it_alone_delivers() {
        let text = r#"
            [[sinks]]
            name = "hec"
            type = "splunk_hec"
            url = "http://h:8088"
            token = "t"
            route = "hybrid"
            [[sinks]]
            name = "es"
            type = "elasticsearch"
            url = "http://e:9200"
            index = "a"
            route = "hybrid"
            [[sinks]]
            name = "hook"
            type = "webhook"
            url = "http://w/"
            secret = "s"
            [[sinks]]
            name = "kafka"
            type = "kafka"
            brokers = "k:9092"
            topic = "t"
            route = "proxy"
            [[sinks]]
            name = "local"
            type = "file"
            path = "a.jsonl"
            [[sinks]]
            name = "up"
            type = "forward"
            server = "127.0.0.1:7700"
            ca = "ca.crt"
            cert = "e.crt"
            key = "e.key"
        "#;
        let config = vedette_config::Config::from_toml_str(text).unwrap();
        // HEC (hybrid, no idempotency) and the webhook (direct): only this node delivers;
        // Elasticsearch (hybrid) folds repeats, Kafka is proxied, the file is local.
        assert_eq!(claimed(&config.sinks), ["hec", "hook"]);
    }
}
