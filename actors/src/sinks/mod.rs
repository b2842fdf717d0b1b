//! Alert delivery: the router appends each alert to every sink's durable spool; each sink's
//! supervised actor runs a delivery loop from its spool to its destination.
//!
//! * [`spool`]: sled spool and dead-letter queue per sink.
//! * [`policy`]: backoff with jitter, circuit breaker, token bucket.
//! * [`delivery`]: the loop and the [`delivery::Connector`] trait.
//! * one folder per connector: [`file`], [`stdout`], [`webhook`], [`splunk_hec`],
//!   [`elasticsearch`], [`kafka`]; [`http`] holds what HTTP
//!   connectors share.

pub mod delivery;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod kafka;
pub mod policy;
pub mod splunk_hec;
pub mod spool;
pub mod stdout;
#[cfg(test)]
mod test_support;
pub mod webhook;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::{error, warn};
use vedette_config::{Connector as ConnectorConfig, SinkConfig};
use vedette_pipelines::alert::Alert;
use vedette_pipelines::storm::{STORM_RULE, StormGuard};

use crate::commit::{CommitError, Committed, Effects, StateStore, commit};
use crate::error::Result;
use crate::metrics::Metrics;
use delivery::{Connector, Delivery, SinkHandle, SinkStatus};
use spool::{DeadLetters, Spool};

/// Opens a sink's spool and dead-letter queue.
pub fn open_sink(db: &sled::Db, config: SinkConfig) -> Result<Arc<SinkHandle>> {
    let name = config.name().to_string();
    let spool = Spool::open(db, &name, config.common.spool.max_bytes, config.common.spool.policy)?;
    Ok(Arc::new(SinkHandle {
        dead_letters: Arc::new(DeadLetters::open(db, &name)?),
        spool: Arc::new(spool),
        status: Arc::new(Mutex::new(SinkStatus::default())),
        config,
        name,
    }))
}

/// The file a file sink writes (relative paths are inside `data_dir`).
pub fn file_path(f: &vedette_config::FileSinkConfig, data_dir: &Path) -> std::path::PathBuf {
    if f.path.is_absolute() { f.path.clone() } else { data_dir.join(&f.path) }
}

/// Builds the connector of a sink delivering from the spool with instance id `spool`
/// ([`Spool::instance`]); relative file paths are inside `data_dir`.
pub fn connector(config: &SinkConfig, data_dir: &Path, spool: u64) -> Result<Box<dyn Connector>> {
    match &config.connector {
        ConnectorConfig::Stdout {} => Ok(Box::new(stdout::Stdout::new())),
        ConnectorConfig::File(f) => {
            Ok(Box::new(file::FileSink::new(file_path(f, data_dir), f.rotate_bytes, f.keep, spool)))
        }
        ConnectorConfig::Webhook(w) => Ok(Box::new(webhook::Webhook::new(config.name(), w, config.format())?)),
        ConnectorConfig::SplunkHec(h) => Ok(Box::new(splunk_hec::SplunkHec::new(config.name(), h, config.format())?)),
        ConnectorConfig::Elasticsearch(e) => {
            Ok(Box::new(elasticsearch::Elasticsearch::new(config.name(), e, config.format())?))
        }
        ConnectorConfig::Kafka(k) => Ok(Box::new(kafka::Kafka::new(config.name(), k)?)),
        ConnectorConfig::History {} => Err(crate::ActorError::Spawn {
            name: config.name().into(),
            reason: "the history sink writes only into the alert history".into(),
        }),
        ConnectorConfig::Forward(_) => Err(crate::ActorError::Spawn {
            name: config.name().into(),
            reason: "the forward sink is built by the engine (it speaks the sensor protocol)".into(),
        }),
    }
}

/// Internal alerts about a sink dropping alerts are raised at most this often per sink.
const OVERFLOW_ALERT_EVERY: Duration = Duration::from_secs(60);

/// Per sink: when the last overflow alert was raised, and drops since.
type OverflowLog = HashMap<String, (Option<Instant>, u64)>;

/// The sinks alerts go to, and the sinks a config reload removed that still deliver what
/// their spools hold.
#[derive(Default)]
struct SinkSet {
    active: Arc<[Arc<SinkHandle>]>,
    removed: Vec<Arc<SinkHandle>>,
    /// Counts [`Router::replace`] calls.
    generation: u64,
}

/// Commits in flight per generation of the sink set they spool into.
#[derive(Default)]
struct InFlight {
    commits: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Signalled when a commit ends.
    ended: tokio::sync::Notify,
}

/// A commit in flight; counted until dropped.
struct Entered {
    inflight: Arc<InFlight>,
    generation: u64,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut commits = self.inflight.commits.lock().expect("in-flight lock is never poisoned");
        if let Some(n) = commits.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                commits.remove(&self.generation);
            }
        }
        drop(commits);
        self.inflight.ended.notify_waiters();
    }
}

/// Appends alerts to every sink's spool, after the alert-storm guard and the dedup ledger,
/// together with the rest of a batch's effects ([`crate::commit`]).
#[derive(Clone)]
pub struct Router {
    set: Arc<RwLock<SinkSet>>,
    /// Commits spooling, by the generation of the sinks they read ([`Router::settled`]).
    inflight: Arc<InFlight>,
    overflow: Arc<Mutex<OverflowLog>>,
    storm: Arc<Mutex<StormGuard>>,
    metrics: Option<Metrics>,
    store: Option<Arc<StateStore>>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new(Vec::new(), None, StormGuard::new(0, Duration::from_secs(60)), None)
    }
}

impl Router {
    /// A router over `sinks` with an alert-storm guard, committing into `store` (without a
    /// store, alerts are appended to the spools one sink after another and nothing else of a
    /// batch is recorded: for tools and tests only).
    pub fn new(
        sinks: Vec<Arc<SinkHandle>>,
        metrics: Option<Metrics>,
        storm: StormGuard,
        store: Option<Arc<StateStore>>,
    ) -> Self {
        Self {
            set: Arc::new(RwLock::new(SinkSet { active: sinks.into(), removed: Vec::new(), generation: 0 })),
            inflight: Arc::default(),
            overflow: Arc::default(),
            storm: Arc::new(Mutex::new(storm)),
            metrics,
            store,
        }
    }

    /// Spools the summaries of alert storms whose interval ended (call periodically).
    pub async fn tick(&self) -> std::result::Result<(), String> {
        let summaries = self.storm.lock().expect("storm lock is never poisoned").expired(chrono::Utc::now());
        self.commit_admitted(Effects { alerts: summaries, ..Effects::default() })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The state store alerts are committed into.
    pub fn store(&self) -> Option<&Arc<StateStore>> {
        self.store.as_ref()
    }

    /// Every sink: those alerts go to, then the removed ones still delivering.
    pub fn sinks(&self) -> Vec<Arc<SinkHandle>> {
        let set = self.set.read().expect("sink set lock is never poisoned");
        set.active.iter().chain(&set.removed).cloned().collect()
    }

    /// The sinks alerts go to.
    pub fn active(&self) -> Arc<[Arc<SinkHandle>]> {
        Arc::clone(&self.set.read().expect("sink set lock is never poisoned").active)
    }

    /// Makes `active` the sinks alerts go to (a config reload). A sink of the old set that
    /// `active` does not name is kept, marked removed, until [`Router::forget`]; one it names
    /// again is no longer removed. A sink present before and after must share its spool
    /// (the caller passes a handle on the same [`Spool`]).
    pub fn replace(&self, active: Vec<Arc<SinkHandle>>) {
        let mut set = self.set.write().expect("sink set lock is never poisoned");
        let named = |h: &Arc<SinkHandle>| active.iter().any(|a| a.name == h.name);
        let mut removed: Vec<Arc<SinkHandle>> = set.removed.iter().filter(|h| !named(h)).cloned().collect();
        for h in set.active.iter().filter(|h| !named(h)) {
            h.status.lock().expect("status lock is never poisoned").removed = true;
            removed.push(Arc::clone(h));
        }
        set.active = active.into();
        set.removed = removed;
        set.generation += 1;
    }

    /// The removed sinks still delivering what their spools hold.
    pub fn removed(&self) -> Vec<Arc<SinkHandle>> {
        self.set.read().expect("sink set lock is never poisoned").removed.clone()
    }

    /// Drops removed sink `name` from the set (its spool is empty and its actor stopped).
    pub fn forget(&self, name: &str) {
        self.set.write().expect("sink set lock is never poisoned").removed.retain(|h| h.name != name);
    }

    /// Waits until every commit that read the sinks before the last [`Router::replace`] has
    /// finished spooling: after that, nothing appends to a removed sink's spool any more.
    /// Commits that begin meanwhile are not waited for (nor held up).
    pub async fn settled(&self) {
        let current = self.set.read().expect("sink set lock is never poisoned").generation;
        loop {
            let ended = self.inflight.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let oldest = self.inflight.commits.lock().expect("in-flight lock is never poisoned").keys().next().copied();
            if oldest.is_none_or(|g| g >= current) {
                return;
            }
            ended.await;
        }
    }

    /// The sinks a commit spools into, counted as in flight until the guard drops. Read and
    /// counted under the set's lock, so a [`Router::replace`] after it waits in
    /// [`Router::settled`] for this commit.
    fn enter(&self) -> (Arc<[Arc<SinkHandle>]>, Entered) {
        let set = self.set.read().expect("sink set lock is never poisoned");
        *self.inflight.commits.lock().expect("in-flight lock is never poisoned").entry(set.generation).or_default() +=
            1;
        (Arc::clone(&set.active), Entered { inflight: Arc::clone(&self.inflight), generation: set.generation })
    }

    /// Spools `alerts` for every sink, minus what the storm guard holds back, durably (see
    /// [`Router::commit`]).
    pub async fn route(&self, alerts: Vec<Alert>) -> std::result::Result<(), String> {
        self.commit(Effects { alerts, ..Effects::default() }).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Makes a batch's effects durable together: its alerts (minus what the storm guard holds
    /// back and what the dedup ledger has seen) in every sink's spool, its window checkpoints
    /// and its frames' sequence numbers, in one transaction and one flush. With `block`, waits
    /// first while a spool is full (the back-pressure toward the sensors).
    pub async fn commit(&self, mut effects: Effects) -> std::result::Result<Committed, CommitError> {
        if !effects.alerts.is_empty() {
            let n = effects.alerts.len();
            let alerts = std::mem::take(&mut effects.alerts);
            effects.alerts = self.storm.lock().expect("storm lock is never poisoned").admit(alerts, chrono::Utc::now());
            if let Some(m) = &self.metrics {
                let held = n.saturating_sub(effects.alerts.iter().filter(|a| a.rule_id != STORM_RULE).count());
                if held > 0 {
                    m.alerts_suppressed.inc_by(held as u64);
                }
            }
        }
        self.commit_admitted(effects).await
    }

    /// [`Router::commit`] without the alert-storm guard (its own summaries, and alerts an edge
    /// forwarded: they passed the edge's guard).
    ///
    /// A batch whose alerts would not fit a quarter of the smallest spool is spooled in chunks
    /// that do (each waiting for room), the last one together with the windows and frames.
    /// That is safe only because the dedup ledger records every chunk's ids: after a crash
    /// between chunks the batch is evaluated again and the chunks already spooled are dropped
    /// as duplicates. Without the ledger (`alerts.dedup_ttl = "0s"`) the batch is spooled in
    /// one step and may overshoot a spool's bound by up to one batch.
    pub async fn commit_admitted(&self, effects: Effects) -> std::result::Result<Committed, CommitError> {
        let (sinks, _entered) = self.enter();
        let ids: Vec<uuid::Uuid> = effects.alerts.iter().map(|a| a.alert_id).collect();
        let targets: Option<Vec<Vec<bool>>> = (!effects.claimed.is_empty()).then(|| {
            effects.claimed.iter().map(|claimed| sinks.iter().map(|s| !claimed.contains(&s.name)).collect()).collect()
        });
        let records: Vec<Vec<u8>> =
            effects.alerts.iter().map(|a| serde_json::to_vec(a).expect("alerts serialize")).collect();
        let Some(store) = &self.store else {
            for sink in sinks.iter() {
                let out = sink
                    .spool
                    .append(&records)
                    .await
                    .map_err(|e| CommitError::Spool(format!("sink `{}`: {e}", sink.name)))?;
                if out.dropped > 0 {
                    self.overflowed(&sink.name, out.dropped).await;
                }
            }
            return Ok(Committed { spooled: records.len(), ..Committed::default() });
        };
        let budget = match store.dedup {
            Some(_) => sinks.iter().map(|s| s.config.common.spool.max_bytes / 4).min().unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        let mut total = Committed::default();
        let mut start = 0;
        loop {
            let mut end = start;
            let mut bytes = 0u64;
            while end < records.len() && (end == start || bytes + records[end].len() as u64 <= budget) {
                bytes += records[end].len() as u64;
                end += 1;
            }
            let last = end == records.len();
            let mut overflowed = Vec::new();
            if end > start {
                for sink in sinks.iter() {
                    let dropped = sink
                        .spool
                        .make_room(bytes)
                        .await
                        .map_err(|e| CommitError::Spool(format!("sink `{}`: {e}", sink.name)))?;
                    if dropped > 0 {
                        overflowed.push((sink.name.clone(), dropped));
                    }
                }
            }
            let (windows, frames): (&[_], &[_]) = if last { (&effects.windows, &effects.frames) } else { (&[], &[]) };
            let targets = targets.as_ref().map(|t| &t[start..end]);
            let c = commit(store, &sinks, &ids[start..end], &records[start..end], targets, windows, frames).await?;
            total.spooled += c.spooled;
            total.repeated.extend(c.repeated);
            total.through = c.through;
            for (name, dropped) in overflowed {
                self.overflowed(&name, dropped).await;
            }
            if last {
                return Ok(total);
            }
            start = end;
        }
    }

    /// Reports drops of a full `drop_oldest` spool: metrics, a log line, and (at most every
    /// [`OVERFLOW_ALERT_EVERY`]) an internal alert to the other sinks.
    async fn overflowed(&self, name: &str, dropped: u64) {
        if let Some(m) = &self.metrics {
            m.sink_dropped.with_label_values(&[name]).inc_by(dropped);
        }
        warn!(sink = %name, dropped, "Spool full: dropped the oldest alerts (policy drop_oldest).");
        if let Some(alert) = self.overflow_alert(name, dropped) {
            let bytes = vec![serde_json::to_vec(&alert).expect("alerts serialize")];
            for sink in self.active().iter().filter(|s| s.name != name) {
                if let Err(e) = sink.spool.append(&bytes).await {
                    error!(sink = %sink.name, error = %e, "Spooling an internal alert failed.");
                }
            }
        }
    }

    /// Counts drops of a sink; every [`OVERFLOW_ALERT_EVERY`] returns an internal alert
    /// reporting the drops since the last one.
    fn overflow_alert(&self, sink: &str, dropped: u64) -> Option<Alert> {
        let mut map = self.overflow.lock().expect("overflow lock is never poisoned");
        let entry = map.entry(sink.to_string()).or_insert((None, 0));
        entry.1 += dropped;
        if entry.0.is_some_and(|t| t.elapsed() < OVERFLOW_ALERT_EVERY) {
            return None;
        }
        let count = std::mem::take(&mut entry.1);
        entry.0 = Some(Instant::now());
        Some(internal_alert(sink, count))
    }
}

/// The internal alert `vedette.sink_overflow`.
pub fn internal_alert(sink: &str, dropped: u64) -> Alert {
    let now = chrono::Utc::now();
    let mut row = serde_json::Map::new();
    row.insert("sink".into(), sink.into());
    row.insert("dropped".into(), dropped.into());
    let id_name = format!("vedette.sink_overflow/{sink}/{}", now.timestamp_micros());
    Alert {
        alert_id: uuid_v5(&id_name),
        rule_id: "vedette.sink_overflow".into(),
        rule_name: "Sink spool full: alerts dropped".into(),
        rule_version: 1,
        pack: "vedette".into(),
        severity: vedette_pipelines::rule::Severity::High,
        tags: vec!["vedette.internal".into()],
        description: format!(
            "Sink `{sink}` dropped {dropped} of its oldest alerts because its spool was full (policy drop_oldest)."
        ),
        sensor_id: None,
        tenant: None,
        host: None,
        table: "internal".into(),
        ts: now,
        window_start: None,
        window_end: None,
        edge: None,
        detected_at: now,
        row,
    }
}

fn uuid_v5(name: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(&vedette_pipelines::alert::ALERT_NAMESPACE, name.as_bytes())
}

/// Messages of a sink actor.
pub enum SinkMsg {
    /// The delivery loop ended unexpectedly (the actor fails and is restarted).
    LoopEnded(String),
}

/// Builds a sink's connector (each actor start builds a fresh one).
pub type ConnectorFactory = Arc<dyn Fn() -> Result<Box<dyn Connector>> + Send + Sync>;

/// A sink actor: owns its delivery loop; a restart starts a new loop on the same spool.
pub struct SinkActor {
    /// The sink.
    pub handle: Arc<SinkHandle>,
    /// Builds the connector; `None`: from the sink's config ([`connector`]).
    pub make: Option<ConnectorFactory>,
    /// Base for relative file paths.
    pub data_dir: std::path::PathBuf,
    /// Metrics.
    pub metrics: Metrics,
}

/// How long a stopping sink actor waits for an attempt in flight to finish (a changed sink's
/// new actor must not deliver the same batch alongside the old one).
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Stops the delivery loop when the actor stops.
pub struct SinkState {
    stop: watch::Sender<bool>,
    /// Becomes `true` when the delivery loop has ended.
    ended: watch::Receiver<bool>,
}

impl Actor for SinkActor {
    type Msg = SinkMsg;
    type State = SinkState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SinkMsg>,
        _args: (),
    ) -> std::result::Result<SinkState, ActorProcessingErr> {
        let connector = match &self.make {
            Some(make) => make()?,
            None => connector(&self.handle.config, &self.data_dir, self.handle.spool.instance())?,
        };
        let (stop, stop_rx) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        let delivery = Delivery::new(Arc::clone(&self.handle), self.metrics.clone(), connector);
        let task = tokio::spawn(delivery.run(stop_rx));
        tokio::spawn(async move {
            let reason = match task.await {
                Ok(()) => "delivery loop returned".to_string(),
                Err(e) => format!("delivery loop crashed: {e}"),
            };
            let _ = ended_tx.send(true);
            // Delivered to a stopped actor, this is a no-op.
            let _ = myself.cast(SinkMsg::LoopEnded(reason));
        });
        Ok(SinkState { stop, ended })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SinkMsg>,
        msg: SinkMsg,
        state: &mut SinkState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let SinkMsg::LoopEnded(reason) = msg;
        if *state.stop.borrow() {
            return Ok(());
        }
        Err(format!("sink `{}`: {reason}", self.handle.name).into())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SinkMsg>,
        state: &mut SinkState,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let _ = state.stop.send(true);
        if tokio::time::timeout(STOP_WAIT, state.ended.wait_for(|ended| *ended)).await.is_err() {
            warn!(sink = %self.handle.name, wait = ?STOP_WAIT,
                "The delivery attempt in flight did not finish; stopping without waiting for it.");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(db: &sled::Db, name: &str, max_bytes: u64) -> Arc<SinkHandle> {
        let mut config = SinkConfig::stdout(name);
        config.common.spool.max_bytes = max_bytes;
        config.common.spool.policy = vedette_config::OverflowPolicy::Block;
        open_sink(db, config).unwrap()
    }

    #[tokio::test]
    async fn a_removed_sink_gets_nothing_once_the_commits_that_saw_it_have_ended() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("state")).unwrap();
        let (a, b) = (sink(&db, "a", 1), sink(&db, "b", 1 << 20));
        let router = Router::new(vec![Arc::clone(&a), Arc::clone(&b)], None, StormGuard::new(0, Duration::ZERO), None);
        let alert = || vec![internal_alert("x", 1)];
        router.route(alert()).await.unwrap();
        // `a` is full (`block`): this commit waits for room in it.
        let r = router.clone();
        let blocked = tokio::spawn(async move { r.route(alert()).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!blocked.is_finished());
        router.replace(vec![Arc::clone(&b)]);
        assert!(a.status.lock().unwrap().removed);
        assert_eq!(router.sinks().len(), 2, "a removed sink is listed until forgotten");
        let settled = {
            let r = router.clone();
            tokio::spawn(async move { r.settled().await })
        };
        // Commits after the change neither wait for the blocked one nor reach `a`.
        tokio::time::timeout(Duration::from_secs(2), router.route(alert())).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!settled.is_finished(), "a commit that saw `a` is still spooling");
        let first = a.spool.read(0, 10, u64::MAX).unwrap()[0].0;
        a.spool.remove(&[first]).unwrap();
        blocked.await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), settled).await.unwrap().unwrap();
        assert_eq!(a.spool.depth().0, 1, "the blocked commit's alert, nothing after");
        assert_eq!(b.spool.depth().0, 3);
        router.forget("a");
        assert_eq!(router.sinks().iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
