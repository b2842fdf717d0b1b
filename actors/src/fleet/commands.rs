//! Commands to sensors (sled tree `commands`): queued per sensor, delivered on the control
//! stream when the sensor is connected (at once) or when it reconnects, and closed by the
//! sensor's COMMAND_RESULT. A newer `set_level` or `apply_config` supersedes an older one that
//! was not acknowledged yet, so the latest wins.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use vedette_schemas::fleet::{Action, Command, CommandResult};

use crate::error::{ActorError, Result};

/// Where a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    /// Waiting for the sensor to connect.
    Pending,
    /// Sent on the control stream; no result yet (sent again after a reconnect).
    Sent,
    /// The sensor applied it.
    Done,
    /// The sensor could not apply it (see `message`).
    Failed,
    /// A newer command of the same kind replaced it before the sensor answered.
    Superseded,
}

impl CommandState {
    /// Still waiting for the sensor.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Sent)
    }
}

/// A command as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommandRecord {
    /// Command id.
    pub id: String,
    /// Target sensor.
    pub sensor_id: String,
    /// The sensor's tenant.
    pub tenant: String,
    /// What it asks (`{"command": "set_level", "level": "minimal"}` …).
    #[schema(value_type = Object)]
    pub action: Action,
    /// State.
    pub state: CommandState,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it was last sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the sensor answered.
    pub finished_at: Option<DateTime<Utc>>,
    /// The sensor's message (or why it was superseded).
    pub message: Option<String>,
}

impl CommandRecord {
    /// The wire message.
    pub fn command(&self) -> Command {
        Command { id: self.id.clone(), action: self.action.clone() }
    }
}

/// Commands kept per sensor (the oldest closed ones are dropped beyond it).
const KEPT_PER_SENSOR: usize = 100;

/// The command store.
pub struct Commands {
    tree: sled::Tree,
    db: sled::Db,
    write: std::sync::Mutex<()>,
}

fn storage(source: sled::Error) -> ActorError {
    ActorError::Storage { path: "commands".into(), source }
}

fn key(sensor: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(sensor.len() + 1 + id.len());
    k.extend_from_slice(sensor.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn prefix(sensor: &str) -> Vec<u8> {
    let mut k = sensor.as_bytes().to_vec();
    k.push(0);
    k
}

impl Commands {
    /// Opens the store in the state database.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self { tree: db.open_tree("commands").map_err(storage)?, db: db.clone(), write: Default::default() })
    }

    fn put(&self, rec: &CommandRecord) -> Result<()> {
        let v = serde_json::to_vec(rec).expect("commands serialize");
        self.tree.insert(key(&rec.sensor_id, &rec.id), v).map_err(storage)?;
        Ok(())
    }

    /// Every command of a sensor, oldest first.
    pub fn list(&self, sensor: &str) -> Result<Vec<CommandRecord>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix(sensor)) {
            let (_, v) = kv.map_err(storage)?;
            if let Ok(r) = serde_json::from_slice(&v) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Queues a command (durably); an open command of the same kind is superseded.
    pub async fn enqueue(&self, sensor: &str, tenant: &str, action: Action) -> Result<CommandRecord> {
        let id = format!("{:016x}", self.db.generate_id().map_err(storage)?);
        let now = Utc::now();
        let rec = CommandRecord {
            id,
            sensor_id: sensor.into(),
            tenant: tenant.into(),
            action,
            state: CommandState::Pending,
            created_at: now,
            sent_at: None,
            finished_at: None,
            message: None,
        };
        {
            let _w = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let existing = self.list(sensor)?;
            for mut old in existing.iter().filter(|c| c.state.is_open()).cloned() {
                if old.action.name() == rec.action.name() && rec.action.name() != "renew_certificate" {
                    old.state = CommandState::Superseded;
                    old.finished_at = Some(now);
                    old.message = Some(format!("superseded by command {}", rec.id));
                    self.put(&old)?;
                }
            }
            let closed: Vec<&CommandRecord> = existing.iter().filter(|c| !c.state.is_open()).collect();
            for old in closed.iter().take(closed.len().saturating_sub(KEPT_PER_SENSOR - 1)) {
                self.tree.remove(key(sensor, &old.id)).map_err(storage)?;
            }
            self.put(&rec)?;
        }
        self.tree.flush_async().await.map_err(storage)?;
        Ok(rec)
    }

    /// Open commands of a sensor, oldest first (what to send when it connects).
    pub fn open_commands(&self, sensor: &str) -> Result<Vec<CommandRecord>> {
        Ok(self.list(sensor)?.into_iter().filter(|c| c.state.is_open()).collect())
    }

    /// Marks a command sent.
    pub fn sent(&self, sensor: &str, id: &str) -> Result<()> {
        let _w = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mut rec) = self.get(sensor, id)?
            && rec.state.is_open()
        {
            rec.state = CommandState::Sent;
            rec.sent_at = Some(Utc::now());
            self.put(&rec)?;
        }
        Ok(())
    }

    /// One command of a sensor.
    pub fn get(&self, sensor: &str, id: &str) -> Result<Option<CommandRecord>> {
        Ok(self.tree.get(key(sensor, id)).map_err(storage)?.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Records a sensor's result. `None` when this sensor has no such open command (a result
    /// for another sensor's command, or one already closed): the caller refuses it.
    pub async fn complete(&self, sensor: &str, result: &CommandResult) -> Result<Option<CommandRecord>> {
        let rec = {
            let _w = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(mut rec) = self.get(sensor, &result.id)?.filter(|r| r.state.is_open()) else {
                return Ok(None);
            };
            rec.state = if result.ok { CommandState::Done } else { CommandState::Failed };
            rec.finished_at = Some(Utc::now());
            rec.message = Some(result.message.clone()).filter(|m| !m.is_empty());
            self.put(&rec)?;
            rec
        };
        self.tree.flush_async().await.map_err(storage)?;
        Ok(Some(rec))
    }

    /// Forgets every command of a deregistered sensor.
    pub fn remove_sensor(&self, sensor: &str) -> Result<()> {
        for kv in self.tree.scan_prefix(prefix(sensor)) {
            let (k, _) = kv.map_err(storage)?;
            self.tree.remove(k).map_err(storage)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vedette_schemas::fleet::{ObserveLevel, SensorSettings};

    use super::*;

    #[tokio::test]
    async fn latest_command_of_a_kind_wins_and_results_must_match_the_sensor() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let c = Commands::open(&db).unwrap();
        let level = |l| Action::SetLevel { level: l };
        let a = c.enqueue("s1", "t", level(ObserveLevel::Minimal)).await.unwrap();
        let cfg = Action::ApplyConfig { config: SensorSettings { version: 1, ..Default::default() } };
        let b = c.enqueue("s1", "t", cfg).await.unwrap();
        let d = c.enqueue("s1", "t", level(ObserveLevel::Verbose)).await.unwrap();
        let open: Vec<String> = c.open_commands("s1").unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(open, vec![b.id.clone(), d.id.clone()], "the older level command is superseded");
        assert_eq!(c.get("s1", &a.id).unwrap().unwrap().state, CommandState::Superseded);

        let ok = CommandResult { id: d.id.clone(), ok: true, message: String::new() };
        assert!(c.complete("s2", &ok).await.unwrap().is_none(), "another sensor cannot close it");
        assert_eq!(c.complete("s1", &ok).await.unwrap().unwrap().state, CommandState::Done);
        assert!(c.complete("s1", &ok).await.unwrap().is_none(), "closed once");
        drop(c);
        let c = Commands::open(&db).unwrap();
        assert_eq!(c.open_commands("s1").unwrap().len(), 1, "pending commands survive a restart");
        c.remove_sensor("s1").unwrap();
        assert!(c.list("s1").unwrap().is_empty());
    }
}
