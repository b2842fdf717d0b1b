//! Sending bulk requests: request-level errors, per-item results, 413 splitting.

use futures::future::BoxFuture;
use serde_json::Value;
use vedette_config::Format;
use vedette_config::sinks::EsSinkConfig;

use super::request::{bulk_body, item_outcome};
use crate::error::Result;
use crate::sinks::delivery::{Connector, Outcome, Outgoing, all};
use crate::sinks::http::{client, transport_outcome};

/// Sends batches to Elasticsearch `_bulk`.
pub struct Elasticsearch {
    client: reqwest::Client,
    config: EsSinkConfig,
    format: Format,
    url: String,
}

impl Elasticsearch {
    /// An Elasticsearch connector for sink `name`.
    pub fn new(name: &str, config: &EsSinkConfig, format: Format) -> Result<Self> {
        Ok(Self {
            client: client(name, config.timeout, None)?,
            url: format!("{}/_bulk", config.url.trim_end_matches('/')),
            config: config.clone(),
            format,
        })
    }

    /// One `_bulk` request for `batch`; a 413 splits it in two (recursively).
    fn bulk<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let body = bulk_body(&self.config.index, self.format, batch);
            let mut req = self.client.post(&self.url).header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
            if let Some(key) = &self.config.api_key {
                req = req.header(reqwest::header::AUTHORIZATION, format!("ApiKey {key}"));
            } else if let Some(user) = &self.config.username {
                req = req.basic_auth(user, self.config.password.as_deref());
            }
            let resp = match req.body(body).send().await {
                Ok(r) => r,
                Err(e) => return all(batch, transport_outcome(&e)),
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let snippet: String = text.chars().take(300).collect();
            match status.as_u16() {
                200..=299 => {}
                413 if batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    let mut out = self.bulk(a).await;
                    out.extend(self.bulk(b).await);
                    return out;
                }
                413 => {
                    return all(
                        batch,
                        Outcome::Reject(format!("HTTP 413: one alert is larger than the cluster accepts: {snippet}")),
                    );
                }
                401 | 403 => {
                    return all(
                        batch,
                        Outcome::Retry(format!("HTTP {status} (check the sink's credentials): {snippet}")),
                    );
                }
                408 | 429 | 500..=599 => return all(batch, Outcome::Retry(format!("HTTP {status}: {snippet}"))),
                _ => return all(batch, Outcome::Reject(format!("HTTP {status}: {snippet}"))),
            }
            let v: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => return all(batch, Outcome::Retry(format!("unreadable _bulk answer ({e}): {snippet}"))),
            };
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.len() != batch.len() {
                return all(batch, Outcome::Retry(format!("_bulk answered {} items for {}", items.len(), batch.len())));
            }
            items.iter().map(item_outcome).collect()
        })
    }
}

impl Connector for Elasticsearch {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        self.bulk(batch)
    }
}
