//! `vedette tokens create|list|revoke`.

use clap::Subcommand;
use serde_json::json;

use super::client::{ApiArgs, api_call};
use super::table::{OutputArgs, Table};

/// API tokens of a running engine.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is printed once (only its hash is kept).
    Create {
        /// `viewer`, `analyst` or `admin`.
        #[arg(long)]
        role: String,
        /// Tenant (`*` = every tenant); default: the calling token's tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Name shown in listings and the audit log.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Lifetime, e.g. `30d`, `12h` (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create an enrollment token: sensors present it with `vedette sensor enroll` to get a
    /// certificate of TENANT (printed once; only its hash is kept).
    CreateEnrollment {
        /// Tenant of the sensors it enrolls.
        #[arg(long)]
        tenant: Option<String>,
        /// How many sensors it may enroll.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Lifetime, e.g. `24h`, `7d`.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Labels for the sensors it enrolls, `k=v` (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List enrollment tokens (never their secrets).
    ListEnrollment {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke an enrollment token by id.
    RevokeEnrollment {
        /// Enrollment token id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Revoke a token by id; it is refused from its next request on.
    Revoke {
        /// Token id (`vedette tokens list`).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs a `tokens` command.
pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { role, tenant, name, ttl, api } => {
            let body = json!({"name": name, "role": role, "tenant": tenant, "ttl": ttl});
            let body = serde_json::to_vec(&body)?;
            let req = api.request(reqwest::Method::POST, "/api/v1/tokens")?.header("content-type", "application/json");
            let t: serde_json::Value = super::client::send(&api, req.body(body)).await?.json().await?;
            println!("{}", t["token"].as_str().unwrap_or_default());
            eprintln!(
                "token {} ({}, role {}, tenant {}{}) — shown once, store it now",
                t["id"].as_str().unwrap_or_default(),
                t["name"].as_str().unwrap_or_default(),
                t["role"].as_str().unwrap_or_default(),
                t["tenant"].as_str().unwrap_or_default(),
                t["expires_at"].as_str().map(|e| format!(", expires {e}")).unwrap_or_default()
            );
        }
        TokensCommand::CreateEnrollment { tenant, uses, ttl, labels, api } => {
            let body = json!({"tenant": tenant, "uses": uses, "ttl": ttl, "labels": labels.join(",")});
            let t = super::client::api_json(&api, reqwest::Method::POST, "/api/v1/enrollment-tokens", &body).await?;
            println!("{}", t["token"].as_str().unwrap_or_default());
            eprintln!(
                "enrollment token {} (tenant {}, {} use(s), expires {}) — shown once, store it now",
                t["id"].as_str().unwrap_or_default(),
                t["tenant"].as_str().unwrap_or_default(),
                t["uses"],
                t["expires_at"].as_str().unwrap_or_default()
            );
        }
        TokensCommand::ListEnrollment { api, output } => {
            let list = api_call(&api, reqwest::Method::GET, "/api/v1/enrollment-tokens", None).await?;
            if output.json(&list) {
                return Ok(());
            }
            let mut table = Table::new(&["ID", "TENANT", ">USED", "EXPIRES", "REVOKED", "LABELS"]);
            for t in list.as_array().into_iter().flatten() {
                let exp = t["expires_at"].as_str().unwrap_or_default();
                let labels: Vec<String> = t["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                table.row([
                    t["id"].as_str().unwrap_or_default().to_string(),
                    t["tenant"].as_str().unwrap_or_default().to_string(),
                    format!("{}/{}", t["used"], t["uses"]),
                    exp.get(..19).unwrap_or(exp).to_string(),
                    if t["revoked_at"].is_null() { "no" } else { "yes" }.to_string(),
                    labels.join(","),
                ]);
            }
            table.print();
        }
        TokensCommand::RevokeEnrollment { id, api } => {
            let path = format!("/api/v1/enrollment-tokens/{}", super::alerts::encode(&id));
            api_call(&api, reqwest::Method::DELETE, &path, None).await?;
            println!("enrollment token {id} revoked");
        }
        TokensCommand::List { api, output } => {
            let list = api_call(&api, reqwest::Method::GET, "/api/v1/tokens", None).await?;
            if output.json(&list) {
                return Ok(());
            }
            let mut table = Table::new(&["ID", "NAME", "ROLE", "TENANT", "STATE", "EXPIRES"]);
            for t in list.as_array().into_iter().flatten() {
                let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                let state = if t["revoked_at"].is_string() { "revoked" } else { "active" };
                table.row([s("id"), s("name"), s("role"), s("tenant"), state.to_string(), s("expires_at")]);
            }
            table.print();
        }
        TokensCommand::Revoke { id, api } => {
            api_call(&api, reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
