//! `vedette sensors list|show|revoke|deregister|set-level|config|renew|label|commands`: the
//! fleet registry of a running engine, and commands to its sensors.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{ApiArgs, api_call, api_json};
use super::table::{OutputArgs, Table};

/// Which sensors a command targets: one id, or every sensor a label selector matches.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// One sensor.
    #[arg(long)]
    sensor: Option<String>,
    /// Every sensor whose labels match, e.g. env=prod,role=db.
    #[arg(long)]
    selector: Option<String>,
}

/// Registered sensors of a running engine.
#[derive(Subcommand)]
pub enum SensorsCommand {
    /// Sensors with status, tenant, version, last seen (all pages).
    List {
        /// Only this tenant (fleet-wide tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// online, silent, offline or revoked.
        #[arg(long)]
        status: Option<String>,
        /// Label selector, e.g. env=prod,role=db.
        #[arg(long)]
        label: Option<String>,
        /// Print each sensor as one JSON line (as `--output json`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One sensor, as JSON.
    Show {
        /// Sensor id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a sensor (every certificate of its id) or one certificate (by its SHA-256
    /// fingerprint, as `openssl x509 -fingerprint -sha256` prints it). A connected session is
    /// closed at once; the certificate is refused at every later handshake.
    Revoke {
        /// Sensor id or certificate fingerprint.
        target: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a decommissioned sensor from the registry (it may enroll again).
    Deregister {
        /// Sensor id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Set the observe level (minimal, standard, verbose); a disconnected sensor gets it when
    /// it reconnects.
    SetLevel {
        /// minimal, standard or verbose.
        level: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Apply a configuration document (JSON file, see docs/fleet.md); the latest version wins.
    Config {
        /// JSON file.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Ask sensors to renew their certificate now.
    Renew {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Replace a sensor's labels (e.g. env=prod,role=db; empty: none).
    Label {
        /// Sensor id.
        id: String,
        /// Labels.
        labels: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A sensor's commands and their state.
    Commands {
        /// Sensor id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// Queues a command for the target; prints what was queued.
async fn queue_command(api: &ApiArgs, target: Target, mut body: Value) -> anyhow::Result<()> {
    let answer = match (target.sensor, target.selector) {
        (Some(id), _) => {
            let path = format!("/api/v1/sensors/{}/commands", super::alerts::encode(&id));
            api_json(api, reqwest::Method::POST, &path, &body).await?
        }
        (None, Some(selector)) => {
            body["selector"] = selector.into();
            api_json(api, reqwest::Method::POST, "/api/v1/commands", &body).await?
        }
        (None, None) => anyhow::bail!("give --sensor ID or --selector k=v"),
    };
    let cmds = answer["commands"].as_array().cloned().unwrap_or_default();
    for c in &cmds {
        println!(
            "{} {:<24} {}",
            c["id"].as_str().unwrap_or_default(),
            c["sensor_id"].as_str().unwrap_or_default(),
            c["state"].as_str().unwrap_or_default()
        );
    }
    eprintln!(
        "{} command(s) queued, {} sent now (the others wait for their sensor to connect)",
        cmds.len(),
        answer["sent_now"]
    );
    Ok(())
}

/// Runs a `sensors` command.
pub async fn run(command: SensorsCommand) -> anyhow::Result<()> {
    match command {
        SensorsCommand::List { tenant, status, label, json, output, api } => {
            // A fleet is listed page by page: as JSON, one sensor per line.
            let json = json || output.output == super::table::Output::Json;
            let mut cursor: Option<String> = None;
            let mut table = Table::new(&["SENSOR", "TENANT", "STATUS", "VERSION", "LAST_SEEN", "HOST"]);
            loop {
                let mut pairs: Vec<(&str, String)> = vec![("limit", "1000".into())];
                for (k, v) in [("tenant", &tenant), ("status", &status), ("label", &label), ("cursor", &cursor)] {
                    if let Some(v) = v {
                        pairs.push((k, v.clone()));
                    }
                }
                let path = super::alerts::with_query("/api/v1/sensors", &pairs);
                let page = api_call(&api, reqwest::Method::GET, &path, None).await?;
                for s in page["items"].as_array().into_iter().flatten() {
                    if json {
                        println!("{s}");
                        continue;
                    }
                    let f = |k: &str| s[k].as_str().unwrap_or("-").to_string();
                    let seen = f("last_seen");
                    table.row([
                        f("sensor_id"),
                        f("tenant"),
                        f("status"),
                        f("sensor_version"),
                        seen.get(..19).unwrap_or(&seen).to_string(),
                        f("host"),
                    ]);
                }
                cursor = page["next_cursor"].as_str().map(str::to_string);
                if cursor.is_none() {
                    break;
                }
            }
            if !json {
                table.print();
            }
        }
        SensorsCommand::Show { id, api } => {
            let path = format!("/api/v1/sensors/{}", super::alerts::encode(&id));
            let s = api_call(&api, reqwest::Method::GET, &path, None).await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        SensorsCommand::Revoke { target, api } => {
            if let Some(fp) = vedette_actors::registry::normalize_fingerprint(&target) {
                let path = format!("/api/v1/certificates/{fp}/revoke");
                let r = api_call(&api, reqwest::Method::POST, &path, None).await?;
                let owner =
                    r["sensor_id"].as_str().map_or_else(|| "no registered sensor".into(), |s| format!("sensor {s}"));
                let live = if r["disconnected"].as_bool() == Some(true) { "; its session was closed" } else { "" };
                println!("certificate {fp} revoked (used by {owner}){live}");
            } else {
                let path = format!("/api/v1/sensors/{}/revoke", super::alerts::encode(&target));
                api_call(&api, reqwest::Method::POST, &path, None).await?;
                println!("sensor {target} revoked: every certificate of this id is refused");
            }
        }
        SensorsCommand::Deregister { id, api } => {
            let path = format!("/api/v1/sensors/{}", super::alerts::encode(&id));
            api_call(&api, reqwest::Method::DELETE, &path, None).await?;
            println!("sensor {id} deregistered");
        }
        SensorsCommand::SetLevel { level, target, api } => queue_command(&api, target, json!({"level": level})).await?,
        SensorsCommand::Config { file, target, api } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let config: Value =
                serde_json::from_str(&text).with_context(|| format!("{}: not a JSON document", file.display()))?;
            queue_command(&api, target, json!({"config": config})).await?;
        }
        SensorsCommand::Renew { target, api } => {
            queue_command(&api, target, json!({"renew_certificate": true})).await?
        }
        SensorsCommand::Label { id, labels, api } => {
            let path = format!("/api/v1/sensors/{}/labels", super::alerts::encode(&id));
            let now = api_json(&api, reqwest::Method::PUT, &path, &json!({"labels": labels})).await?;
            println!("{id}: {now}");
        }
        SensorsCommand::Commands { id, api, output } => {
            let path = format!("/api/v1/sensors/{}/commands", super::alerts::encode(&id));
            let list = api_call(&api, reqwest::Method::GET, &path, None).await?;
            if output.json(&list) {
                return Ok(());
            }
            let mut table = Table::new(&["ID", "COMMAND", "STATE", "CREATED", "MESSAGE"]);
            for c in list.as_array().into_iter().flatten() {
                let created = c["created_at"].as_str().unwrap_or_default();
                table.row([
                    c["id"].as_str().unwrap_or_default(),
                    c["action"]["command"].as_str().unwrap_or_default(),
                    c["state"].as_str().unwrap_or_default(),
                    created.get(..19).unwrap_or(created),
                    c["message"].as_str().unwrap_or_default(),
                ]);
            }
            table.print();
        }
    }
    Ok(())
}
