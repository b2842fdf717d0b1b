//! Sending batches and waiting for indexer acknowledgement.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use vedette_config::Format;
use vedette_config::sinks::HecSinkConfig;

use super::request::{classify, event_json, request_bodies};
use crate::error::Result;
use crate::sinks::delivery::{Connector, Outcome, Outgoing, all};
use crate::sinks::http::{client, transport_outcome};

/// How often `/services/collector/ack` is polled.
const ACK_POLL: Duration = Duration::from_millis(200);

/// Sends batches to Splunk HEC.
pub struct SplunkHec {
    client: reqwest::Client,
    config: HecSinkConfig,
    format: Format,
    channel: String,
    base: String,
}

impl SplunkHec {
    /// An HEC connector for sink `name`. Without a configured channel, one is derived from
    /// the sink name (stable across restarts).
    pub fn new(name: &str, config: &HecSinkConfig, format: Format) -> Result<Self> {
        let channel = config.channel.clone().unwrap_or_else(|| {
            uuid::Uuid::new_v5(&vedette_pipelines::alert::ALERT_NAMESPACE, format!("hec-channel:{name}").as_bytes())
                .to_string()
        });
        Ok(Self {
            client: client(name, config.timeout, None)?,
            base: config.url.trim_end_matches('/').to_string(),
            config: config.clone(),
            format,
            channel,
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, format!("Splunk {}", self.config.token))
            .header("X-Splunk-Request-Channel", &self.channel)
    }

    /// Posts the batch as requests of at most `max_request_bytes`, one after another (HEC
    /// receives them in order), then — with acknowledgement on — waits for all their acks
    /// together, so several requests are in flight during one ack wait. A request that fails
    /// stops the batch: its events and the later ones are sent again (earlier requests stand).
    async fn send_batch(&self, batch: &[Outgoing]) -> Vec<Outcome> {
        let events = batch.iter().map(|o| event_json(&self.config, self.format, o)).collect();
        let mut out: Vec<Outcome> = Vec::with_capacity(batch.len());
        // (first event, events, ackId) of requests awaiting their acknowledgement.
        let mut awaiting: Vec<(usize, usize, u64)> = Vec::new();
        for (n, body) in request_bodies(events, self.config.max_request_bytes) {
            let start = out.len();
            let resp = match self.post("/services/collector/event").body(body).send().await {
                Ok(r) => r,
                Err(e) => {
                    out.extend(all(&batch[start..], transport_outcome(&e)));
                    break;
                }
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let outcomes = classify(status, &text, n);
            let stop = outcomes.iter().any(|o| !matches!(o, Outcome::Delivered));
            if self.config.ack && !stop {
                let ack_id = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["ackId"].as_u64());
                match ack_id {
                    Some(id) => awaiting.push((start, n, id)),
                    None => {
                        let reason = format!(
                            "HEC answered without an ackId (is indexer acknowledgement enabled for the token?): {text}"
                        );
                        out.extend(all(&batch[start..], Outcome::Retry(reason)));
                        break;
                    }
                }
            }
            out.extend(outcomes);
            if stop {
                out.extend(all(
                    &batch[out.len()..],
                    Outcome::Retry("not sent: an earlier request of the batch failed".into()),
                ));
                break;
            }
        }
        if !awaiting.is_empty() {
            let ids: Vec<u64> = awaiting.iter().map(|a| a.2).collect();
            for ((start, n, _), outcome) in awaiting.into_iter().zip(self.wait_acks(&ids).await) {
                out[start..start + n].fill(outcome);
            }
        }
        out
    }

    /// Polls the ack endpoint until every id is acknowledged or `ack_timeout` passes; one
    /// outcome per id.
    async fn wait_acks(&self, ids: &[u64]) -> Vec<Outcome> {
        let deadline = Instant::now() + self.config.ack_timeout;
        let mut done = vec![false; ids.len()];
        loop {
            let pending: Vec<u64> = ids.iter().zip(&done).filter(|(_, d)| !**d).map(|(id, _)| *id).collect();
            let body = serde_json::json!({ "acks": pending }).to_string();
            match self.post("/services/collector/ack").body(body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    for (id, d) in ids.iter().zip(done.iter_mut()) {
                        *d = *d || v["acks"][id.to_string()].as_bool() == Some(true);
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return ack_outcomes(&done, || Outcome::Retry(format!("HEC ack poll: {status}: {text}")));
                }
                Err(e) => return ack_outcomes(&done, || transport_outcome(&e)),
            }
            if done.iter().all(|d| *d) {
                return vec![Outcome::Delivered; ids.len()];
            }
            if Instant::now() + ACK_POLL > deadline {
                let timeout = self.config.ack_timeout;
                return ack_outcomes(&done, || {
                    Outcome::Retry(format!("HEC did not acknowledge the request within {timeout:?}; sending it again"))
                });
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }

    /// `GET /services/collector/health`: 200 (code 17) when HEC takes data; 503 (code 18,
    /// queues full) or any other answer is not ready.
    async fn check_health(&self) -> std::result::Result<(), String> {
        let url = format!("{}/services/collector/health", self.base);
        let resp = self.client.get(url).send().await.map_err(|e| format!("HEC health: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(format!("HEC health: {status}: {text}"))
    }
}

/// Acknowledged requests are delivered; the others get `failed()`.
fn ack_outcomes(done: &[bool], failed: impl Fn() -> Outcome) -> Vec<Outcome> {
    done.iter().map(|d| if *d { Outcome::Delivered } else { failed() }).collect()
}

impl Connector for SplunkHec {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.send_batch(batch))
    }

    fn health(&mut self) -> BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(self.check_health())
    }

    fn probes_health(&self) -> bool {
        true
    }
}
