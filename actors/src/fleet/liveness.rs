//! Sensor liveness: sessions record when each sensor was last heard from and how many events
//! it sent (lock-free, per frame); the monitor actor turns that into statuses, events/s, and
//! `vedette.sensor_silent` / `vedette.sensor_back` alerts through the normal sinks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};
use vedette_pipelines::health::{Episode, back_alert, silent_alert};

use crate::registry::{Registry, SensorRecord};
use crate::sinks::Router;

/// What sessions record about a sensor.
#[derive(Debug, Default)]
pub struct Activity {
    last_heard_us: AtomicI64,
    events: AtomicU64,
    /// Said GOODBYE and has no session: offline on purpose, not watched for silence.
    offline: AtomicBool,
}

impl Activity {
    /// The sensor sent something now.
    pub fn heard(&self) {
        self.last_heard_us.store(Utc::now().timestamp_micros(), Ordering::Relaxed);
        self.offline.store(false, Ordering::Relaxed);
    }

    /// The sensor sent `n` events now.
    pub fn events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
        self.heard();
    }

    /// The sensor said GOODBYE.
    pub fn goodbye(&self) {
        self.offline.store(true, Ordering::Relaxed);
    }

    fn last_heard(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.last_heard_us.load(Ordering::Relaxed)).filter(|t| t.timestamp() > 0)
    }
}

/// Activity of every sensor heard from since the engine started, and their event rates.
#[derive(Default)]
pub struct Liveness {
    map: RwLock<HashMap<String, Arc<Activity>>>,
    rates: RwLock<HashMap<String, f64>>,
}

impl Liveness {
    /// The activity record of a sensor (created on first use).
    pub fn activity(&self, sensor: &str) -> Arc<Activity> {
        if let Some(a) = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(sensor) {
            return Arc::clone(a);
        }
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(sensor.to_string()).or_default())
    }

    /// Events per second of a sensor over the last seconds (0 when idle or unknown).
    pub fn rate(&self, sensor: &str) -> f64 {
        self.rates.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(sensor).copied().unwrap_or(0.0)
    }

    /// When the sensor was last heard from during this engine run.
    pub fn last_heard(&self, sensor: &str) -> Option<DateTime<Utc>> {
        self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(sensor).and_then(|a| a.last_heard())
    }

    /// Forgets a deregistered sensor.
    pub fn remove(&self, sensor: &str) {
        self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(sensor);
        self.rates.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(sensor);
    }

    fn snapshot(&self) -> Vec<(String, Arc<Activity>)> {
        let map = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }
}

/// A sensor's connection status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SensorStatus {
    /// Heard from within the silence threshold (connected, or reconnecting).
    Online,
    /// Not heard from past the threshold without saying GOODBYE.
    Silent,
    /// Stopped on purpose (GOODBYE), or never connected since it enrolled.
    Offline,
    /// Revoked.
    Revoked,
}

impl SensorStatus {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Silent => "silent",
            Self::Offline => "offline",
            Self::Revoked => "revoked",
        }
    }

    /// The status of a registered sensor.
    pub fn of(rec: &SensorRecord) -> Self {
        if rec.revoked_at.is_some() {
            Self::Revoked
        } else if rec.silent_since.is_some() {
            Self::Silent
        } else if rec.offline_at.is_some() {
            Self::Offline
        } else {
            Self::Online
        }
    }
}

/// How often the monitor looks.
pub const MONITOR_EVERY: Duration = Duration::from_secs(1);

/// The liveness monitor actor.
pub struct Monitor {
    /// Registry.
    pub registry: Arc<Registry>,
    /// Activity recorded by sessions.
    pub liveness: Arc<Liveness>,
    /// Where alerts go.
    pub sinks: Router,
    /// Silence threshold.
    pub threshold: Duration,
    /// When the engine started: sensors known before get the threshold from this moment to
    /// come back before they count as silent.
    pub started: DateTime<Utc>,
}

/// One watched sensor.
#[derive(Debug, Clone)]
struct Watch {
    last_heard: DateTime<Utc>,
    /// Silence (episode start) already recorded in the registry.
    silent_since: Option<DateTime<Utc>>,
    alerted: bool,
    events: u64,
}

/// Monitor messages.
pub enum MonitorMsg {
    /// Look now.
    Tick,
}

/// Monitor state.
pub struct MonitorState {
    watches: HashMap<String, Watch>,
    last_tick: std::time::Instant,
}

impl Monitor {
    fn episode<'a>(&self, rec: &'a SensorRecord, last_heard: DateTime<Utc>) -> Episode<'a> {
        Episode {
            sensor_id: &rec.sensor_id,
            tenant: &rec.tenant,
            host: rec.host.as_deref(),
            last_heard,
            threshold: self.threshold,
        }
    }

    /// One sensor: raises or clears its silence. Returns false when it is no longer watched.
    async fn check(&self, id: &str, w: &mut Watch, now: DateTime<Utc>) -> bool {
        let threshold = chrono::Duration::from_std(self.threshold).unwrap_or_default();
        let deadline = w.last_heard.max(self.started) + threshold;
        if let Some(since) = w.silent_since {
            if w.last_heard > since {
                return self.back(id, w, since).await;
            }
            if !w.alerted {
                return self.silent(id, w, since).await;
            }
            return true;
        }
        if now < deadline {
            return true;
        }
        let since = w.last_heard;
        match self.registry.update(id, |r| {
            r.silent_since = Some(since);
            r.silent_alerted = false;
        }) {
            Ok(Some(rec)) if rec.revoked_at.is_none() && rec.offline_at.is_none() => {}
            Ok(_) => return false,
            Err(e) => {
                warn!(sensor = %id, error = %e, "Recording a silent sensor failed; will retry.");
                return true;
            }
        }
        if let Err(e) = self.registry.flush().await {
            warn!(error = %e, "Flushing the registry failed.");
        }
        w.silent_since = Some(since);
        self.silent(id, w, since).await
    }

    async fn silent(&self, id: &str, w: &mut Watch, since: DateTime<Utc>) -> bool {
        let Ok(Some(rec)) = self.registry.get(id) else { return false };
        if rec.revoked_at.is_some() {
            return false;
        }
        info!(sensor = %id, tenant = %rec.tenant, last_heard = %since, "Sensor silent.");
        if let Err(e) = self.sinks.route(vec![silent_alert(&self.episode(&rec, since))]).await {
            warn!(sensor = %id, error = %e, "Spooling the silent-sensor alert failed; will retry.");
            return true;
        }
        w.alerted = true;
        let _ = self.registry.update(id, |r| r.silent_alerted = true);
        true
    }

    async fn back(&self, id: &str, w: &mut Watch, since: DateTime<Utc>) -> bool {
        let Ok(Some(rec)) = self.registry.get(id) else { return false };
        info!(sensor = %id, tenant = %rec.tenant, "Sensor back.");
        if let Err(e) = self.sinks.route(vec![back_alert(&self.episode(&rec, since), w.last_heard)]).await {
            warn!(sensor = %id, error = %e, "Spooling the sensor-back alert failed; will retry.");
            return true;
        }
        let _ = self.registry.update(id, |r| {
            r.silent_since = None;
            r.silent_alerted = false;
        });
        w.silent_since = None;
        w.alerted = false;
        true
    }
}

impl Actor for Monitor {
    type Msg = MonitorMsg;
    type State = MonitorState;
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<MonitorMsg>, _: ()) -> Result<MonitorState, ActorProcessingErr> {
        let mut watches = HashMap::new();
        // Every sensor that did not stop on purpose is expected back.
        for rec in self.registry.list("", usize::MAX, |r| r.revoked_at.is_none() && r.offline_at.is_none())? {
            let w = Watch {
                last_heard: rec.last_seen,
                silent_since: rec.silent_since,
                alerted: rec.silent_alerted,
                events: 0,
            };
            watches.insert(rec.sensor_id, w);
        }
        myself.send_interval(MONITOR_EVERY, || MonitorMsg::Tick);
        Ok(MonitorState { watches, last_tick: std::time::Instant::now() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<MonitorMsg>,
        MonitorMsg::Tick: MonitorMsg,
        state: &mut MonitorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Utc::now();
        let dt = state.last_tick.elapsed().as_secs_f64().max(0.001);
        state.last_tick = std::time::Instant::now();
        let mut rates = HashMap::new();
        for (id, a) in self.liveness.snapshot() {
            let events = a.events.load(Ordering::Relaxed);
            if a.offline.load(Ordering::Relaxed) {
                state.watches.remove(&id);
                continue;
            }
            let Some(heard) = a.last_heard() else { continue };
            let w = state.watches.entry(id.clone()).or_insert(Watch {
                last_heard: heard,
                silent_since: None,
                alerted: false,
                events,
            });
            w.last_heard = w.last_heard.max(heard);
            let rate = events.saturating_sub(w.events) as f64 / dt;
            w.events = events;
            rates.insert(id, rate);
        }
        {
            let mut r = self.liveness.rates.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (id, rate) in rates {
                let old = r.get(&id).copied().unwrap_or(rate);
                r.insert(id, old * 0.7 + rate * 0.3);
            }
        }
        let ids: Vec<String> = state.watches.keys().cloned().collect();
        for id in ids {
            let Some(mut w) = state.watches.get(&id).cloned() else { continue };
            if self.check(&id, &mut w, now).await {
                state.watches.insert(id, w);
            } else {
                state.watches.remove(&id);
            }
        }
        Ok(())
    }
}
