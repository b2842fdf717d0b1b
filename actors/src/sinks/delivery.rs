//! The delivery loop every sink runs: read the oldest spooled alerts, encode, send through the
//! connector, and remove only what the destination confirmed (or refused for good, into the
//! dead-letter queue). Failed records are retried first, with backoff and a circuit breaker,
//! so delivery order follows spool order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{debug, error, warn};
use vedette_config::{Format, SinkConfig};
use vedette_pipelines::alert::Alert;

use super::policy::{Backoff, Breaker, BreakerState, TokenBucket};
use super::spool::{DeadLetters, Spool};
use crate::metrics::Metrics;

/// One alert on its way out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Spool sequence number.
    pub seq: u64,
    /// The alert.
    pub alert: Alert,
    /// The alert in the sink's format.
    pub body: Vec<u8>,
}

/// What the destination said about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed: leaves the spool.
    Delivered,
    /// Not delivered, may succeed later (network, 429, 5xx, timeouts): stays in the spool.
    Retry(String),
    /// Refused for good (4xx, mapping errors): moved to the dead-letter queue with the reason.
    Reject(String),
}

/// A destination. `send` returns one outcome per record, in order.
pub trait Connector: Send + 'static {
    /// Sends one batch.
    fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>>;
}

/// Every record of a batch with the same outcome.
pub fn all(batch: &[Outgoing], outcome: Outcome) -> Vec<Outcome> {
    vec![outcome; batch.len()]
}

/// Live state of a sink, for `/health/ready` and the API.
#[derive(Debug, Clone)]
pub struct SinkStatus {
    /// Breaker state.
    pub breaker: BreakerState,
    /// Last delivery error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// A running sink's shared parts.
pub struct SinkHandle {
    /// Sink name.
    pub name: String,
    /// Its spool.
    pub spool: Arc<Spool>,
    /// Its dead-letter queue.
    pub dead_letters: Arc<DeadLetters>,
    /// Breaker state and last error.
    pub status: Arc<Mutex<SinkStatus>>,
    /// The sink's settings.
    pub config: SinkConfig,
}

/// The delivery loop of one sink.
pub struct Delivery {
    handle: Arc<SinkHandle>,
    format: Format,
    metrics: Metrics,
    connector: Box<dyn Connector>,
}

impl Delivery {
    /// A loop delivering `handle`'s spool through `connector`.
    pub fn new(handle: Arc<SinkHandle>, metrics: Metrics, connector: Box<dyn Connector>) -> Self {
        let format = handle.config.format();
        Self { handle, format, metrics, connector }
    }

    /// Runs until `stop` turns true (at a batch boundary; unconfirmed records stay spooled).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let name = self.handle.name.clone();
        let common = self.handle.config.common.clone();
        let spool = Arc::clone(&self.handle.spool);
        let mut backoff = Backoff::new(&common.retry);
        let mut breaker = Breaker::new(&common.breaker);
        let mut bucket = common.rate_limit.as_ref().map(|r| TokenBucket::new(r, Instant::now()));
        let mut attempt = 0u32;
        let mut linger_from: Option<Instant> = None;
        let label = [name.as_str()];
        loop {
            if *stop.borrow() {
                return;
            }
            self.publish_depth();
            let records = match spool.read(0, common.batch.max_events, common.batch.max_bytes) {
                Ok(r) => r,
                Err(e) => {
                    error!(sink = %name, error = %e, "Reading the spool failed; retrying.");
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                linger_from = None;
                tokio::select! {
                    _ = spool.wait_for_data() => {}
                    r = stop.changed() => if r.is_err() { return },
                }
                continue;
            }
            // Let a small batch fill up for at most `linger` (retries go at once).
            let bytes: u64 = records.iter().map(|r| r.1.len() as u64).sum();
            let full = records.len() >= common.batch.max_events || bytes * 2 >= common.batch.max_bytes;
            if !full && attempt == 0 {
                let since = *linger_from.get_or_insert_with(Instant::now);
                let left = common.batch.linger.saturating_sub(since.elapsed());
                if !left.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        _ = spool.wait_for_data() => {}
                        r = stop.changed() => if r.is_err() { return },
                    }
                    continue;
                }
            }
            linger_from = None;
            // Breaker and rate limit.
            let wait = breaker.wait(Instant::now());
            if !wait.is_zero() {
                self.set_breaker(breaker.state(Instant::now()));
                if sleep_or_stop(wait, &mut stop).await {
                    return;
                }
            }
            if let Some(b) = bucket.as_mut() {
                while let Err(wait) = b.take(records.len(), Instant::now()) {
                    if sleep_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
            let (batch, mut outcomes) = self.encode(records);
            if !batch.is_empty() {
                let sent = self.connector.send(&batch).await;
                outcomes.extend(batch.iter().map(|o| o.seq).zip(sent));
            }
            let failed = self.settle(&batch, outcomes);
            if let Some(reason) = failed {
                breaker.failure(Instant::now());
                let state = breaker.state(Instant::now());
                self.set_breaker(state);
                self.set_error(Some(reason.clone()));
                self.metrics.sink_errors.with_label_values(&label).inc();
                let delay = backoff.delay(attempt);
                warn!(sink = %name, attempt, breaker = state.as_str(), error = %reason, retry_in = ?delay, "Delivery failed; the alerts stay spooled and will be retried.");
                attempt = attempt.saturating_add(1);
                if sleep_or_stop(delay, &mut stop).await {
                    return;
                }
            } else {
                if attempt > 0 {
                    debug!(sink = %name, attempt, "Delivery recovered.");
                }
                attempt = 0;
                breaker.success();
                self.set_breaker(BreakerState::Closed);
                self.set_error(None);
            }
        }
    }

    /// Decodes and encodes spooled records; records that cannot be decoded are rejected.
    fn encode(&self, records: Vec<super::spool::Record>) -> (Vec<Outgoing>, Vec<(u64, Outcome)>) {
        let mut batch = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        for (seq, bytes) in records {
            match serde_json::from_slice::<Alert>(&bytes) {
                Ok(alert) => {
                    let body = vedette_pipelines::formats::encode(self.format, &alert);
                    batch.push(Outgoing { seq, alert, body });
                }
                Err(e) => bad.push((seq, Outcome::Reject(format!("spooled record is not an alert: {e}")))),
            }
        }
        (batch, bad)
    }

    /// Applies outcomes to the spool; returns the first retryable reason, if any.
    fn settle(&self, batch: &[Outgoing], outcomes: Vec<(u64, Outcome)>) -> Option<String> {
        let label = [self.handle.name.as_str()];
        let mut done = Vec::new();
        let mut retry: Option<String> = None;
        let now = chrono::Utc::now();
        for (seq, outcome) in outcomes {
            match outcome {
                Outcome::Delivered => {
                    done.push(seq);
                    self.metrics.sink_delivered.with_label_values(&label).inc();
                    if let Some(o) = batch.iter().find(|o| o.seq == seq) {
                        let latency = (now - o.alert.detected_at).num_microseconds().unwrap_or(0).max(0);
                        self.metrics.sink_delivery_latency.with_label_values(&label).observe(latency as f64 / 1e6);
                    }
                }
                Outcome::Reject(reason) => {
                    let bytes = match batch.iter().find(|o| o.seq == seq) {
                        Some(o) => serde_json::to_vec(&o.alert).expect("alerts serialize"),
                        None => self.handle.spool.get(seq).unwrap_or_default(),
                    };
                    match self.handle.dead_letters.push(&bytes, &reason) {
                        Ok(_) => {
                            done.push(seq);
                            self.metrics.sink_dead_lettered.with_label_values(&label).inc();
                            warn!(sink = %self.handle.name, seq, reason = %reason, "Alert refused by the destination; moved to the dead-letter queue.");
                        }
                        Err(e) => {
                            error!(sink = %self.handle.name, error = %e, "Writing the dead-letter queue failed; the alert stays spooled.");
                            retry.get_or_insert(e.to_string());
                        }
                    }
                }
                Outcome::Retry(reason) => {
                    self.metrics.sink_retried.with_label_values(&label).inc();
                    retry.get_or_insert(reason);
                }
            }
        }
        if let Err(e) = self.handle.spool.remove(&done) {
            error!(sink = %self.handle.name, error = %e, "Removing delivered alerts from the spool failed; they may be sent again.");
        }
        retry
    }

    fn publish_depth(&self) {
        let (records, bytes) = self.handle.spool.depth();
        let label = [self.handle.name.as_str()];
        self.metrics.sink_spool_records.with_label_values(&label).set(records as i64);
        self.metrics.sink_spool_bytes.with_label_values(&label).set(bytes as i64);
    }

    fn set_breaker(&self, state: BreakerState) {
        self.metrics.sink_breaker_state.with_label_values(&[self.handle.name.as_str()]).set(state.gauge());
        self.handle.status.lock().expect("status lock is never poisoned").breaker = state;
    }

    fn set_error(&self, e: Option<String>) {
        self.handle.status.lock().expect("status lock is never poisoned").last_error = e;
    }
}

/// Sleeps for `d`; returns true if `stop` turned true meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}
