//! Sending a batch and reading the answer.

use futures::future::BoxFuture;
use vedette_config::Format;
use vedette_config::sinks::WebhookSinkConfig;

use super::request::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, body, idempotency_key, sign};
use crate::error::Result;
use crate::sinks::delivery::{Connector, Outcome, Outgoing, all};
use crate::sinks::http::{client, status_outcome, transport_outcome};

/// POSTs batches to a URL.
pub struct Webhook {
    client: reqwest::Client,
    config: WebhookSinkConfig,
    format: Format,
}

impl Webhook {
    /// A webhook for sink `name`.
    pub fn new(name: &str, config: &WebhookSinkConfig, format: Format) -> Result<Self> {
        Ok(Self { client: client(name, config.timeout, config.tls_ca.as_deref())?, config: config.clone(), format })
    }

    async fn post(&self, batch: &[Outgoing]) -> Outcome {
        let (body, content_type) = body(self.format, batch);
        let mut req = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(IDEMPOTENCY_HEADER, idempotency_key(batch));
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        if let Some(secret) = &self.config.secret {
            let ts = chrono::Utc::now().timestamp();
            req = req.header(TIMESTAMP_HEADER, ts.to_string()).header(SIGNATURE_HEADER, sign(secret, ts, &body));
        }
        match req.body(body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                status_outcome(status, &text)
            }
            Err(e) => transport_outcome(&e),
        }
    }
}

impl Connector for Webhook {
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcome = self.post(batch).await;
            all(batch, outcome)
        })
    }
}
