//! Re-reading the config of a running engine (SIGHUP, `vedette reload`,
//! `POST /api/v1/config/reload`): the file is read again with the environment overrides and
//! checked as `vedette validate` checks it; what a running engine can take (log level, API
//! rate limits, packs, trusted keys, reference table files, sinks) is applied all at once,
//! and a change of any other key refuses the whole reload, naming the keys.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tracing::{info, warn};
use vedette_config::{Config, ConfigError, Problem};

use crate::auth::ratelimit::RateLimiter;
use crate::error::{EngineError, Result};
use crate::ruleset::{ApplyReport, RuleManager};
use crate::sinkset::LiveSinks;

/// Sets the log filter (`log.level`); `Err` names what is wrong with the filter.
pub type LogLevelHook = Arc<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

/// Where the config comes from, as `serve` was started.
#[derive(Clone, Default)]
pub struct Source {
    /// The config file (`None`: the embedded default).
    pub path: Option<PathBuf>,
    /// `--data-dir`, which overrides the file's `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Applies a new `log.level`; without it a changed level is refused as restart-only.
    pub log_level: Option<LogLevelHook>,
}

/// What a reload changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Config keys whose value changed, sinks by name: `sinks[hook].url`, `sinks[new]` (empty:
    /// the files were read again, nothing else).
    pub changed: Vec<String>,
    /// The rule set applied (absent for an engine that follows its upstream's rules).
    pub rules: Option<ApplyReport>,
    /// Sinks added, removed and changed.
    pub sinks: SinkReport,
}

/// The sinks a reload added, removed (each delivers what its spool holds, then goes) and
/// changed (restarted with the new settings on the same spool).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct SinkReport {
    /// Sinks started.
    pub added: Vec<String>,
    /// Sinks that get no new alerts.
    pub removed: Vec<String>,
    /// Sinks restarted with new settings.
    pub changed: Vec<String>,
}

impl From<vedette_config::reload::SinkChanges> for SinkReport {
    fn from(c: vedette_config::reload::SinkChanges) -> Self {
        Self { added: c.added, removed: c.removed, changed: c.changed }
    }
}

/// Reloads the config of one running engine.
pub struct Reloader {
    source: std::sync::Mutex<Source>,
    running: tokio::sync::Mutex<Config>,
    manager: Arc<tokio::sync::Mutex<RuleManager>>,
    limiter: Arc<RateLimiter>,
    sinks: Option<Arc<LiveSinks>>,
}

fn refused(problems: Vec<Problem>) -> EngineError {
    EngineError::Config(ConfigError::Invalid(problems))
}

impl Reloader {
    /// For an engine started on `running` (paths resolved); without `sinks`, a changed sink
    /// is refused as restart-only.
    pub fn new(
        running: Config,
        manager: Arc<tokio::sync::Mutex<RuleManager>>,
        limiter: Arc<RateLimiter>,
        sinks: Option<Arc<LiveSinks>>,
    ) -> Self {
        Self {
            source: std::sync::Mutex::new(Source::default()),
            running: tokio::sync::Mutex::new(running),
            manager,
            limiter,
            sinks,
        }
    }

    /// Says where the config came from (`serve` does; without it a reload reads the embedded
    /// default).
    pub fn set_source(&self, source: Source) {
        *self.source.lock().expect("reload source lock is never poisoned") = source;
    }

    /// The API's rate limiter (shared with the router).
    pub fn limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.limiter)
    }

    /// Reads the config again and applies it; on any problem nothing changes and the error
    /// lists every problem (or every key that needs a restart).
    pub async fn reload(&self) -> Result<ReloadReport> {
        let source = self.source.lock().expect("reload source lock is never poisoned").clone();
        let result = self.reload_from(&source).await;
        match &result {
            Ok(r) => info!(changed = ?r.changed, "Config reloaded."),
            Err(e) => warn!(error = %e, "Config reload refused; the running config stays."),
        }
        result
    }

    async fn reload_from(&self, source: &Source) -> Result<ReloadReport> {
        let text = match &source.path {
            Some(p) => std::fs::read_to_string(p).map_err(EngineError::io(format!("reading {}", p.display())))?,
            None => vedette_config::EMBEDDED_DEFAULT.to_string(),
        };
        let (new, mut problems) = Config::parse_all(&text, std::env::vars());
        let Some(mut new) = new else { return Err(refused(problems)) };
        if let Some(d) = &source.data_dir {
            new.data_dir = d.clone();
        }
        new.resolve_paths();
        // A pack that does not apply refuses the reload (the running set simply stays).
        problems.extend(crate::preflight::check_running(&new).await.problems);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&new.log.level) {
            problems.push(Problem { path: "log.level".into(), message: e.to_string() });
        }
        if !problems.is_empty() {
            return Err(refused(problems));
        }
        let mut running = self.running.lock().await;
        let mut restart = vedette_config::reload::restart_only_changes(&running, &new);
        let changed = vedette_config::reload::changes(&running, &new);
        if source.log_level.is_none() && changed.iter().any(|k| k == "log.level") {
            restart.push("log.level".into());
        }
        if self.sinks.is_none() {
            restart.extend(changed.iter().filter(|k| k.starts_with("sinks[")).cloned());
        }
        if !restart.is_empty() {
            return Err(refused(
                restart
                    .into_iter()
                    .map(|path| Problem {
                        path,
                        message: "changes only with a restart (nothing was applied; the running config stays)".into(),
                    })
                    .collect(),
            ));
        }
        // Everything that can fail first (connectors of new and changed sinks built, reference
        // files parsed, packs prepared); then what cannot.
        let sinks = match &self.sinks {
            Some(live) => Some((live, live.prepare(&running, &new).map_err(refused)?)),
            None => None,
        };
        let rules = self.manager.lock().await.reload_config(new.clone()).await?;
        let mut report = SinkReport::default();
        if let Some((live, prepared)) = sinks {
            report = prepared.changes.clone().into();
            live.apply(prepared).await?;
        }
        self.limiter.set(new.api.rate_limit_per_sec, new.api.rate_limit_burst);
        if let Some(set) = &source.log_level
            && running.log.level != new.log.level
            && let Err(e) = set(&new.log.level)
        {
            // Checked above; a filter the subscriber then refuses is only logged.
            warn!(error = %e, "The new log level was not applied.");
        }
        *running = new;
        Ok(ReloadReport { changed, rules, sinks: report })
    }
}
