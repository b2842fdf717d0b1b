//! Wiring: builds every actor under one supervisor, binds the listeners, shuts down cleanly.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::sync::Semaphore;
use tracing::{info, warn};
use vedette_actors::batcher::{BatchLimits, Batcher, BatcherMsg};
use vedette_actors::ingest::{IngestContext, IngestListener, Limits, TableRoute};
use vedette_actors::ledger::SeqLedger;
use vedette_actors::metrics::Metrics;
use vedette_actors::rules::{RuleWorker, RuleWorkerMsg};
use vedette_actors::sessions::{Acker, Sessions};
use vedette_actors::sink::{Output, SinkActor, SinkMsg, SinkSet};
use vedette_actors::supervisor::{Budget, Child, Slot, Supervisor, SupervisorMsg, add_child};
use vedette_actors::{ActorError, tls};
use vedette_config::{Config, SinkConfig};
use vedette_pipelines::compile::{CompiledRule, Compiler, TableRules};
use vedette_pipelines::rule::Pack;
use vedette_pipelines::signature::{self, PublicKey};
use vedette_schemas::frame::close_code;
use vedette_schemas::tables::{Catalog, ColumnType, TableDef};

use crate::error::{EngineError, Result};
use crate::pki::{PkiPaths, ensure_dev_pki};

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
    db: sled::Db,
    metrics: Metrics,
}

fn build_catalog(config: &Config) -> Result<Catalog> {
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

/// Loads the built-in pack and every `*.yaml` pack of `packs_dir`, checking signatures.
pub fn load_packs(config: &Config) -> Result<Vec<Pack>> {
    let mut packs = Vec::new();
    if config.rules.builtin {
        packs.push(Pack::builtin());
    }
    let Some(dir) = &config.rules.packs_dir else { return Ok(packs) };
    let dir = resolve(&config.data_dir, dir);
    let trusted = config
        .rules
        .trusted_keys
        .iter()
        .map(|p| {
            let p = resolve(&config.data_dir, p);
            let text =
                std::fs::read_to_string(&p).map_err(EngineError::io(format!("rules.trusted_keys {}", p.display())))?;
            Ok(PublicKey::from_text(&p.display().to_string(), &text)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(EngineError::io(format!("rules.packs_dir {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for f in files {
        let pack = read_pack(&f)?;
        match check_signature(&f, &pack, &trusted) {
            Ok(key) => info!(pack = %pack.name, version = pack.version, key = %key, "Pack signature verified."),
            Err(e) if config.rules.allow_unsigned => {
                warn!(pack = %pack.name, error = %e, "Loading a pack without a valid signature (rules.allow_unsigned).");
            }
            Err(e) => return Err(e),
        }
        packs.push(pack);
    }
    Ok(packs)
}

/// What the registry remembers of an applied pack.
#[derive(serde::Serialize, serde::Deserialize)]
struct AppliedPack {
    version: u32,
    sha256: String,
}

/// Enforces that `(name, version)` is immutable and versions only go up, against the packs
/// applied before (sled tree `packs`), then records the new set.
pub fn record_packs(db: &sled::Db, packs: &[Pack]) -> Result<()> {
    use sha2::Digest;
    let storage = |source| EngineError::from(ActorError::Storage { path: "packs".into(), source });
    let tree = db.open_tree("packs").map_err(storage)?;
    let refuse = |pack: &Pack, reason: String| -> EngineError {
        vedette_pipelines::RuleError::InvalidRule { rule: pack.name.clone(), reason }.into()
    };
    let mut updates = Vec::new();
    for pack in packs {
        let sha256 = hex::encode(sha2::Sha256::digest(signature::canonical_bytes(pack)));
        let before = tree
            .get(pack.name.as_bytes())
            .map_err(storage)?
            .and_then(|v| serde_json::from_slice::<AppliedPack>(&v).ok());
        if let Some(before) = before {
            if pack.version < before.version {
                return Err(refuse(
                    pack,
                    format!(
                        "pack version {} is lower than the applied version {}; versions only go up",
                        pack.version, before.version
                    ),
                ));
            }
            if pack.version == before.version && sha256 != before.sha256 {
                return Err(refuse(
                    pack,
                    format!(
                        "pack (`{}`, version {}) was applied with other contents; bump `version` to change it",
                        pack.name, pack.version
                    ),
                ));
            }
        }
        updates.push((pack.name.clone(), AppliedPack { version: pack.version, sha256 }));
    }
    for (name, applied) in updates {
        let bytes = serde_json::to_vec(&applied).expect("serializes");
        tree.insert(name.as_bytes(), bytes).map_err(storage)?;
    }
    tree.flush().map_err(storage)?;
    Ok(())
}

/// Reads and parses a pack file.
pub fn read_pack(path: &Path) -> Result<Pack> {
    let text = std::fs::read_to_string(path).map_err(EngineError::io(format!("reading {}", path.display())))?;
    Ok(Pack::from_yaml(&path.display().to_string(), &text)?)
}

/// `PACK.sig` beside `PACK`.
pub fn signature_path(pack: &Path) -> PathBuf {
    let mut s = pack.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Verifies the detached signature beside a pack file; returns the signing key id.
pub fn check_signature(path: &Path, pack: &Pack, trusted: &[PublicKey]) -> Result<String> {
    let sig_path = signature_path(path);
    let sig = std::fs::read_to_string(&sig_path).map_err(|_| vedette_pipelines::RuleError::Signature {
        pack: pack.name.clone(),
        reason: format!("unsigned: {} not found (sign with `vedette rules sign`)", sig_path.display()),
    })?;
    Ok(signature::verify(pack, &sig, trusted)?)
}

fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) }
}

/// Compiles every pack, grouping rules by table; fails on the first bad rule.
pub async fn compile_packs(compiler: &Compiler, packs: &[Pack]) -> Result<BTreeMap<String, Vec<Arc<CompiledRule>>>> {
    let mut all: BTreeMap<String, Vec<Arc<CompiledRule>>> = BTreeMap::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    for pack in packs {
        for rule in &pack.rules {
            if let Some(other) = owners.insert(rule.id.clone(), pack.name.clone()) {
                return Err(vedette_pipelines::RuleError::InvalidRule {
                    rule: rule.id.clone(),
                    reason: format!("id is used by packs `{other}` and `{}`", pack.name),
                }
                .into());
            }
        }
        for (table, rules) in compiler.compile_pack(pack).await? {
            all.entry(table).or_default().extend(rules);
        }
    }
    Ok(all)
}

impl EngineHandle {
    /// Starts an engine from a validated config.
    pub async fn start(config: Config) -> Result<Self> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .map_err(EngineError::io(format!("creating data dir {}", data_dir.display())))?;
        let pki = PkiPaths::new(&data_dir);
        if config.ingest.ca_cert.is_none() && ensure_dev_pki(&data_dir)? {
            info!(dir = %data_dir.display(), "Created development CA, server and demo sensor certificates.");
        }
        let catalog = Arc::new(build_catalog(&config)?);
        let compiler = Compiler::new(Arc::clone(&catalog))?;
        let state_path = data_dir.join("state");
        let db = sled::open(&state_path)
            .map_err(|source| ActorError::Storage { path: state_path.display().to_string(), source })?;
        let packs = load_packs(&config)?;
        let mut compiled = compile_packs(&compiler, &packs).await?;
        // Only once every pack compiled: record what is applied (all or nothing).
        record_packs(&db, &packs)?;
        let rule_count: usize = compiled.values().map(Vec::len).sum();
        info!(packs = packs.len(), rules = rule_count, "Rules compiled.");

        let metrics = Metrics::new();
        let sessions = Arc::new(Sessions::default());
        let acker = Arc::new(Acker {
            ledger: Arc::new(SeqLedger::open(db.clone())?),
            sessions: Arc::clone(&sessions),
            metrics: metrics.clone(),
        });
        let supervisor_actor = Supervisor { name: "root".into(), budget: Budget::default(), metrics: metrics.clone() };
        let (supervisor, supervisor_join) = Actor::spawn(None, supervisor_actor, ())
            .await
            .map_err(|e| ActorError::Spawn { name: "supervisor".into(), reason: e.to_string() })?;

        let mut sinks = SinkSet::default();
        for sink in config.effective_sinks() {
            let slot = Slot::<SinkMsg>::default();
            let output = match &sink {
                SinkConfig::Stdout { .. } => Output::Stdout,
                SinkConfig::File { path, .. } => Output::File(resolve(&data_dir, path)),
            };
            let (name, m) = (sink.name().to_string(), metrics.clone());
            let spec = Child::new(format!("sink:{name}"), slot.clone(), move || {
                (SinkActor { name: name.clone(), output: output.clone(), metrics: m.clone() }, ())
            });
            add_child(&supervisor, Arc::new(spec)).await?;
            sinks.push(sink.name().to_string(), slot);
        }

        let limits = BatchLimits { rows: config.pipeline.batch_rows, linger: config.pipeline.batch_linger };
        let windows_tree =
            db.open_tree("windows").map_err(|source| ActorError::Storage { path: "windows".into(), source })?;
        let mut routes = HashMap::new();
        let mut workers = HashMap::new();
        let mut batchers = Vec::new();
        for table in catalog.tables() {
            let name = table.name().to_string();
            let rules = TableRules::new(&compiler, &name, compiled.remove(&name).unwrap_or_default());
            let restored = rules.restore(|key| windows_tree.get(key.as_bytes()).ok().flatten().map(|v| v.to_vec()))?;
            if restored > 0 {
                info!(table = %name, rules = restored, "Window state restored from checkpoint.");
            }
            let checkpoints = windows_tree.clone();
            let worker = Slot::<RuleWorkerMsg>::default();
            let (s, m) = (sinks.clone(), metrics.clone());
            let spec = Child::new(format!("rules:{name}"), worker.clone(), move || {
                let worker = RuleWorker {
                    rules: rules.clone(),
                    sinks: s.clone(),
                    metrics: m.clone(),
                    checkpoints: Some(checkpoints.clone()),
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
        let server = tls::server_config(&read(&ca)?, &read(&cert)?, &read(&key)?, config.ingest.idle_timeout)?;
        let endpoint = quinn::Endpoint::server(server, config.ingest.listen)
            .map_err(EngineError::io(format!("binding QUIC listener ingest.listen={}", config.ingest.listen)))?;
        let ingest_addr = endpoint.local_addr().map_err(EngineError::io("QUIC listener address"))?;
        let ingest = Arc::new(IngestContext {
            catalog: Arc::clone(&catalog),
            routes,
            acker,
            sessions,
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

        let readiness = readiness(listener_slot, &sinks, &workers, &batchers);
        let tcp = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .map_err(EngineError::io(format!("binding HTTP API api.listen={}", config.api.listen)))?;
        let api_addr = tcp.local_addr().map_err(EngineError::io("HTTP API address"))?;
        let (api_stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = crate::api::router(metrics.clone(), readiness);
        let api = tokio::spawn(async move {
            let serve = axum::serve(tcp, app).with_graceful_shutdown(async {
                let _ = stop_rx.await;
            });
            if let Err(e) = serve.await {
                warn!(error = %e, "HTTP API stopped.");
            }
        });
        info!(%ingest_addr, %api_addr, data_dir = %data_dir.display(), "vedette is running.");
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
            db,
            metrics,
        })
    }

    /// The current rule worker of `table` (tests use it to kill one).
    pub fn rule_worker(&self, table: &str) -> Option<ActorRef<RuleWorkerMsg>> {
        self.workers.get(table).and_then(Slot::get)
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
        self.ingest.sessions.close_all(close_code::SHUTTING_DOWN, "engine shutting down");
        self.endpoint.close(close_code::SHUTTING_DOWN.into(), b"engine shutting down");
        let _ = self.supervisor.call(SupervisorMsg::StopChildren, Some(Duration::from_secs(60))).await;
        self.supervisor.stop(None);
        let _ = self.supervisor_join.await;
        let _ = self.api_stop.send(());
        let _ = self.api.await;
        let _ = self.db.flush_async().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!("Shutdown complete.");
    }
}

fn readiness(
    listener: Slot<()>,
    sinks: &SinkSet,
    workers: &HashMap<String, Slot<RuleWorkerMsg>>,
    batchers: &[(String, Slot<BatcherMsg>)],
) -> crate::api::Readiness {
    let workers: Vec<(String, Slot<RuleWorkerMsg>)> = workers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let batchers = batchers.to_vec();
    let sinks = sinks.slots().to_vec();
    Arc::new(move || {
        let mut out = vec![("ingest".to_string(), listener.get().is_some())];
        out.extend(sinks.iter().map(|(n, s)| (format!("sink:{n}"), s.get().is_some())));
        out.extend(workers.iter().map(|(t, s)| (format!("rules:{t}"), s.get().is_some())));
        out.extend(batchers.iter().map(|(t, s)| (format!("batcher:{t}"), s.get().is_some())));
        out.sort();
        out
    })
}
