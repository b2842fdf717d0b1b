//! Sending batches and waiting for indexer acknowledgement.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use vedette_config::Format;
use vedette_config::sinks::HecSinkConfig;

use super::request::{classify, events_body};
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

    async fn send_batch(&self, batch: &[Outgoing]) -> Vec<Outcome> {
        let body = events_body(&self.config, self.format, batch);
        let resp = match self.post("/services/collector/event").body(body).send().await {
            Ok(r) => r,
            Err(e) => return all(batch, transport_outcome(&e)),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let outcomes = classify(status, &text, batch.len());
        if !self.config.ack || !status.is_success() {
            return outcomes;
        }
        let ack_id = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["ackId"].as_u64());
        let Some(ack_id) = ack_id else {
            return all(
                batch,
                Outcome::Retry(format!(
                    "HEC answered without an ackId (is indexer acknowledgement enabled for the token?): {text}"
                )),
            );
        };
        all(batch, self.wait_ack(ack_id).await)
    }

    /// Polls the ack endpoint until `ack_id` is acknowledged or `ack_timeout` passes.
    async fn wait_ack(&self, ack_id: u64) -> Outcome {
        let deadline = Instant::now() + self.config.ack_timeout;
        loop {
            let body = serde_json::json!({"acks": [ack_id]}).to_string();
            match self.post("/services/collector/ack").body(body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    if v["acks"][ack_id.to_string()].as_bool() == Some(true) {
                        return Outcome::Delivered;
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    return Outcome::Retry(format!("HEC ack poll: {status}: {text}"));
                }
                Err(e) => return transport_outcome(&e),
            }
            if Instant::now() + ACK_POLL > deadline {
                return Outcome::Retry(format!(
                    "HEC did not acknowledge ackId {ack_id} within {:?}; sending the batch again",
                    self.config.ack_timeout
                ));
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }
}

impl Connector for SplunkHec {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.send_batch(batch))
    }
}
