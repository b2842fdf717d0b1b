//! The applied rule set: loading and verifying packs, compiling them, the pack registry, and
//! hot apply (SIGHUP, `vedette rules apply`, enabling and disabling rules at runtime).
//!
//! An apply is all or nothing: every pack of the directory is read, its signature checked,
//! every rule validated and planned (unchanged rules reuse their plan), rule ids checked for
//! conflicts and versions against the registry — only then is anything swapped. Each table's
//! worker switches between two batches, so every batch is evaluated by exactly one rule set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info, warn};
use vedette_actors::ActorError;
use vedette_actors::rules::{RuleWorkerMsg, SharedRules, current};
use vedette_actors::supervisor::Slot;
use vedette_config::Config;
use vedette_pipelines::RuleError;
use vedette_pipelines::compile::{CompiledRule, Compiler, TableRules};
use vedette_pipelines::rule::Pack;
use vedette_pipelines::signature::{self, PublicKey};

use crate::error::{EngineError, Result};
use crate::reference::RefStatus;
use vedette_schemas::fleet::{RuleSet, SyncedPack};

/// A pack as loaded, with the text it came from (none for the built-in pack).
#[derive(Debug, Clone)]
pub struct LoadedPack {
    /// The parsed pack.
    pub pack: Pack,
    /// Its YAML text, kept in the registry so a restart can come back with it.
    pub source: Option<String>,
    /// Its signature file's text, if it has one (sent to edges that follow this engine).
    pub signature: Option<String>,
}

/// Loads the built-in pack and every `*.yaml` pack of `packs_dir`, checking signatures.
pub fn load_packs(config: &Config) -> Result<Vec<LoadedPack>> {
    let mut packs = Vec::new();
    if config.rules.builtin {
        packs.push(LoadedPack { pack: Pack::builtin(), source: None, signature: None });
    }
    let Some(dir) = &config.rules.packs_dir else { return Ok(packs) };
    let dir = resolve(&config.data_dir, dir);
    let trusted = trusted_keys(config)?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(EngineError::io(format!("rules.packs_dir {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for f in files {
        let (pack, text) = read_pack_source(&f)?;
        match check_signature(&f, &pack, &trusted) {
            Ok(key) => info!(pack = %pack.name, version = pack.version, key = %key, "Pack signature verified."),
            Err(e) if config.rules.allow_unsigned => {
                warn!(pack = %pack.name, error = %e, "Loading a pack without a valid signature (rules.allow_unsigned).");
            }
            Err(e) => return Err(e),
        }
        let signature = std::fs::read_to_string(signature_path(&f)).ok();
        packs.push(LoadedPack { pack, source: Some(text), signature });
    }
    Ok(packs)
}

/// The public keys of `rules.trusted_keys`.
pub fn trusted_keys(config: &Config) -> Result<Vec<PublicKey>> {
    config
        .rules
        .trusted_keys
        .iter()
        .map(|p| {
            let p = resolve(&config.data_dir, p);
            let text =
                std::fs::read_to_string(&p).map_err(EngineError::io(format!("rules.trusted_keys {}", p.display())))?;
            Ok(PublicKey::from_text(&p.display().to_string(), &text)?)
        })
        .collect()
}

/// What the registry remembers of a pack.
#[derive(serde::Serialize, serde::Deserialize)]
struct AppliedPack {
    version: u32,
    sha256: String,
    /// In the applied set now (a removed pack keeps its version record).
    #[serde(default = "yes")]
    active: bool,
    /// YAML text (none for the built-in pack).
    #[serde(default)]
    source: Option<String>,
    /// Signature file text, if any.
    #[serde(default)]
    signature: Option<String>,
}

fn yes() -> bool {
    true
}

fn storage(tree: &str) -> impl Fn(sled::Error) -> EngineError + '_ {
    move |source| ActorError::Storage { path: tree.into(), source }.into()
}

/// What recording `packs` as the applied set would write to the registry (sled tree `packs`):
/// refused (nothing written) unless `(name, version)` stays immutable and versions only go
/// up against the packs applied before. Written by [`write_pack_records`] once installed.
fn pack_records(db: &sled::Db, packs: &[LoadedPack]) -> Result<Vec<(String, AppliedPack)>> {
    use sha2::Digest;
    let tree = db.open_tree("packs").map_err(storage("packs"))?;
    let refuse = |pack: &Pack, reason: String| -> EngineError {
        RuleError::InvalidRule { rule: pack.name.clone(), reason }.into()
    };
    let mut updates = Vec::new();
    for LoadedPack { pack, source, signature } in packs {
        let sha256 = hex::encode(sha2::Sha256::digest(signature::canonical_bytes(pack)));
        let before = tree
            .get(pack.name.as_bytes())
            .map_err(storage("packs"))?
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
        let applied = AppliedPack {
            version: pack.version,
            sha256,
            active: true,
            source: source.clone(),
            signature: signature.clone(),
        };
        updates.push((pack.name.clone(), applied));
    }
    let names: HashSet<&str> = packs.iter().map(|p| p.pack.name.as_str()).collect();
    for entry in tree.iter() {
        let (k, v) = entry.map_err(storage("packs"))?;
        let name = String::from_utf8_lossy(&k).to_string();
        if names.contains(name.as_str()) {
            continue;
        }
        if let Ok(mut old) = serde_json::from_slice::<AppliedPack>(&v)
            && old.active
        {
            old.active = false;
            updates.push((name, old));
        }
    }
    Ok(updates)
}

/// Writes pack records in one batch (all or nothing) and flushes.
fn write_pack_records(db: &sled::Db, updates: &[(String, AppliedPack)]) -> Result<()> {
    let tree = db.open_tree("packs").map_err(storage("packs"))?;
    let mut batch = sled::Batch::default();
    for (name, applied) in updates {
        batch.insert(name.as_bytes(), serde_json::to_vec(applied).expect("serializes"));
    }
    tree.apply_batch(batch).map_err(storage("packs"))?;
    tree.flush().map_err(storage("packs"))?;
    Ok(())
}

/// The applied set recorded in the registry (what the engine last ran).
fn recorded_packs(db: &sled::Db) -> Result<Vec<LoadedPack>> {
    let tree = db.open_tree("packs").map_err(storage("packs"))?;
    let mut packs = Vec::new();
    for entry in tree.iter() {
        let (k, v) = entry.map_err(storage("packs"))?;
        let Ok(applied) = serde_json::from_slice::<AppliedPack>(&v) else { continue };
        if !applied.active {
            continue;
        }
        let pack = match &applied.source {
            Some(text) => Pack::from_yaml(&format!("registry:{}", String::from_utf8_lossy(&k)), text)?,
            None => Pack::builtin(),
        };
        packs.push(LoadedPack { pack, source: applied.source, signature: applied.signature });
    }
    Ok(packs)
}

/// Reads and parses a pack file.
pub fn read_pack(path: &Path) -> Result<Pack> {
    Ok(read_pack_source(path)?.0)
}

/// Reads and parses a pack file; returns the pack and its text.
fn read_pack_source(path: &Path) -> Result<(Pack, String)> {
    let text = std::fs::read_to_string(path).map_err(EngineError::io(format!("reading {}", path.display())))?;
    Ok((Pack::from_yaml(&path.display().to_string(), &text)?, text))
}

/// The signature file of a pack: its name plus `.sig` (`acme.yaml` → `acme.yaml.sig`).
pub fn signature_path(pack: &Path) -> PathBuf {
    let mut s = pack.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Verifies the detached signature beside a pack file; returns the signing key id.
pub fn check_signature(path: &Path, pack: &Pack, trusted: &[PublicKey]) -> Result<String> {
    let sig_path = signature_path(path);
    let sig = std::fs::read_to_string(&sig_path).map_err(|_| RuleError::Signature {
        pack: pack.name.clone(),
        reason: format!("unsigned: {} not found (sign with `vedette rules sign`)", sig_path.display()),
    })?;
    Ok(signature::verify(pack, &sig, trusted)?)
}

/// `p`, relative to the data dir unless absolute.
pub fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { data_dir.join(p) }
}

/// Compiles every rule of every pack (disabled ones too); fails on the first bad rule or on
/// a rule id used by two packs.
pub async fn compile_packs(compiler: &Compiler, packs: &[Pack]) -> Result<Vec<Arc<CompiledRule>>> {
    let mut all = Vec::new();
    let mut owners: HashMap<String, String> = HashMap::new();
    for pack in packs {
        for rule in &pack.rules {
            if let Some(other) = owners.insert(rule.id.clone(), pack.name.clone()) {
                return Err(RuleError::InvalidRule {
                    rule: rule.id.clone(),
                    reason: format!("id is used by packs `{other}` and `{}`", pack.name),
                }
                .into());
            }
        }
        for (_, rules) in compiler.compile_pack(pack).await? {
            all.extend(rules);
        }
    }
    Ok(all)
}

/// A rule's compile error, pointed at its place in its pack's text when the text is known
/// (`pack `acme` line 14, column 21: rule `acme.x`: …`).
fn locate(e: EngineError, loaded: &[LoadedPack]) -> EngineError {
    let EngineError::Rules(re) = e else { return e };
    let Some(id) = re.rule().map(str::to_string) else { return EngineError::Rules(re) };
    match loaded.iter().find(|l| l.pack.rules.iter().any(|r| r.id == id)) {
        Some(LoadedPack { pack, source: Some(text), .. }) => {
            EngineError::Rules(vedette_pipelines::pack_check::locate(re, pack, text))
        }
        _ => EngineError::Rules(re),
    }
}

/// `(name, version)` of each pack, by name.
/// Loaded packs, their compiled rules, and the registry records to write once installed.
type Prepared = (Vec<LoadedPack>, Vec<Arc<CompiledRule>>, Vec<(String, AppliedPack)>);

/// The rule set edges receive for `loaded`.
fn rule_set(loaded: &[LoadedPack]) -> RuleSet {
    let packs = loaded
        .iter()
        .map(|l| SyncedPack {
            name: l.pack.name.clone(),
            version: l.pack.version,
            yaml: l.source.clone(),
            signature: l.signature.clone(),
        })
        .collect();
    RuleSet { packs }
}

fn names_versions(packs: &[Pack]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = packs.iter().map(|p| (p.name.clone(), p.version)).collect();
    out.sort();
    out
}

/// One table's running rule set and its worker.
#[derive(Clone)]
pub struct TableSlot {
    /// The set the worker (and its successors after a restart) runs.
    pub shared: SharedRules,
    /// The worker.
    pub worker: Slot<RuleWorkerMsg>,
}

/// A rule as the API and `vedette rules list` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RuleStatus {
    /// Rule id.
    pub id: String,
    /// Title.
    #[serde(default)]
    pub name: String,
    /// Pack.
    pub pack: String,
    /// Rule version.
    pub version: u32,
    /// Table it reads.
    pub table: String,
    /// Severity.
    pub severity: String,
    /// Running now.
    pub enabled: bool,
    /// Whether an operator override (`vedette rules enable|disable`) decides `enabled`.
    pub overridden: bool,
    /// Windowed rule.
    pub windowed: bool,
    /// Rows that arrived after their window closed.
    pub late_rows: u64,
    /// Batches the rule was evaluated on since the engine started.
    #[serde(default)]
    pub evaluations: u64,
    /// Alerts it produced since the engine started.
    #[serde(default)]
    pub alerts: u64,
    /// Evaluation errors since the engine started.
    #[serde(default)]
    pub errors: u64,
    /// Open window keys held in memory.
    pub open_windows: usize,
    /// Per sensor: rows stamped further ahead of the engine's clock than
    /// `rules.max_clock_ahead` (evaluated, but they never advanced the watermark).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skewed_rows: BTreeMap<String, u64>,
}

/// What `GET /api/v1/rules` returns.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct RulesStatus {
    /// Applied packs: name and version (`["name", 3]`), by name.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub packs: Vec<(String, u32)>,
    /// Every applied rule.
    pub rules: Vec<RuleStatus>,
    /// Why the last apply was refused (the previous set kept running), if it was.
    pub last_error: Option<String>,
}

/// What an apply changed.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ApplyReport {
    /// Applied packs: name and version (`["name", 3]`).
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub packs: Vec<(String, u32)>,
    /// Rules running after the apply.
    pub active_rules: usize,
    /// Rules planned by this apply (unchanged rules reuse their plan).
    pub planned: usize,
}

/// One reference table's definition and registry, detached from the manager.
pub struct RefTarget {
    index: usize,
    config: Config,
    refs: Arc<vedette_pipelines::reference::RefTables>,
}

impl RefTarget {
    /// Reads the table's file and swaps its rows in.
    pub fn load(&self) -> Result<usize> {
        crate::reference::load(&self.config, &self.refs, &self.config.reference_tables[self.index])
    }

    /// Checks `bytes`, writes them over the table's file and swaps the rows in (blocking: run
    /// it off the async runtime for large uploads).
    pub fn upload(&self, bytes: &[u8]) -> Result<usize> {
        crate::reference::upload(&self.config, &self.refs, &self.config.reference_tables[self.index], bytes)
    }
}

/// Owner of the applied rule set.
pub struct RuleManager {
    config: Config,
    compiler: Compiler,
    db: sled::Db,
    windows: sled::Tree,
    overrides: sled::Tree,
    tables: BTreeMap<String, TableSlot>,
    packs: Vec<(String, u32)>,
    compiled: Vec<Arc<CompiledRule>>,
    last_error: Option<String>,
    metrics: vedette_actors::metrics::Metrics,
    references: Vec<RefStatus>,
    /// The applied set as sent to edges that follow this engine (updated on every apply).
    rule_set: tokio::sync::watch::Sender<Arc<RuleSet>>,
}

impl RuleManager {
    /// A compiler for trying rules out (validation, dry runs): the running engine's tables and
    /// reference tables (their current rows), but its own plan cache, so nothing it plans
    /// touches the running rules.
    pub fn sandbox_compiler(&self) -> Result<Compiler> {
        Ok(Compiler::with_references(Arc::clone(self.compiler.catalog()), Arc::clone(self.compiler.references()))?)
    }

    /// Loads the rule set at start: the packs directory if it applies cleanly; otherwise the
    /// set applied last time (the error is logged and reported), or, on a first start, the
    /// error. Builds one rule set per catalog table (workers are attached later).
    pub async fn start(
        config: Config,
        compiler: Compiler,
        db: sled::Db,
        tables: &[String],
        metrics: vedette_actors::metrics::Metrics,
    ) -> Result<Self> {
        // Reference tables load before any rule runs: a rule must never see an empty IOC list
        // because its file was not read yet.
        let mut references = crate::reference::initial_status(&config, compiler.references());
        for (def, status) in config.reference_tables.iter().zip(&mut references) {
            status.rows = crate::reference::load(&config, compiler.references(), def)?;
            status.loaded_at = Some(chrono::Utc::now().to_rfc3339());
            info!(table = %def.name, rows = status.rows, "Reference table loaded.");
        }
        let windows = db.open_tree("windows").map_err(storage("windows"))?;
        let overrides = db.open_tree("rule_overrides").map_err(storage("rule_overrides"))?;
        let mut last_error = None;
        let prepared = if config.rules.follow_upstream {
            // The rules come from the upstream: start with the set it sent last time (or the
            // built-in pack before the first sync).
            let mut recorded = recorded_packs(&db)?;
            if recorded.is_empty() && config.rules.builtin {
                recorded.push(LoadedPack { pack: Pack::builtin(), source: None, signature: None });
            }
            Self::prepare_loaded(&compiler, &db, recorded).await
        } else {
            Self::prepare(&config, &compiler, &db).await
        };
        let (loaded, compiled, records) = match prepared {
            Ok(ok) => ok,
            Err(e) => {
                let recorded = recorded_packs(&db)?;
                if recorded.is_empty() {
                    return Err(e);
                }
                error!(error = %e, "The packs directory does not apply; starting with the rule set applied last time.");
                metrics.rules_apply.with_label_values(&["refused"]).inc();
                last_error = Some(e.to_string());
                let packs: Vec<Pack> = recorded.iter().map(|p| p.pack.clone()).collect();
                let compiled = compile_packs(&compiler, &packs).await?;
                (recorded, compiled, Vec::new())
            }
        };
        let packs: Vec<Pack> = loaded.iter().map(|l| l.pack.clone()).collect();
        let mut slots = BTreeMap::new();
        for t in tables {
            let mut rules = {
                let (ahead, behind) = config.rules.clock_skew();
                TableRules::new(&compiler, t, Vec::new()).with_clock_skew(ahead, behind)
            };
            if config.rules.eval_threads > 0 {
                rules = rules.with_parallelism(config.rules.eval_threads);
            }
            slots.insert(
                t.clone(),
                TableSlot { shared: Arc::new(std::sync::RwLock::new(rules)), worker: Slot::default() },
            );
        }
        let manager = Self {
            config,
            compiler,
            db,
            windows,
            overrides,
            tables: slots,
            packs: names_versions(&packs),
            compiled,
            last_error,
            metrics,
            references,
            rule_set: tokio::sync::watch::Sender::new(Arc::new(rule_set(&loaded))),
        };
        manager.install().await?;
        // Recorded once running: the registry never names a set that is not installed.
        write_pack_records(&manager.db, &records)?;
        Ok(manager)
    }

    /// Reads, verifies, compiles and records the packs directory; nothing is swapped.
    async fn prepare(config: &Config, compiler: &Compiler, db: &sled::Db) -> Result<Prepared> {
        Self::prepare_loaded(compiler, db, load_packs(config)?).await
    }

    /// Compiles and records already loaded (and verified) packs; nothing is swapped.
    async fn prepare_loaded(compiler: &Compiler, db: &sled::Db, loaded: Vec<LoadedPack>) -> Result<Prepared> {
        let packs: Vec<Pack> = loaded.iter().map(|l| l.pack.clone()).collect();
        let compiled = compile_packs(compiler, &packs).await.map_err(|e| locate(e, &loaded))?;
        let records = pack_records(db, &loaded)?;
        Ok((loaded, compiled, records))
    }

    /// The applied rule set as edges following this engine receive it; changes on every apply.
    pub fn rule_sets(&self) -> tokio::sync::watch::Receiver<Arc<RuleSet>> {
        self.rule_set.subscribe()
    }

    /// Applies the rule set an upstream sent (`rules.follow_upstream`): every pack's signature
    /// is checked against this engine's own trusted keys (unless `rules.allow_unsigned`), then
    /// the set is applied atomically like a local apply.
    pub async fn apply_synced(&mut self, set: &RuleSet) -> Result<ApplyReport> {
        let loaded = match crate::rulesync::verify(&self.config, set) {
            Ok(l) => l,
            Err(e) => return Err(self.refused(e)),
        };
        let planned_before = self.compiler.plans_built();
        let prepared = Self::prepare_loaded(&self.compiler, &self.db, loaded).await;
        self.install_prepared(prepared, planned_before).await
    }

    /// The table slots (the engine attaches a worker to each).
    pub fn tables(&self) -> &BTreeMap<String, TableSlot> {
        &self.tables
    }

    /// Re-reads the packs directory and swaps the new set in, atomically: on any error the
    /// running set is unchanged and the error is returned (and kept for the status).
    pub async fn apply(&mut self) -> Result<ApplyReport> {
        if self.config.rules.follow_upstream {
            let e = EngineError::Refused(
                "this engine's rules follow its upstream (rules.follow_upstream): apply the packs on the upstream"
                    .into(),
            );
            return Err(self.refused(e));
        }
        let planned_before = self.compiler.plans_built();
        let prepared = Self::prepare(&self.config, &self.compiler, &self.db).await;
        self.install_prepared(prepared, planned_before).await
    }

    /// Installs a prepared set (or reports why it was not prepared); `planned_before` is the
    /// compiler's plan count before preparing it.
    async fn install_prepared(&mut self, prepared: Result<Prepared>, planned_before: usize) -> Result<ApplyReport> {
        match prepared {
            Ok((loaded, compiled, records)) => {
                let packs: Vec<Pack> = loaded.iter().map(|l| l.pack.clone()).collect();
                let previous = std::mem::replace(&mut self.compiled, compiled);
                if let Err(e) = self.install().await {
                    self.compiled = previous;
                    return Err(self.refused(e));
                }
                // Recorded only once installed; if recording fails, the previous set goes
                // back, so the registry and the running rules never disagree.
                if let Err(e) = write_pack_records(&self.db, &records) {
                    let failed = std::mem::replace(&mut self.compiled, previous);
                    if let Err(back) = self.install().await {
                        self.compiled = failed;
                        error!(error = %back, "Restoring the previous rule set failed; the new one stays installed.");
                    }
                    return Err(self.refused(e));
                }
                self.packs = names_versions(&packs);
                self.rule_set.send_replace(Arc::new(rule_set(&loaded)));
                self.last_error = None;
                let keep: HashSet<String> = self.compiled.iter().map(|r| r.fingerprint.clone()).collect();
                self.compiler.retain_plans(&keep);
                self.metrics.rules_apply.with_label_values(&["applied"]).inc();
                let report = ApplyReport {
                    packs: self.packs.clone(),
                    active_rules: self.active().count(),
                    planned: self.compiler.plans_built() - planned_before,
                };
                info!(packs = ?report.packs, rules = report.active_rules, planned = report.planned, "Rule set applied.");
                Ok(report)
            }
            Err(e) => Err(self.refused(e)),
        }
    }

    fn refused(&mut self, e: EngineError) -> EngineError {
        error!(error = %e, "Rule apply refused; the running rule set is unchanged.");
        self.metrics.rules_apply.with_label_values(&["refused"]).inc();
        self.last_error = Some(e.to_string());
        e
    }

    /// Reloads one reference table from its file; the next batch on sees the new rows, and
    /// nothing is re-evaluated. On error the rows in use stay.
    pub fn reload_reference(&mut self, name: &str) -> Result<RefStatus> {
        let target = self.reference_target(name)?;
        let result = target.load();
        self.record_reference(&target, "reload", result)
    }

    /// What a reference change needs, so the caller can parse and write a large upload
    /// without holding the manager (see [`RefTarget::upload`]), then report with
    /// [`RuleManager::record_reference`].
    pub fn reference_target(&self, name: &str) -> Result<RefTarget> {
        let Some(index) = self.config.reference_tables.iter().position(|r| r.name == name) else {
            // The registry declares the config's tables; its error names them.
            let err = self.compiler.references().schema(name).err().unwrap_or_else(|| RuleError::Reference {
                table: name.into(),
                reason: "no such reference table".into(),
            });
            return Err(err.into());
        };
        Ok(RefTarget { index, config: self.config.clone(), refs: Arc::clone(self.compiler.references()) })
    }

    /// Records the outcome of a reference change made through `target` (status, metrics, log).
    pub fn record_reference(&mut self, target: &RefTarget, how: &str, result: Result<usize>) -> Result<RefStatus> {
        let name = target.config.reference_tables[target.index].name.clone();
        let name = name.as_str();
        match result {
            Ok(rows) => {
                let s = &mut self.references[target.index];
                s.rows = rows;
                s.loaded_at = Some(chrono::Utc::now().to_rfc3339());
                s.last_error = None;
                self.metrics.reference_reloads.with_label_values(&[name, "loaded"]).inc();
                info!(table = name, rows, how, "Reference table replaced.");
                Ok(s.clone())
            }
            Err(e) => {
                self.references[target.index].last_error = Some(e.to_string());
                self.metrics.reference_reloads.with_label_values(&[name, "refused"]).inc();
                error!(table = name, how, error = %e, "Reference table change refused; the previous rows stay in use.");
                Err(e)
            }
        }
    }

    /// Takes a re-read config (`vedette reload`, SIGHUP): every reference table file of `new`
    /// is read and parsed and the packs of `new` are prepared before anything changes; then
    /// the new rule set is swapped in and the tables' rows replaced. On any error nothing
    /// changed (the running config, rules and rows stay). The caller checked that `new`
    /// differs from the running config only in keys a reload may change.
    pub async fn reload_config(&mut self, new: Config) -> Result<Option<ApplyReport>> {
        let refs = Arc::clone(self.compiler.references());
        let mut parsed = Vec::new();
        for def in &new.reference_tables {
            parsed.push(crate::reference::read(&new, &refs, def)?);
        }
        let old = std::mem::replace(&mut self.config, new);
        let report = if self.config.rules.follow_upstream {
            None
        } else {
            match self.apply().await {
                Ok(r) => Some(r),
                Err(e) => {
                    self.config = old;
                    return Err(e);
                }
            }
        };
        for (index, batches) in parsed.into_iter().enumerate() {
            let target = RefTarget { index, config: self.config.clone(), refs: Arc::clone(&refs) };
            let name = self.config.reference_tables[index].name.clone();
            let result = refs.replace(&name, batches).map(|()| refs.row_count(&name)).map_err(EngineError::from);
            if result.is_ok() {
                self.references[index].path = self.config.reference_tables[index].path.display().to_string();
            }
            let _ = self.record_reference(&target, "config reload", result);
        }
        Ok(report)
    }

    /// Reference tables and their state.
    pub fn references(&self) -> Vec<RefStatus> {
        self.references.clone()
    }

    /// Enables or disables one rule at runtime (persisted: a restart keeps the choice).
    pub async fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<()> {
        if !self.compiled.iter().any(|r| r.meta.id == id) {
            return Err(EngineError::UnknownRule { id: id.into() });
        }
        let before = self.overrides.get(id.as_bytes()).map_err(storage("rule_overrides"))?;
        self.overrides
            .insert(id.as_bytes(), if enabled { &b"1"[..] } else { &b"0"[..] })
            .map_err(storage("rule_overrides"))?;
        self.overrides.flush_async().await.map_err(storage("rule_overrides"))?;
        if let Err(e) = self.install().await {
            // Put the override back as it was: the running set did not change.
            let _ = match before {
                Some(v) => self.overrides.insert(id.as_bytes(), v).map(|_| ()),
                None => self.overrides.remove(id.as_bytes()).map(|_| ()),
            };
            return Err(e);
        }
        info!(rule = id, enabled, "Rule {}.", if enabled { "enabled" } else { "disabled" });
        Ok(())
    }

    fn override_of(&self, id: &str) -> Option<bool> {
        self.overrides.get(id.as_bytes()).ok().flatten().map(|v| v.as_ref() == b"1")
    }

    fn is_active(&self, rule: &CompiledRule) -> bool {
        self.override_of(&rule.meta.id).unwrap_or(rule.enabled_in_pack)
    }

    fn active(&self) -> impl Iterator<Item = &Arc<CompiledRule>> {
        self.compiled.iter().filter(|r| self.is_active(r))
    }

    /// Builds every table's new set (fallible), then swaps them in (infallible), each worker
    /// between two batches.
    async fn install(&self) -> Result<()> {
        let load = |key: &str| vedette_actors::windows::load(&self.windows, key);
        let mut by_table: HashMap<&str, Vec<Arc<CompiledRule>>> = HashMap::new();
        for rule in self.active() {
            by_table.entry(rule.meta.table.as_str()).or_default().push(Arc::clone(rule));
        }
        let mut next = Vec::new();
        for (table, slot) in &self.tables {
            let rules = by_table.remove(table.as_str()).unwrap_or_default();
            next.push((slot.clone(), current(&slot.shared).with_rules(rules, load)?));
        }
        for (slot, rules) in next {
            *slot.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner) = rules.clone();
            let swapped = match slot.worker.get() {
                Some(w) => w.call(RuleWorkerMsg::Swap, Some(Duration::from_secs(30))).await.is_ok(),
                None => false,
            };
            if !swapped {
                // No worker is running the old set (restarting, or not started yet).
                for key in rules.prune_windows() {
                    vedette_actors::windows::remove(&self.windows, &key);
                }
            }
        }
        Ok(())
    }

    /// Every applied rule with its state.
    pub fn status(&self) -> RulesStatus {
        let mut late = HashMap::new();
        let mut open = HashMap::new();
        let mut skewed = HashMap::new();
        for slot in self.tables.values() {
            let rules = current(&slot.shared);
            late.extend(rules.late_rows());
            open.extend(rules.open_windows());
            skewed.extend(rules.skewed_rows());
        }
        let rules = self
            .compiled
            .iter()
            .map(|r| RuleStatus {
                id: r.meta.id.clone(),
                name: r.meta.name.clone(),
                evaluations: self.metrics.rule_eval.with_label_values(&[r.meta.id.as_str()]).get_sample_count(),
                alerts: self.metrics.alerts.with_label_values(&[r.meta.id.as_str(), r.meta.severity.as_str()]).get(),
                errors: self.metrics.rule_errors.with_label_values(&[r.meta.id.as_str()]).get(),
                pack: r.meta.pack.clone(),
                version: r.meta.version,
                table: r.meta.table.clone(),
                severity: r.meta.severity.as_str().into(),
                enabled: self.is_active(r),
                overridden: self.override_of(&r.meta.id).is_some(),
                windowed: r.is_windowed(),
                late_rows: late.get(&r.meta.id).copied().unwrap_or(0),
                open_windows: open.get(&r.meta.id).copied().unwrap_or(0),
                skewed_rows: skewed
                    .get(&r.meta.id)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unwrap_or_default(),
            })
            .collect();
        RulesStatus { packs: self.packs.clone(), rules, last_error: self.last_error.clone() }
    }
}
