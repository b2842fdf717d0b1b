//! `vedette tokens create|list|revoke`.

use clap::Subcommand;
use serde_json::json;

use super::client::{ApiArgs, api_call};

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
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        api: ApiArgs,
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
        TokensCommand::List { api } => {
            let list = api_call(&api, reqwest::Method::GET, "/api/v1/tokens", None).await?;
            println!("{:<16}  {:<24} {:<8} {:<16} {:<10} EXPIRES", "ID", "NAME", "ROLE", "TENANT", "STATE");
            for t in list.as_array().into_iter().flatten() {
                let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
                let state = if t["revoked_at"].is_string() { "revoked" } else { "active" };
                println!(
                    "{:<16}  {:<24} {:<8} {:<16} {:<10} {}",
                    s("id"),
                    s("name"),
                    s("role"),
                    s("tenant"),
                    state,
                    s("expires_at")
                );
            }
        }
        TokensCommand::Revoke { id, api } => {
            api_call(&api, reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}
