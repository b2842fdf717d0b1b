//! How the reference sensor obeys the engine: its observe level and configuration document,
//! kept in a state file so they survive a sensor restart, and the filter they put on what is
//! sent.

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use vedette_schemas::fleet::{Action, Command, CommandResult, ObserveLevel, SendPolicy, SensorSettings};

use super::Event;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    level: ObserveLevel,
    settings: Option<SensorSettings>,
}

/// The sensor's level and configuration.
pub struct Controls {
    level: watch::Sender<ObserveLevel>,
    policy: Mutex<SendPolicy>,
    state_file: Option<PathBuf>,
    /// Results of the last commands, so one delivered again (after a reconnect) is answered
    /// again instead of applied twice.
    answered: Mutex<std::collections::VecDeque<CommandResult>>,
}

/// Results remembered.
const ANSWERS_KEPT: usize = 64;

impl Default for Controls {
    fn default() -> Self {
        Self::load(None)
    }
}

/// What applying a command changed.
#[derive(Debug, PartialEq)]
pub struct Applied {
    /// The answer to send.
    pub result: CommandResult,
    /// The heartbeat interval to use from now on, if the config set one.
    pub heartbeat_ms: Option<u64>,
}

impl Controls {
    /// Loads the level and config from `state_file` (defaults when absent or unreadable).
    pub fn load(state_file: Option<PathBuf>) -> Self {
        let persisted: Persisted = state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let (level, _) = watch::channel(persisted.level);
        Self {
            level,
            policy: Mutex::new(SendPolicy::new(persisted.level, persisted.settings)),
            state_file,
            answered: Mutex::default(),
        }
    }

    /// The level in force.
    pub fn level(&self) -> ObserveLevel {
        *self.level.borrow()
    }

    /// Follows level changes (the `/proc` watcher does).
    pub fn subscribe(&self) -> watch::Receiver<ObserveLevel> {
        self.level.subscribe()
    }

    /// The applied configuration's version.
    pub fn config_version(&self) -> Option<u64> {
        self.lock().settings.as_ref().map(|s| s.version)
    }

    /// The heartbeat interval the applied configuration asks for.
    pub fn heartbeat_ms(&self) -> Option<u64> {
        self.lock().settings.as_ref().and_then(|s| s.heartbeat_interval_ms)
    }

    /// Whether an event is sent under the current configuration.
    pub fn admit(&self, ev: &Event) -> bool {
        let exe = (ev.table == "process_events").then(|| ev.row.get("exe").and_then(|e| e.as_str())).flatten();
        self.lock().admit(&ev.table, exe)
    }

    /// The result already given to command `id`, if any.
    pub fn recall(&self, id: &str) -> Option<CommandResult> {
        let a = self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        a.iter().find(|r| r.id == id).cloned()
    }

    /// Remembers a result given.
    pub fn remember(&self, result: &CommandResult) {
        let mut a = self.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.len() >= ANSWERS_KEPT {
            a.pop_front();
        }
        a.push_back(result.clone());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendPolicy> {
        self.policy.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies a `set_level` or `apply_config` command (renewal is the session's job).
    pub fn apply(&self, cmd: &Command) -> Applied {
        let answer = |ok: bool, message: String| CommandResult { id: cmd.id.clone(), ok, message };
        let mut heartbeat_ms = None;
        let result = match &cmd.action {
            Action::SetLevel { level } => {
                self.lock().level = *level;
                self.level.send_replace(*level);
                answer(true, format!("observe level is now {level}"))
            }
            Action::ApplyConfig { config } => match config.validate() {
                Err(e) => answer(false, e),
                Ok(()) => {
                    let mut p = self.lock();
                    match p.settings.as_ref().map(|s| s.version) {
                        Some(v) if v > config.version => {
                            answer(false, format!("config version {} is older than the applied {v}", config.version))
                        }
                        _ => {
                            let level = p.level;
                            *p = SendPolicy::new(level, Some(config.clone()));
                            heartbeat_ms = config.heartbeat_interval_ms;
                            answer(true, format!("config version {} applied", config.version))
                        }
                    }
                }
            },
            Action::RenewCertificate {} => answer(false, "renewal is handled by the session".into()),
        };
        if result.ok
            && let Err(e) = self.save()
        {
            return Applied {
                result: answer(false, format!("applied, but saving the sensor state failed: {e}")),
                heartbeat_ms,
            };
        }
        Applied { result, heartbeat_ms }
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let p = Persisted { level: self.level(), settings: self.lock().settings.clone() };
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, serde_json::to_vec_pretty(&p).expect("state serializes"))?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn level_and_config_apply_persist_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        let c = Controls::load(Some(file.clone()));
        assert_eq!(c.level(), ObserveLevel::Standard);
        let rx = c.subscribe();
        let set = Command { id: "1".into(), action: Action::SetLevel { level: ObserveLevel::Minimal } };
        assert!(c.apply(&set).result.ok);
        assert!(rx.has_changed().unwrap());
        let config = SensorSettings {
            version: 3,
            tables: Some(vec!["auth_events".into()]),
            heartbeat_interval_ms: Some(2000),
            ..Default::default()
        };
        let apply = Command { id: "2".into(), action: Action::ApplyConfig { config: config.clone() } };
        assert_eq!(c.apply(&apply).heartbeat_ms, Some(2000));
        let old = SensorSettings { version: 2, ..config };
        let stale = c.apply(&Command { id: "3".into(), action: Action::ApplyConfig { config: old } });
        assert!(!stale.result.ok && stale.result.message.contains("older"), "{:?}", stale.result);
        let ev = |t: &str| Event { table: t.into(), row: json!({"ts": 1}) };
        assert!(c.admit(&ev("auth_events")) && !c.admit(&ev("process_events")));

        let again = Controls::load(Some(file));
        assert_eq!((again.level(), again.config_version()), (ObserveLevel::Minimal, Some(3)), "survives a restart");
        assert!(!again.admit(&ev("file_events")));
    }
}
