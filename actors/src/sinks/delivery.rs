//! The delivery loop every sink runs: read the oldest spooled alerts, encode, send through the
//! connector, and remove only what the destination confirmed (or refused for good, into the
//! dead-letter queue). Failed records are retried first, with backoff and a circuit breaker,
//! so delivery order follows spool order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tracing::{error, info, warn};
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

    /// Whether the destination is ready for data (e.g. HEC's `/services/collector/health`).
    /// Asked when the circuit breaker half-opens, before the trial batch: `Err` keeps the
    /// breaker open without sending anything. Destinations without a health endpoint are
    /// always ready (the trial batch is the probe).
    fn health(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Called about once a second while the spool is empty (a connector that must stay
    /// connected between batches, like `forward`, reconnects here). Default: nothing.
    fn idle(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Whether [`Connector::health`] really asks the destination. Such a sink probes health
    /// about once a second while it waits after a failure, and tries again as soon as the
    /// destination answers (ending an open breaker early), so delivery resumes within seconds
    /// of the destination's return whatever the backoff and breaker settings.
    fn probes_health(&self) -> bool {
        false
    }
}

/// The batch's bodies, one per line (file and stdout framing).
pub fn lines(batch: &[Outgoing]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.iter().map(|o| o.body.len() + 1).sum());
    for o in batch {
        buf.extend_from_slice(&o.body);
        buf.push(b'\n');
    }
    buf
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
    /// Failed attempts in a row (0 once an attempt succeeds).
    pub failed_attempts: u32,
    /// When the current run of failed attempts began.
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    /// When an attempt last succeeded.
    pub last_success: Option<chrono::DateTime<chrono::Utc>>,
    /// When the next attempt is due, while waiting after a failure.
    pub next_attempt: Option<chrono::DateTime<chrono::Utc>>,
    /// Removed from the config by a reload: it receives no new alerts and goes once what is
    /// spooled is delivered.
    pub removed: bool,
}

impl Default for SinkStatus {
    fn default() -> Self {
        Self {
            breaker: BreakerState::Closed,
            last_error: None,
            failed_attempts: 0,
            failing_since: None,
            last_success: None,
            next_attempt: None,
            removed: false,
        }
    }
}

/// How a sink is doing, for `/health/ready`, `GET /api/v1/sinks` and `vedette sinks list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkHealth {
    /// Delivering.
    Ok,
    /// Failing (or its spool nearly full) but every alert is kept: delivered later.
    Degraded,
    /// Failing with a full spool: `block` holds ingest back, `drop_oldest` loses alerts.
    Down,
}

impl SinkHealth {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// A spool at least this full (percent of its bound) counts as full.
const FULL_PERCENT: u64 = 95;

/// The health of a sink from its status and spool depth, with the reason when not ok.
pub fn assess(
    status: &SinkStatus,
    spooled: u64,
    spool_bytes: u64,
    max_bytes: u64,
    policy: vedette_config::OverflowPolicy,
) -> (SinkHealth, Option<String>) {
    let percent = spool_bytes.saturating_mul(100) / max_bytes.max(1);
    let full = spooled > 0 && percent >= FULL_PERCENT;
    let spool = format!("{spooled} alerts spooled ({percent}% of the spool's bound)");
    let failing = status.last_error.is_some() || status.breaker != BreakerState::Closed;
    match (failing, full) {
        (false, false) => (SinkHealth::Ok, None),
        (false, true) => (SinkHealth::Degraded, Some(format!("spool nearly full: {spool}"))),
        (true, _) => {
            let error = status.last_error.as_deref().unwrap_or("breaker not closed");
            let attempts = status.failed_attempts;
            if full {
                let effect = match policy {
                    vedette_config::OverflowPolicy::Block => "new alerts wait for room (ingest is held back)",
                    vedette_config::OverflowPolicy::DropOldest => "the oldest alerts are dropped to make room",
                };
                (
                    SinkHealth::Down,
                    Some(format!("failing ({attempts} attempts): {error}; spool full: {spool}; {effect}")),
                )
            } else {
                (
                    SinkHealth::Degraded,
                    Some(format!("failing ({attempts} attempts): {error}; {spool}, delivered later")),
                )
            }
        }
    }
}

/// One consistent reading of a sink: its status, spool depth and the health they make.
#[derive(Debug, Clone)]
pub struct SinkReading {
    /// Breaker, errors, times.
    pub status: SinkStatus,
    /// Alerts spooled.
    pub spooled: u64,
    /// Bytes spooled.
    pub spool_bytes: u64,
    /// [`assess`] of the above.
    pub health: SinkHealth,
    /// Why the health is not `Ok`.
    pub reason: Option<String>,
}

impl SinkHandle {
    /// Reads the sink's status and spool once and assesses them.
    pub fn reading(&self) -> SinkReading {
        let status = self.status.lock().expect("status lock is never poisoned").clone();
        let (spooled, spool_bytes) = self.spool.depth();
        let spool = &self.config.common.spool;
        let (mut health, mut reason) = assess(&status, spooled, spool_bytes, spool.max_bytes, spool.policy);
        if status.removed {
            // No new alert goes to it: a full spool holds nothing back.
            if health == SinkHealth::Down {
                health = SinkHealth::Degraded;
            }
            let what = format!("removed from the config: delivering the {spooled} alerts still spooled, then it goes");
            reason = Some(match &status.last_error {
                Some(e) => format!("{what}; failing ({} attempts): {e}", status.failed_attempts),
                None => what,
            });
        }
        SinkReading { status, spooled, spool_bytes, health, reason }
    }
}

/// A wait as the log says it: `750ms`, `9.8s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) { format!("{}ms", d.as_millis()) } else { format!("{:.1}s", d.as_secs_f64()) }
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
        let label = [handle.name.as_str()];
        handle.spool.publish_to(
            metrics.sink_spool_records.with_label_values(&label),
            metrics.sink_spool_bytes.with_label_values(&label),
        );
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
        let mut failing_since: Option<Instant> = None;
        let mut linger_from: Option<Instant> = None;
        let label = [name.as_str()];
        loop {
            if *stop.borrow() {
                return;
            }
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
                self.connector.idle().await;
                tokio::select! {
                    _ = spool.wait_for_data() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
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
            let unhealthy = if breaker.state(Instant::now()) == BreakerState::HalfOpen {
                self.connector.health().await.err().map(|e| format!("health check: {e}"))
            } else {
                None
            };
            let failed = match unhealthy {
                Some(reason) => Some(reason),
                None => {
                    if let Some(b) = bucket.as_mut() {
                        while let Err(wait) = b.take(records.len(), Instant::now()) {
                            if sleep_or_stop(wait, &mut stop).await {
                                return;
                            }
                        }
                    }
                    let (batch, undecodable) = self.encode(records);
                    let sent = if batch.is_empty() { Vec::new() } else { self.connector.send(&batch).await };
                    let outcomes = undecodable
                        .into_iter()
                        .map(|(seq, outcome)| (seq, None, outcome))
                        .chain(batch.iter().zip(sent).map(|(o, outcome)| (o.seq, Some(o), outcome)));
                    self.settle(outcomes)
                }
            };
            if let Some(reason) = failed {
                let now = Instant::now();
                let was = breaker.state(now);
                breaker.failure(now);
                let state = breaker.state(now);
                self.metrics.sink_failed_attempts.with_label_values(&label).inc();
                if state == BreakerState::Open && was != BreakerState::Open {
                    warn!(sink = %name, failed_attempts = attempt + 1, open_for = %human(breaker.open_for()),
                        "Circuit breaker opened: no delivery attempts until the open period ends{}.",
                        if self.connector.probes_health() { " or a health probe passes" } else { "" });
                }
                // The real time to the next attempt: the backoff, or the rest of the open
                // period when the breaker is open.
                let wait = backoff.delay(attempt).max(breaker.wait(now));
                let since = *failing_since.get_or_insert(now);
                self.update(|st| {
                    st.breaker = state;
                    st.last_error = Some(reason.clone());
                    st.failed_attempts = attempt + 1;
                    st.failing_since.get_or_insert_with(|| chrono::Utc::now() - since.elapsed());
                    st.next_attempt = chrono::Duration::from_std(wait).ok().map(|w| chrono::Utc::now() + w);
                });
                warn!(sink = %name, attempt = attempt + 1, breaker = state.as_str(), error = %reason, retry_in = %human(wait),
                    "Delivery failed; the alerts stay spooled and will be retried.");
                attempt = attempt.saturating_add(1);
                match self.wait_after_failure(wait, &mut breaker, &mut stop).await {
                    Waited::Stopped => return,
                    Waited::Probed => info!(sink = %name, "Health probe passed; trying again now."),
                    Waited::Full => {}
                }
                self.update(|st| st.next_attempt = None);
            } else {
                let was = breaker.state(Instant::now());
                if let Some(since) = failing_since.take() {
                    info!(sink = %name, failed_attempts = attempt, down_for = %human(since.elapsed()),
                        "Delivery recovered: the destination accepts alerts again.");
                }
                if was != BreakerState::Closed {
                    info!(sink = %name, "Circuit breaker closed.");
                }
                attempt = 0;
                breaker.success();
                self.set_breaker(BreakerState::Closed);
                self.update(|st| {
                    st.last_error = None;
                    st.failed_attempts = 0;
                    st.failing_since = None;
                    st.next_attempt = None;
                    st.last_success = Some(chrono::Utc::now());
                });
            }
        }
    }

    /// Waits `wait` after a failed attempt; a sink whose connector probes health asks it about
    /// once a second and stops waiting (ending an open breaker) as soon as it answers.
    async fn wait_after_failure(
        &mut self,
        wait: Duration,
        breaker: &mut Breaker,
        stop: &mut watch::Receiver<bool>,
    ) -> Waited {
        if !self.connector.probes_health() {
            return if sleep_or_stop(wait, stop).await { Waited::Stopped } else { Waited::Full };
        }
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::Full;
            }
            if sleep_or_stop(left.min(HEALTH_PROBE_EVERY), stop).await {
                return Waited::Stopped;
            }
            if Instant::now() >= until {
                return Waited::Full;
            }
            if self.connector.health().await.is_ok() {
                breaker.probe_passed(Instant::now());
                self.set_breaker(breaker.state(Instant::now()));
                return Waited::Probed;
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
                    // A spooled record is the alert's JSON already: no second encoding.
                    let body = match self.format {
                        Format::Json => bytes.to_vec(),
                        format => vedette_pipelines::formats::encode(format, &alert),
                    };
                    batch.push(Outgoing { seq, alert, body });
                }
                Err(e) => bad.push((seq, Outcome::Reject(format!("spooled record is not an alert: {e}")))),
            }
        }
        (batch, bad)
    }

    /// Applies outcomes (sequence number, the record if it decoded, outcome) to the spool;
    /// returns the first retryable reason, if any.
    fn settle<'a>(&self, outcomes: impl Iterator<Item = (u64, Option<&'a Outgoing>, Outcome)>) -> Option<String> {
        let label = [self.handle.name.as_str()];
        let (delivered, latency) = (
            self.metrics.sink_delivered.with_label_values(&label),
            self.metrics.sink_delivery_latency.with_label_values(&label),
        );
        let mut done = Vec::new();
        let mut retry: Option<String> = None;
        let now = chrono::Utc::now();
        for (seq, record, outcome) in outcomes {
            match outcome {
                Outcome::Delivered => {
                    done.push(seq);
                    delivered.inc();
                    if let Some(o) = record {
                        let us = (now - o.alert.detected_at).num_microseconds().unwrap_or(0).max(0);
                        latency.observe(us as f64 / 1e6);
                    }
                }
                Outcome::Reject(reason) => {
                    let bytes = match record {
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
                    self.metrics.sink_retried_alerts.with_label_values(&label).inc();
                    retry.get_or_insert(reason);
                }
            }
        }
        if let Err(e) = self.handle.spool.remove(&done) {
            error!(sink = %self.handle.name, error = %e, "Removing delivered alerts from the spool failed; they may be sent again.");
        }
        retry
    }

    fn set_breaker(&self, state: BreakerState) {
        self.metrics.sink_breaker_state.with_label_values(&[self.handle.name.as_str()]).set(state.gauge());
        self.handle.status.lock().expect("status lock is never poisoned").breaker = state;
    }

    fn update(&self, f: impl FnOnce(&mut SinkStatus)) {
        let mut st = self.handle.status.lock().expect("status lock is never poisoned");
        f(&mut st);
        let gauge = st.breaker.gauge();
        drop(st);
        self.metrics.sink_breaker_state.with_label_values(&[self.handle.name.as_str()]).set(gauge);
    }
}

/// How often a sink whose connector probes health asks it while waiting after a failure.
const HEALTH_PROBE_EVERY: Duration = Duration::from_secs(1);

/// How a wait after a failure ended.
enum Waited {
    /// The whole wait passed.
    Full,
    /// A health probe passed first.
    Probed,
    /// The sink is stopping.
    Stopped,
}

/// Sleeps for `d`; returns true if `stop` turned true meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        r = stop.changed() => r.is_err() || *stop.borrow(),
    }
}

#[cfg(test)]
mod health_tests {
    use vedette_config::OverflowPolicy::{Block, DropOldest};

    use super::*;

    #[test]
    fn a_failing_sink_with_room_is_degraded_and_with_a_full_spool_down() {
        let ok = SinkStatus::default();
        assert_eq!(assess(&ok, 0, 0, 1000, Block), (SinkHealth::Ok, None));
        let (h, why) = assess(&ok, 10, 960, 1000, Block);
        assert_eq!(h, SinkHealth::Degraded);
        assert!(why.unwrap().contains("nearly full"));
        let failing = SinkStatus { last_error: Some("HTTP 503".into()), failed_attempts: 3, ..SinkStatus::default() };
        let (h, why) = assess(&failing, 10, 100, 1000, Block);
        assert_eq!(h, SinkHealth::Degraded);
        let why = why.unwrap();
        assert!(
            why.contains("HTTP 503") && why.contains("3 attempts") && why.contains("10 alerts spooled (10%"),
            "{why}"
        );
        let (h, why) = assess(&failing, 10, 990, 1000, DropOldest);
        assert_eq!(h, SinkHealth::Down);
        assert!(why.unwrap().contains("oldest alerts are dropped"));
        let (h, why) = assess(&failing, 10, 1000, 1000, Block);
        assert_eq!(h, SinkHealth::Down);
        assert!(why.unwrap().contains("ingest is held back"));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::sinks::open_sink;

    type Answer = Box<dyn Fn(&[Outgoing]) -> Vec<Outcome> + Send>;

    /// A destination that answers from a script (one answer per call; then delivers), and
    /// records what it was sent.
    struct Scripted {
        script: VecDeque<Answer>,
        sent: Arc<Mutex<Vec<Vec<String>>>>,
        /// Answers to health checks (then healthy), and how many were asked.
        health: VecDeque<Result<(), String>>,
        checks: Arc<Mutex<usize>>,
    }

    impl Scripted {
        fn new(script: Script, sent: &Arc<Mutex<Vec<Vec<String>>>>) -> Self {
            Self { script: script.into(), sent: Arc::clone(sent), health: VecDeque::new(), checks: Arc::default() }
        }
    }

    impl Connector for Scripted {
        fn send<'a>(&'a mut self, batch: &'a [Outgoing]) -> BoxFuture<'a, Vec<Outcome>> {
            let ids: Vec<String> = batch.iter().map(|o| o.alert.rule_id.clone()).collect();
            self.sent.lock().unwrap().push(ids);
            let out = match self.script.pop_front() {
                Some(f) => f(batch),
                None => all(batch, Outcome::Delivered),
            };
            Box::pin(async move { out })
        }

        fn health(&mut self) -> BoxFuture<'_, Result<(), String>> {
            *self.checks.lock().unwrap() += 1;
            let answer = self.health.pop_front().unwrap_or(Ok(()));
            Box::pin(async move { answer })
        }
    }

    fn alert(i: usize) -> Alert {
        let mut a = vedette_pipelines::formats::sample_alert();
        a.rule_id = format!("r{i:02}");
        a
    }

    fn config(extra: &str) -> SinkConfig {
        let text = format!(
            "[[sinks]]\nname = \"t\"\ntype = \"stdout\"\nformat = \"json\"\nbatch = {{ max_events = 4, linger = \"1ms\" }}\n\
             retry = {{ base = \"1ms\", cap = \"5ms\" }}\nbreaker = {{ failures = 2, open_for = \"30ms\" }}\n{extra}"
        );
        vedette_config::Config::from_toml_str(&text).unwrap().sinks.remove(0)
    }

    type Script = Vec<Answer>;

    async fn run(alerts: usize, script: Script) -> (Arc<SinkHandle>, Vec<Vec<String>>, Metrics) {
        run_with(alerts, script, VecDeque::new()).await.0
    }

    type Run = ((Arc<SinkHandle>, Vec<Vec<String>>, Metrics), usize);

    /// Delivers `alerts` through a scripted destination whose health checks answer `health`;
    /// also returns how many health checks were made.
    async fn run_with(alerts: usize, script: Script, health: VecDeque<Result<(), String>>) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let handle = open_sink(&db, config("")).unwrap();
        let records: Vec<Vec<u8>> = (0..alerts).map(|i| serde_json::to_vec(&alert(i)).unwrap()).collect();
        handle.spool.append(&records).await.unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let mut connector = Scripted::new(script, &sent);
        connector.health = health;
        let checks = Arc::clone(&connector.checks);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(Delivery::new(Arc::clone(&handle), metrics.clone(), Box::new(connector)).run(rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while handle.spool.depth().0 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        let sent = sent.lock().unwrap().clone();
        let checks = *checks.lock().unwrap();
        ((handle, sent, metrics), checks)
    }

    fn ids(r: std::ops::Range<usize>) -> Vec<String> {
        r.map(|i| format!("r{i:02}")).collect()
    }

    #[tokio::test]
    async fn failed_batches_are_retried_in_order_until_confirmed() {
        let down: Script =
            (0..3).map(|_| Box::new(|b: &[Outgoing]| all(b, Outcome::Retry("503".into()))) as _).collect();
        let (handle, sent, metrics) = run(10, down).await;
        assert_eq!(handle.spool.depth().0, 0);
        // Three failed attempts of the first batch, then every batch once, in spool order.
        assert_eq!(sent[..4], [ids(0..4), ids(0..4), ids(0..4), ids(0..4)]);
        assert_eq!(sent[4..], [ids(4..8), ids(8..10)]);
        assert_eq!(metrics.sink_retried_alerts.with_label_values(&["t"]).get(), 12);
        assert_eq!(metrics.sink_delivered.with_label_values(&["t"]).get(), 10);
        assert_eq!(handle.status.lock().unwrap().breaker, BreakerState::Closed);
        assert!(handle.status.lock().unwrap().last_error.is_none());
    }

    #[tokio::test]
    async fn per_record_outcomes_retry_only_what_failed_and_dead_letter_rejections() {
        // First call: r00 delivered, r01 rejected, r02 retried, r03 delivered.
        let mixed: Script = vec![Box::new(|b: &[Outgoing]| {
            b.iter()
                .map(|o| match o.alert.rule_id.as_str() {
                    "r01" => Outcome::Reject("mapper_parsing_exception: field [n]".into()),
                    "r02" => Outcome::Retry("429".into()),
                    _ => Outcome::Delivered,
                })
                .collect()
        })];
        let (handle, sent, metrics) = run(6, mixed).await;
        assert_eq!(sent, [ids(0..4), vec!["r02".into(), "r04".into(), "r05".into()]]);
        let dlq = handle.dead_letters.list(10).unwrap();
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].record["rule_id"], "r01");
        assert!(dlq[0].reason.contains("mapper_parsing_exception"));
        assert_eq!(metrics.sink_dead_lettered.with_label_values(&["t"]).get(), 1);
        assert_eq!(metrics.sink_delivered.with_label_values(&["t"]).get(), 5);
    }

    #[tokio::test]
    async fn the_breaker_opens_after_consecutive_failures_and_holds_calls_back() {
        let down: Script =
            (0..4).map(|_| Box::new(|b: &[Outgoing]| all(b, Outcome::Retry("refused".into()))) as _).collect();
        let started = Instant::now();
        let (_handle, sent, _metrics) = run(2, down).await;
        assert_eq!(sent.len(), 5);
        // failures = 2 opens the breaker for 30 ms; a failed half-open trial opens it again:
        // attempts 3 and 4 each waited for the open period.
        assert!(started.elapsed() >= Duration::from_millis(60), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_half_open_breaker_sends_nothing_until_the_health_check_passes() {
        let down: Script =
            (0..2).map(|_| Box::new(|b: &[Outgoing]| all(b, Outcome::Retry("503".into()))) as _).collect();
        let unhealthy = (0..3).map(|_| Err("HEC is unhealthy, queues are full".to_string())).collect();
        let started = Instant::now();
        let ((handle, sent, metrics), checks) = run_with(2, down, unhealthy).await;
        // Two failures open the breaker; three failed health checks each keep it open for
        // another 30 ms without a batch; the fourth passes and the trial batch delivers.
        assert_eq!(sent, [ids(0..2), ids(0..2), ids(0..2)]);
        assert_eq!(checks, 4);
        assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
        assert_eq!(metrics.sink_failed_attempts.with_label_values(&["t"]).get(), 5);
        assert_eq!(handle.spool.depth().0, 0);
    }

    #[tokio::test]
    async fn records_that_are_not_alerts_go_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("s")).unwrap();
        let handle = open_sink(&db, config("")).unwrap();
        handle.spool.append(&[b"{\"not\":\"an alert\"}".to_vec()]).await.unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = watch::channel(false);
        let connector = Scripted::new(Vec::new(), &sent);
        let task = tokio::spawn(Delivery::new(Arc::clone(&handle), Metrics::new(), Box::new(connector)).run(rx));
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.dead_letters.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
        let dlq = handle.dead_letters.list(10).unwrap();
        assert!(dlq[0].reason.contains("not an alert"), "{dlq:?}");
        assert_eq!(dlq[0].record["not"], "an alert");
        assert_eq!(handle.spool.depth().0, 0);
    }
}
