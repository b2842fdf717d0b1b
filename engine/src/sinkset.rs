//! The engine's sinks as a set a config reload changes while alerts flow: each sink is a
//! supervised actor delivering from its spool ([`vedette_actors::sinks`]); the [`Router`]
//! appends to the spools of the sinks it currently holds.
//!
//! * An added sink gets its spool and actor, then alerts.
//! * A changed sink keeps its spool and dead-letter queue (one [`Spool`] object per spool,
//!   never two); its actor is stopped — after the attempt in flight — and started again with
//!   the new settings.
//! * A removed sink gets no new alerts at once; it keeps delivering what its spool holds and
//!   goes when the spool is empty. Named again before that, it simply carries on.
//!
//! [`Spool`]: vedette_actors::sinks::spool::Spool

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use tracing::{error, info, warn};
use vedette_actors::metrics::Metrics;
use vedette_actors::sinks::delivery::{Connector, SinkHandle};
use vedette_actors::sinks::{ConnectorFactory, Router, SinkActor, SinkMsg, open_sink};
use vedette_actors::supervisor::{Child, Slot, SupervisorMsg, add_child, remove_child};
use vedette_actors::{ActorError, sinks};
use vedette_config::reload::SinkChanges;
use vedette_config::{Config, Connector as Kind, Route, SinkConfig};

use crate::error::Result;
use crate::history::History;
use crate::history::sink::HistoryConnector;

/// The sinks this engine delivers to itself, in config order, the history last: `proxy`
/// sinks are delivered by the upstream only.
pub fn local(config: &Config) -> Vec<SinkConfig> {
    let configured = config.effective_sinks();
    configured
        .into_iter()
        .filter(|s| s.common.route != Route::Proxy)
        .chain([SinkConfig::history(config.history.spool_max_bytes)])
        .collect()
}

/// What to do with one sink of the new config.
enum Step {
    /// Unchanged: the running actor stays.
    Keep,
    /// Start an actor (stopping the running one first, if any) with this factory (`None`:
    /// the connector is built from the sink's config).
    Start(Option<ConnectorFactory>),
}

/// A sink change checked and ready ([`LiveSinks::prepare`]): every connector of it can be
/// built. Applying it changes the running sinks.
pub struct Prepared {
    sinks: Vec<(SinkConfig, Step)>,
    configured: Vec<SinkConfig>,
    /// For the report.
    pub changes: SinkChanges,
}

/// The running sinks.
pub struct LiveSinks {
    supervisor: ActorRef<SupervisorMsg>,
    db: sled::Db,
    data_dir: PathBuf,
    metrics: Metrics,
    history: Arc<History>,
    follow: Option<tokio::sync::mpsc::UnboundedSender<crate::rulesync::Received>>,
    router: Router,
    /// Each sink actor's slot, by sink name (readiness reads it).
    slots: Arc<Mutex<BTreeMap<String, Slot<SinkMsg>>>>,
    /// One change at a time (a reload, a removed sink going).
    changing: tokio::sync::Mutex<()>,
}

impl LiveSinks {
    /// The sinks of `config`, started under `supervisor`, appended to by `router`.
    pub async fn start(
        config: &Config,
        supervisor: ActorRef<SupervisorMsg>,
        db: sled::Db,
        metrics: Metrics,
        history: Arc<History>,
        follow: Option<tokio::sync::mpsc::UnboundedSender<crate::rulesync::Received>>,
        router: Router,
    ) -> Result<Arc<Self>> {
        let this = Arc::new(Self {
            supervisor,
            db,
            data_dir: config.data_dir.clone(),
            metrics,
            history,
            follow,
            router,
            slots: Arc::default(),
            changing: tokio::sync::Mutex::new(()),
        });
        let mut handles = Vec::new();
        for sink in local(config) {
            let make = this
                .factory(&sink, &config.effective_sinks())
                .map_err(|reason| ActorError::Spawn { name: sink.name().into(), reason })?;
            let handle = open_sink(&this.db, sink)?;
            this.start_actor(&handle, make).await?;
            handles.push(handle);
        }
        this.router.replace(handles);
        this.warn_orphans();
        Ok(this)
    }

    /// Each sink actor's slot, by sink name.
    pub fn slots(&self) -> Arc<Mutex<BTreeMap<String, Slot<SinkMsg>>>> {
        Arc::clone(&self.slots)
    }

    /// The connector factory of `sink` among `configured`, after checking that its connector
    /// can be built (`Err` says why not).
    fn factory(
        &self,
        sink: &SinkConfig,
        configured: &[SinkConfig],
    ) -> std::result::Result<Option<ConnectorFactory>, String> {
        match &sink.connector {
            Kind::Forward(f) => crate::forward::factory(f, &self.data_dir, configured, self.follow.clone()).map(Some),
            Kind::History {} => {
                let (h, m) = (Arc::clone(&self.history), self.metrics.clone());
                Ok(Some(Arc::new(move || {
                    Ok(Box::new(HistoryConnector::new(Arc::clone(&h), m.clone())) as Box<dyn Connector>)
                })))
            }
            _ => sinks::connector(sink, &self.data_dir, 0).map(|_| None).map_err(|e| e.to_string()),
        }
    }

    async fn start_actor(&self, handle: &Arc<SinkHandle>, make: Option<ConnectorFactory>) -> Result<()> {
        let slot = Slot::<SinkMsg>::default();
        let (h, m, dir) = (Arc::clone(handle), self.metrics.clone(), self.data_dir.clone());
        let spec = Child::new(format!("sink:{}", handle.name), slot.clone(), move || {
            let actor =
                SinkActor { handle: Arc::clone(&h), make: make.clone(), data_dir: dir.clone(), metrics: m.clone() };
            (actor, ())
        });
        add_child(&self.supervisor, Arc::new(spec)).await?;
        self.slots.lock().expect("slots lock is never poisoned").insert(handle.name.clone(), slot);
        Ok(())
    }

    /// Checks the sinks of `new` against those `running` runs, building every connector that
    /// is new or changed; changes nothing. An edge's forward sink is started again when the
    /// sinks it claims change.
    pub fn prepare(
        &self,
        running: &Config,
        new: &Config,
    ) -> std::result::Result<Prepared, Vec<vedette_config::Problem>> {
        let (old, configured) = (local(running), new.effective_sinks());
        let claims_changed =
            crate::forward::claimed(&running.effective_sinks()) != crate::forward::claimed(&configured);
        let mut problems = Vec::new();
        let mut sinks = Vec::new();
        for sink in local(new) {
            let same = old.contains(&sink);
            let step = if same && !(claims_changed && matches!(sink.connector, Kind::Forward(_))) {
                Step::Keep
            } else {
                match self.factory(&sink, &configured) {
                    Ok(make) => Step::Start(make),
                    Err(message) => {
                        let i = configured.iter().position(|s| s.name() == sink.name()).unwrap_or_default();
                        problems.push(vedette_config::Problem { path: format!("sinks[{i}]"), message });
                        continue;
                    }
                }
            };
            sinks.push((sink, step));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Prepared { sinks, configured, changes: vedette_config::reload::sink_changes(running, new) })
    }

    /// Applies a prepared change: new and changed sinks start, the router takes the new set,
    /// removed sinks deliver what they hold and then go.
    pub async fn apply(self: &Arc<Self>, prepared: Prepared) -> Result<()> {
        let _changing = self.changing.lock().await;
        let current = self.router.sinks();
        let running = |name: &str| current.iter().find(|h| h.name == name).cloned();
        let mut active = Vec::new();
        let mut starts = Vec::new();
        for (config, step) in prepared.sinks {
            let old = running(config.name());
            match (step, old) {
                (Step::Keep, Some(h)) => active.push(h),
                (Step::Keep, None) => {
                    // Cannot happen (kept sinks run); start it rather than lose it.
                    let make = self.factory(&config, &prepared.configured).ok().flatten();
                    let h = open_sink(&self.db, config)?;
                    starts.push((Arc::clone(&h), make, false));
                    active.push(h);
                }
                (Step::Start(make), Some(old)) => {
                    let spool = &config.common.spool;
                    old.spool.set_limits(spool.max_bytes, spool.policy);
                    let h = Arc::new(SinkHandle {
                        name: old.name.clone(),
                        spool: Arc::clone(&old.spool),
                        dead_letters: Arc::clone(&old.dead_letters),
                        status: Arc::default(),
                        config,
                    });
                    starts.push((Arc::clone(&h), make, true));
                    active.push(h);
                }
                (Step::Start(make), None) => {
                    let h = open_sink(&self.db, config)?;
                    starts.push((Arc::clone(&h), make, false));
                    active.push(h);
                }
            }
        }
        let before: Vec<String> = self.router.active().iter().map(|h| h.name.clone()).collect();
        self.router.replace(active);
        let mut failed = Vec::new();
        for (handle, make, replace) in starts {
            if replace {
                // After the attempt in flight: the new actor must not send the same batch.
                if let Err(e) = remove_child(&self.supervisor, &format!("sink:{}", handle.name)).await {
                    warn!(sink = %handle.name, error = %e, "Stopping the sink's old actor failed.");
                }
            }
            match self.start_actor(&handle, make).await {
                Ok(()) => {
                    info!(sink = %handle.name, "Sink {}.", if replace { "restarted with its new settings" } else { "added" })
                }
                Err(e) => {
                    error!(sink = %handle.name, error = %e, "Starting the sink failed; its alerts stay spooled.");
                    failed.push(format!("sink `{}`: {e}", handle.name));
                }
            }
        }
        for handle in self.router.sinks().into_iter().filter(|h| before.contains(&h.name)) {
            if handle.status.lock().expect("status lock is never poisoned").removed {
                let (spooled, _) = handle.spool.depth();
                info!(sink = %handle.name, spooled, "Sink removed from the config: no new alerts; it goes once its spool is delivered.");
                tokio::spawn(Arc::clone(self).retire(handle));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ActorError::Spawn { name: "sinks".into(), reason: failed.join("; ") }.into())
        }
    }

    /// Waits until removed sink `handle` has delivered its spool, then stops its actor.
    async fn retire(self: Arc<Self>, handle: Arc<SinkHandle>) {
        // No commit that still saw the sink is spooling into it after this.
        self.router.settled().await;
        loop {
            if handle.spool.depth().0 == 0 {
                let _changing = self.changing.lock().await;
                let still_removed = self.router.removed().iter().any(|h| Arc::ptr_eq(h, &handle));
                if !still_removed {
                    return;
                }
                if handle.spool.depth().0 == 0 {
                    if let Err(e) = remove_child(&self.supervisor, &format!("sink:{}", handle.name)).await {
                        warn!(sink = %handle.name, error = %e, "Stopping a removed sink's actor failed.");
                    }
                    self.router.forget(&handle.name);
                    self.slots.lock().expect("slots lock is never poisoned").remove(&handle.name);
                    self.metrics.forget_sink(&handle.name);
                    info!(sink = %handle.name, "Removed sink delivered everything it held and stopped.");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Logs the spools of sinks the config no longer has that still hold alerts (a sink
    /// removed while its destination was down, then a restart).
    fn warn_orphans(&self) {
        let names: Vec<String> = self.router.sinks().iter().map(|h| h.name.clone()).collect();
        for tree in self.db.tree_names() {
            let Some(name) = std::str::from_utf8(&tree).ok().and_then(|t| t.strip_prefix("spool:")) else { continue };
            if names.iter().any(|n| n == name) {
                continue;
            }
            let held = self.db.open_tree(&tree).map(|t| t.len()).unwrap_or_default();
            if held > 0 {
                warn!(sink = %name, spooled = held,
                    "The spool of a sink the config no longer has holds alerts; they are not delivered. Add a sink named `{name}` to deliver them.");
            }
        }
    }
}
