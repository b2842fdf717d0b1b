//! Wiring: builds every actor under one supervisor, binds the listeners, shuts down cleanly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::Semaphore;
use tracing::{info, warn};
use vedette_actors::batcher::{BatchLimits, Batcher, BatcherMsg};
use vedette_actors::commit::StateStore;
use vedette_actors::dedup::DedupLedger;
use vedette_actors::fleet::commands::Commands;
use vedette_actors::fleet::liveness::{Liveness, Monitor, MonitorMsg};
use vedette_actors::fleet::taps::Taps;
use vedette_actors::ingest::{IngestContext, IngestListener, Limits, TableRoute};
use vedette_actors::ledger::SeqLedger;
use vedette_actors::metrics::Metrics;
use vedette_actors::registry::Registry;
use vedette_actors::rules::{RuleWorker, RuleWorkerMsg};
use vedette_actors::sessions::{Acker, Sessions};
use vedette_actors::sinks::{Router, SinkMsg};
use vedette_actors::supervisor::{Budget, Child, Slot, Supervisor, SupervisorMsg, add_child};
use vedette_actors::{ActorError, tls};
use vedette_config::Config;
use vedette_pipelines::compile::Compiler;
use vedette_schemas::frame::close_code;
use vedette_schemas::tables::{Catalog, ColumnType, TableDef};

use crate::api::ApiParts;
use crate::api::access::Peer;
use crate::api::listener::TlsListener;
use crate::auth::TokenStore;
use crate::auth::audit::AuditLog;
use crate::auth::enrollment::EnrollmentTokens;
use crate::auth::local::ensure_local_admin;
use crate::error::{EngineError, Result};
use crate::history::{History, Retention};
use crate::pki::{PkiPaths, ensure_dev_pki};
use crate::ruleset::{ApplyReport, RuleManager, RulesStatus, resolve};
use crate::sinkset::LiveSinks;

/// A running engine.
pub struct EngineHandle {
    /// Where sensors connect (QUIC/UDP).
    pub ingest_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub api_addr: SocketAddr,
    /// Data directory in use.
    pub data_dir: PathBuf,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_join: tokio::task::JoinHandle<()>,
    ingest: Arc<IngestContext>,
    endpoint: quinn::Endpoint,
    batchers: Vec<(String, Slot<BatcherMsg>)>,
    workers: HashMap<String, Slot<RuleWorkerMsg>>,
    api: tokio::task::JoinHandle<()>,
    api_stop: tokio::sync::oneshot::Sender<()>,
    pruners: [tokio::task::JoinHandle<()>; 3],
    history: Arc<History>,
    db: sled::Db,
    metrics: Metrics,
    manager: Arc<tokio::sync::Mutex<RuleManager>>,
    reloader: Arc<crate::reload::Reloader>,
    sinks: Router,
}

/// How long a graceful shutdown lets API requests finish before it cuts open streams.
const API_GRACE: Duration = Duration::from_secs(2);

/// How long a graceful shutdown waits for sinks to deliver what is spooled (the rest stays
/// spooled and is delivered after the next start).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// sled's page cache: bounds the memory a large spool (a long destination outage) takes; the
/// rest stays on disk. sled's default (1 GiB) let RSS grow with the backlog.
pub const STATE_CACHE_BYTES: u64 = 64 << 20;

/// The state store at `path` with the engine's settings.
pub fn state_config(path: &Path) -> sled::Config {
    sled::Config::new().path(path).cache_capacity(STATE_CACHE_BYTES)
}

/// Opens the sled state store. A handle dropped a moment ago (an engine in this process that
/// stopped or refused to start) keeps the file lock until sled's flusher lets go: wait for it
/// briefly instead of failing.
async fn open_state(path: &Path) -> Result<sled::Db> {
    open_db(path, STATE_CACHE_BYTES).await
}

/// Opens a sled database with a page cache of `cache` bytes, waiting briefly for a lock a
/// dropped handle still holds.
async fn open_db(path: &Path, cache: u64) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).cache_capacity(cache).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if is_lock_busy(&e) && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(ActorError::Storage { path: path.display().to_string(), source }.into()),
        }
    }
}

/// sled reports a held lock as an error wrapping the OS `WouldBlock`.
fn is_lock_busy(e: &std::io::Error) -> bool {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<std::io::Error>());
    e.kind() == std::io::ErrorKind::WouldBlock
        || inner.is_some_and(|i| i.kind() == std::io::ErrorKind::WouldBlock)
        || e.to_string().contains("could not acquire lock")
}

/// The built-in telemetry tables plus the config's extra ones.
pub fn build_catalog(config: &Config) -> Result<Catalog> {
    let mut catalog = Catalog::builtin();
    for t in &config.tables {
        let cols: Vec<(&str, ColumnType)> = t
            .columns
            .iter()
            .map(|(n, ty)| (n.as_str(), ColumnType::parse(ty).expect("column types are validated with the config")))
            .collect();
        catalog.add(TableDef::new(&t.name, &cols)?)?;
    }
    Ok(catalog)
}

impl EngineHandle {
    /// Starts an engine from a validated config.
    pub async fn start(mut config: Config) -> Result<Self> {
        // Nothing is written before the whole config is known to be usable.
        config.resolve_paths();
        let report = crate::preflight::check(&config).await;
        for w in &report.warnings {
            warn!(key = %w.path, "{}", w.message);
        }
        if !report.problems.is_empty() {
            return Err(vedette_config::ConfigError::Invalid(report.problems).into());
        }
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(EngineError::io(format!("creating data dir {}", data_dir.display())))?;
        let pki = PkiPaths::new(&data_dir);
        if config.ingest.ca_cert.is_none() && ensure_dev_pki(&data_dir)? {
            info!(dir = %data_dir.display(), "Created development CA, server and demo sensor certificates.");
        }
        let catalog = Arc::new(build_catalog(&config)?);
        let compiler = Compiler::with_references(Arc::clone(&catalog), crate::reference::registry(&config))?;
        let state_path = data_dir.join("state");
        let db = open_state(&state_path).await?;
        let metrics = Metrics::new();
        let table_names: Vec<String> = catalog.tables().map(|t| t.name().to_string()).collect();
        let manager = RuleManager::start(config.clone(), compiler, db.clone(), &table_names, metrics.clone()).await?;
        let rule_sets = manager.rule_sets();
        // Rule sets the forward connection receives, for an engine that follows its upstream.
        let (synced_tx, synced_rx) = tokio::sync::mpsc::unbounded_channel();
        let follow = config.rules.follow_upstream.then_some(synced_tx);
        let status = manager.status();
        info!(packs = status.packs.len(), rules = status.rules.iter().filter(|r| r.enabled).count(), "Rules compiled.");

        let sessions = Arc::new(Sessions::default());
        let ledger = Arc::new(SeqLedger::open(db.clone())?);
        let acker =
            Arc::new(Acker { ledger: Arc::clone(&ledger), sessions: Arc::clone(&sessions), metrics: metrics.clone() });
        let supervisor_actor = Supervisor { name: "root".into(), budget: Budget::default(), metrics: metrics.clone() };
        let (supervisor, supervisor_join) = Actor::spawn(None, supervisor_actor, ())
            .await
            .map_err(|e| ActorError::Spawn { name: "supervisor".into(), reason: e.to_string() })?;

        let retention = Retention { max_age: config.history.max_age, max_bytes: config.history.max_bytes };
        let history_dir = data_dir.join("history");
        let history_db = open_db(&history_dir.join("ids"), crate::history::store::CACHE_BYTES).await?;
        let history = Arc::new(History::with_db(&history_dir, history_db, retention)?);
        let storm =
            vedette_pipelines::storm::StormGuard::new(config.alerts.storm_max_per_rule, config.alerts.storm_interval);
        let windows_tree =
            db.open_tree("windows").map_err(|source| ActorError::Storage { path: "windows".into(), source })?;
        let dedup = if config.alerts.dedup_ttl.is_zero() {
            None
        } else {
            Some(DedupLedger::open(
                &db,
                config.alerts.dedup_ttl,
                config.alerts.dedup_max_entries,
                Some(metrics.clone()),
            )?)
        };
        let store = Arc::new(StateStore { db: db.clone(), ledger, windows: windows_tree, dedup });
        let sinks = Router::new(Vec::new(), Some(metrics.clone()), storm, Some(Arc::clone(&store)));
        let live_sinks = LiveSinks::start(
            &config,
            supervisor.clone(),
            db.clone(),
            metrics.clone(),
            Arc::clone(&history),
            follow,
            sinks.clone(),
        )
        .await?;

        let limits = BatchLimits { rows: config.pipeline.batch_rows, linger: config.pipeline.batch_linger };
        let mut routes = HashMap::new();
        let mut workers = HashMap::new();
        let mut batchers = Vec::new();
        for table in catalog.tables() {
            let name = table.name().to_string();
            let slot = manager.tables()[&name].clone();
            let rules = slot.shared.clone();
            let worker = slot.worker.clone();
            let (s, m) = (sinks.clone(), metrics.clone());
            let suppressions = Arc::default();
            let spec = Child::new(format!("rules:{name}"), worker.clone(), move || {
                let worker = RuleWorker {
                    rules: Arc::clone(&rules),
                    sinks: s.clone(),
                    metrics: m.clone(),
                    suppressions: Arc::clone(&suppressions),
                };
                (worker, ())
            });
            add_child(&supervisor, Arc::new(spec)).await?;
            let batcher = Slot::<BatcherMsg>::default();
            let (t, sc, w, a, m) =
                (name.clone(), table.schema().clone(), worker.clone(), Arc::clone(&acker), metrics.clone());
            let spec = Child::new(format!("batcher:{name}"), batcher.clone(), move || {
                let b = Batcher {
                    table: t.clone(),
                    schema: sc.clone(),
                    limits,
                    worker: w.clone(),
                    acker: Arc::clone(&a),
                    metrics: m.clone(),
                };
                (b, ())
            });
            add_child(&supervisor, Arc::new(spec)).await?;
            let inflight = Arc::new(Semaphore::new(config.pipeline.max_inflight_frames));
            routes.insert(name.clone(), TableRoute { batcher: batcher.clone(), inflight });
            workers.insert(name.clone(), worker);
            batchers.push((name.clone(), batcher));
        }

        let ca = config.ingest.ca_cert.clone().map_or(pki.ca_cert.clone(), |p| resolve(&data_dir, &p));
        let (cert, key) = match (&config.ingest.server_cert, &config.ingest.server_key) {
            (Some(c), Some(k)) => (resolve(&data_dir, c), resolve(&data_dir, k)),
            _ => (pki.server_cert.clone(), pki.server_key.clone()),
        };
        let read = |p: &Path| std::fs::read(p).map_err(EngineError::io(format!("reading {}", p.display())));
        let registry = Arc::new(Registry::open(&db)?);
        let enrollments = EnrollmentTokens::open(&db)?;
        let issuer = fleet_issuer(&config, &pki, &data_dir, &ca, &registry, &enrollments)?;
        let revocations: Arc<dyn tls::RevocationCheck> = registry.clone();
        let server = tls::server_config(
            &read(&ca)?,
            &read(&cert)?,
            &read(&key)?,
            config.ingest.idle_timeout,
            config.ingest.receive_window_bytes,
            revocations,
            issuer.is_some(),
        )?;
        let endpoint = crate::quic::bind(server, config.ingest.listen, &data_dir)?;
        let ingest_addr = endpoint.local_addr().map_err(EngineError::io("QUIC listener address"))?;
        let commands = Arc::new(Commands::open(&db)?);
        let liveness = Arc::new(Liveness::default());
        let taps = Arc::new(Taps::default());
        let ingest = Arc::new(IngestContext {
            catalog: Arc::clone(&catalog),
            routes,
            acker,
            sessions,
            registry: Arc::clone(&registry),
            commands: Arc::clone(&commands),
            liveness: Arc::clone(&liveness),
            taps: Arc::clone(&taps),
            router: sinks.clone(),
            rule_sets: Some(rule_sets),
            issuer,
            limits: Limits {
                max_frame_bytes: config.ingest.max_frame_bytes,
                max_frame_rows: config.ingest.max_frame_rows,
                heartbeat: config.ingest.heartbeat_interval,
                hello_timeout: Duration::from_secs(10),
            },
            metrics: metrics.clone(),
            accepting: AtomicBool::new(true),
        });
        let listener_slot = Slot::<()>::default();
        let (ep, ic) = (endpoint.clone(), Arc::clone(&ingest));
        let spec = Child::new("ingest", listener_slot.clone(), move || {
            (IngestListener { endpoint: ep.clone(), ctx: Arc::clone(&ic) }, ())
        });
        add_child(&supervisor, Arc::new(spec)).await?;
        let monitor_slot = Slot::<MonitorMsg>::default();
        let (r, l, s, threshold, started) =
            (Arc::clone(&registry), Arc::clone(&liveness), sinks.clone(), config.silent_after(), chrono::Utc::now());
        let spec = Child::new("fleet-monitor", monitor_slot, move || {
            let m =
                Monitor { registry: Arc::clone(&r), liveness: Arc::clone(&l), sinks: s.clone(), threshold, started };
            (m, ())
        });
        add_child(&supervisor, Arc::new(spec)).await?;

        let readiness = readiness(listener_slot, &sinks, live_sinks.slots(), &workers, &batchers);
        let tokens = TokenStore::open(&db)?;
        let (token_file, created) = ensure_local_admin(&data_dir, &tokens)?;
        if created {
            info!(file = %token_file.display(), "Created the local admin API token (the CLI reads it from this file).");
        }
        let manager = Arc::new(tokio::sync::Mutex::new(manager));
        let limiter = Arc::new(crate::auth::ratelimit::RateLimiter::new(
            config.api.rate_limit_per_sec,
            config.api.rate_limit_burst,
        ));
        let reloader =
            Arc::new(crate::reload::Reloader::new(config.clone(), Arc::clone(&manager), limiter, Some(live_sinks)));
        let rule_sync = tokio::spawn(crate::rulesync::run(Arc::clone(&manager), synced_rx));
        let app = crate::api::router(ApiParts {
            metrics: metrics.clone(),
            readiness,
            rules: Arc::clone(&manager),
            sinks: sinks.clone(),
            data_dir: data_dir.clone(),
            tokens,
            audit: AuditLog::open(&db)?,
            history: Arc::clone(&history),
            config: config.api.clone(),
            stream_stall: config.history.stream_stall_timeout,
            registry: Arc::clone(&registry),
            sessions: Arc::clone(&ingest.sessions),
            commands,
            liveness,
            enrollments,
            taps,
            reloader: Arc::clone(&reloader),
        });
        let (api, api_addr, api_stop) = serve_api(&config.api, &data_dir, app).await?;
        let pruners = [
            tokio::spawn(prune_history(Arc::clone(&history), metrics.clone())),
            tokio::spawn(prune_dedup(Arc::clone(&store))),
            rule_sync,
        ];
        info!(%ingest_addr, %api_addr, data_dir = %data_dir.display(), "vedette is running.");
        let scheme = if config.api.tls_cert.is_some() { "https" } else { "http" };
        let token_file = data_dir.join("admin.token");
        info!("Web console: {scheme}://{api_addr}/ui/ (log in with an API token, e.g. {}).", token_file.display());
        Ok(Self {
            ingest_addr,
            api_addr,
            data_dir,
            supervisor,
            supervisor_join,
            ingest,
            endpoint,
            batchers,
            workers,
            api,
            api_stop,
            pruners,
            history,
            db,
            metrics,
            manager,
            reloader,
            sinks,
        })
    }

    /// Waits until every sink has delivered everything spooled (or `timeout` passes);
    /// returns whether all spools are empty.
    pub async fn wait_delivered(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.sinks.sinks().iter().all(|s| s.spool.depth().0 == 0) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Re-reads the packs directory and swaps the new rule set in (SIGHUP, `vedette rules
    /// apply`). On error the running set is unchanged.
    pub async fn apply_rules(&self) -> Result<ApplyReport> {
        self.manager.lock().await.apply().await
    }

    /// Reloads one reference table from its file.
    pub async fn reload_reference(&self, name: &str) -> Result<crate::reference::RefStatus> {
        self.manager.lock().await.reload_reference(name)
    }

    /// Re-reads the config (SIGHUP in `serve`, `POST /api/v1/config/reload`).
    pub fn reloader(&self) -> &Arc<crate::reload::Reloader> {
        &self.reloader
    }

    /// Enables or disables a rule at runtime.
    pub async fn set_rule_enabled(&self, id: &str, enabled: bool) -> Result<()> {
        self.manager.lock().await.set_enabled(id, enabled).await
    }

    /// Applied rules and their state.
    pub async fn rules_status(&self) -> RulesStatus {
        self.manager.lock().await.status()
    }

    /// The current rule worker of `table` (tests use it to kill one).
    pub fn rule_worker(&self, table: &str) -> Option<ActorRef<RuleWorkerMsg>> {
        self.workers.get(table).and_then(Slot::get)
    }

    /// The alert history.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Engine metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sensors connected right now.
    pub fn sensors_connected(&self) -> usize {
        self.ingest.sessions.len()
    }

    /// Resolves when the root supervisor stops (restart budget exhausted), so `serve` exits.
    pub async fn failed(&mut self) {
        let _ = (&mut self.supervisor_join).await;
    }

    /// Graceful shutdown: stop accepting, drain batches (alerts delivered, frames acked),
    /// close sessions, stop actors in reverse order, flush state.
    pub async fn shutdown(self) {
        info!("Shutting down: no new frames accepted, draining.");
        self.ingest.accepting.store(false, Ordering::Release);
        for _ in 0..2 {
            for (_, b) in &self.batchers {
                if let Some(b) = b.get() {
                    let _ = b.call(BatcherMsg::Drain, Some(Duration::from_secs(30))).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while self.sinks.sinks().iter().any(|s| s.spool.depth().0 > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ingest.sessions.close_all(close_code::SHUTTING_DOWN, "engine shutting down");
        self.endpoint.close(close_code::SHUTTING_DOWN.into(), b"engine shutting down");
        let _ = self.supervisor.call(SupervisorMsg::StopChildren, Some(Duration::from_secs(60))).await;
        self.supervisor.stop(None);
        let _ = self.supervisor_join.await;
        let _ = self.api_stop.send(());
        // Requests in flight finish; live streams (alerts, telemetry taps: a console or
        // `vedette tail`) never do, so they are cut after a short grace period.
        let mut api = self.api;
        if tokio::time::timeout(API_GRACE, &mut api).await.is_err() {
            info!("Closing the API's open streams.");
            api.abort();
            let _ = api.await;
        }
        for p in &self.pruners {
            p.abort();
        }
        let _ = self.history.flush().await;
        let _ = self.db.flush_async().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!("Shutdown complete.");
    }
}

/// The certificate issuer of enrollment and renewal: the development CA's key, or
/// `fleet.ca_key` with `ingest.ca_cert`. `None` (both off) for a configured CA without key.
fn fleet_issuer(
    config: &Config,
    pki: &PkiPaths,
    data_dir: &Path,
    ca_cert: &Path,
    registry: &Arc<Registry>,
    tokens: &EnrollmentTokens,
) -> Result<Option<Arc<dyn vedette_actors::fleet::CertIssuer>>> {
    let key = match (&config.ingest.ca_cert, &config.fleet.ca_key) {
        (None, _) => pki.ca_key.clone(),
        (Some(_), Some(k)) => resolve(data_dir, k),
        (Some(_), None) => return Ok(None),
    };
    let ca = crate::pki::CertPem::load(ca_cert, &key)?;
    Ok(Some(Arc::new(crate::issuer::Issuer {
        ca,
        tokens: tokens.clone(),
        registry: Arc::clone(registry),
        days: config.fleet.cert_days,
    })))
}

/// Binds the API (HTTPS when `api.tls_cert`/`tls_key` are set) and serves `app` until the
/// returned sender fires.
async fn serve_api(
    api: &vedette_config::ApiConfig,
    data_dir: &Path,
    app: axum::Router,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let tcp = tokio::net::TcpListener::bind(api.listen)
        .await
        .map_err(EngineError::io(format!("binding HTTP API api.listen={}", api.listen)))?;
    let api_addr = tcp.local_addr().map_err(EngineError::io("HTTP API address"))?;
    let (api_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        let _ = stop_rx.await;
    };
    let app = app.layer(axum::middleware::map_response(crate::api::error::json_rejections));
    let task = match (&api.tls_cert, &api.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::api::listener::server_config(&resolve(data_dir, cert), &resolve(data_dir, key))?;
            let listener = TlsListener::new(tcp, tls).map_err(EngineError::io("HTTPS listener"))?;
            let make = app.into_make_service_with_connect_info::<Peer>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, make).with_graceful_shutdown(stop).await {
                    warn!(error = %e, "HTTPS API stopped.");
                }
            })
        }
        _ => {
            let make = app.into_make_service_with_connect_info::<Peer>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tcp, make).with_graceful_shutdown(stop).await {
                    warn!(error = %e, "HTTP API stopped.");
                }
            })
        }
    };
    Ok((task, api_addr, api_stop))
}

/// Applies the history's retention now and every minute.
async fn prune_history(history: Arc<History>, metrics: Metrics) {
    loop {
        crate::history::sink::publish_size(&history, &metrics);
        let h = Arc::clone(&history);
        match tokio::task::spawn_blocking(move || h.prune(chrono::Utc::now().timestamp_micros())).await {
            Ok(Ok(n)) if n > 0 => info!(removed = n, "Alert history: retention applied."),
            Ok(Err(e)) => warn!(error = %e, "Alert history: applying retention failed."),
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

/// Trims the dedup ledger (expired ids, then the oldest past its bound) every second.
async fn prune_dedup(store: Arc<StateStore>) {
    if store.dedup.is_none() {
        return;
    }
    loop {
        let s = Arc::clone(&store);
        let pruned = tokio::task::spawn_blocking(move || {
            s.dedup.as_ref().map(|d| d.prune(chrono::Utc::now().timestamp_micros()))
        })
        .await;
        if let Ok(Some(Err(e))) = pruned {
            warn!(error = %e, "Dedup ledger: trimming failed; will retry.");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn readiness(
    listener: Slot<()>,
    sinks: &Router,
    sink_slots: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Slot<SinkMsg>>>>,
    workers: &HashMap<String, Slot<RuleWorkerMsg>>,
    batchers: &[(String, Slot<BatcherMsg>)],
) -> crate::api::Readiness {
    let workers: Vec<(String, Slot<RuleWorkerMsg>)> = workers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let batchers = batchers.to_vec();
    let router = sinks.clone();
    Arc::new(move || {
        let mut out = vec![("ingest".to_string(), listener.get().is_some())];
        let slots = sink_slots.lock().expect("slots lock is never poisoned");
        out.extend(slots.iter().map(|(n, s)| (format!("sink:{n}"), s.get().is_some())));
        drop(slots);
        out.extend(workers.iter().map(|(t, s)| (format!("rules:{t}"), s.get().is_some())));
        out.extend(batchers.iter().map(|(t, s)| (format!("batcher:{t}"), s.get().is_some())));
        out.sort();
        // A sink whose destination is down keeps spooling: the engine stays ready (the sink is
        // `degraded`, with the reason) until its spool is full (`down`).
        let sinks = router
            .sinks()
            .iter()
            .map(|h| {
                let r = h.reading();
                let v = serde_json::json!({
                    "state": r.health.as_str(),
                    "reason": r.reason,
                    "breaker": r.status.breaker.as_str(),
                    "spooled": r.spooled,
                    "spool_bytes": r.spool_bytes,
                    "dead_letters": h.dead_letters.len(),
                    "last_error": r.status.last_error,
                });
                (h.name.clone(), v)
            })
            .collect();
        (out, sinks)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_store_open_waits_for_a_lock_released_moments_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let first = sled::open(&path).unwrap();
        let p = path.clone();
        let waiter = tokio::spawn(async move { open_state(&p).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished(), "the lock is held: the open waits");
        drop(first);
        waiter.await.unwrap().expect("opens once the lock is free");
    }
}
