//! `vedette sensors list|show|revoke|deregister`: the fleet registry of a running engine.

use clap::Subcommand;

use super::client::{ApiArgs, api_call};

/// Registered sensors of a running engine.
#[derive(Subcommand)]
pub enum SensorsCommand {
    /// Sensors with status, tenant, version, last seen (all pages).
    List {
        /// Only this tenant (fleet-wide tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// online, offline or revoked.
        #[arg(long)]
        status: Option<String>,
        /// Label selector, e.g. env=prod,role=db.
        #[arg(long)]
        label: Option<String>,
        /// Print each sensor as one JSON line.
        #[arg(long)]
        json: bool,
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
}

/// Runs a `sensors` command.
pub async fn run(command: SensorsCommand) -> anyhow::Result<()> {
    match command {
        SensorsCommand::List { tenant, status, label, json, api } => {
            let mut cursor: Option<String> = None;
            if !json {
                println!(
                    "{:<24} {:<16} {:<8} {:<24} {:<22} HOST",
                    "SENSOR", "TENANT", "STATUS", "VERSION", "LAST_SEEN"
                );
            }
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
                    println!(
                        "{:<24} {:<16} {:<8} {:<24} {:<22} {}",
                        f("sensor_id"),
                        f("tenant"),
                        f("status"),
                        f("sensor_version"),
                        seen.get(..19).unwrap_or(&seen),
                        f("host")
                    );
                }
                cursor = page["next_cursor"].as_str().map(str::to_string);
                if cursor.is_none() {
                    return Ok(());
                }
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
    }
    Ok(())
}
