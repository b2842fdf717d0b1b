//! Calling a running engine's API from the CLI: base URL, bearer token (`--token`,
//! `VEDETTE_TOKEN`, or the data dir's `admin.token`, in that order) and JSON errors.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// How to reach the API.
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// Base URL of the engine's HTTP API.
    #[arg(long, env = "VEDETTE_API", default_value = "http://127.0.0.1:7780")]
    pub api: String,
    /// API token (default: $VEDETTE_TOKEN, then <data-dir>/admin.token).
    #[arg(long, env = "VEDETTE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir whose `admin.token` is used when no token is given.
    #[arg(long, env = "VEDETTE_DATA_DIR", default_value = "./vedette-data")]
    pub data_dir: PathBuf,
    /// Extra CA certificate (PEM) to trust for an HTTPS API with its own certificate.
    #[arg(long, env = "VEDETTE_API_CA")]
    pub api_ca: Option<PathBuf>,
}

impl ApiArgs {
    /// The token to present, if any.
    pub fn resolve_token(&self) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(t.trim().to_string());
        }
        let file = self.data_dir.join("admin.token");
        std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
    }

    /// An HTTP client (with the extra CA, if given).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.api_ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading --api-ca {}", ca.display()))?;
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).context("parsing --api-ca")?);
        }
        Ok(b.build()?)
    }

    /// A request to `path` with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        let url = format!("{}{path}", self.api.trim_end_matches('/'));
        let mut r = self.client()?.request(method, url);
        if let Some(t) = self.resolve_token() {
            r = r.bearer_auth(t);
        }
        Ok(r)
    }
}

/// Sends a request; returns the response if it succeeded, else prints the API's error (with a
/// hint for 401) and exits 1.
pub async fn send(api: &ApiArgs, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let resp = request
        .send()
        .await
        .with_context(|| format!("calling {} (is the engine running? --api / VEDETTE_API)", api.api))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body.get("error").and_then(|e| e.as_str()).map_or_else(|| status.to_string(), str::to_string);
    eprintln!("{msg}");
    if status == reqwest::StatusCode::UNAUTHORIZED && api.token.is_none() {
        eprintln!(
            "(no usable token: pass --token or VEDETTE_TOKEN, or --data-dir pointing at the engine's data dir, \
             whose admin.token is used)"
        );
    }
    std::process::exit(1);
}

/// Calls the engine API; returns the JSON answer, or prints the error and exits 1.
pub async fn api_call(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<serde_json::Value> {
    let mut request = api.request(method, path)?.timeout(Duration::from_secs(120));
    if let Some(body) = body {
        request = request.body(body);
    }
    let resp = send(api, request).await?;
    resp.json().await.with_context(|| format!("reading the answer of {path}"))
}

/// Calls an API route with a JSON body; returns the JSON answer (errors carry the API's
/// message).
pub async fn api_json(
    api: &ApiArgs,
    method: reqwest::Method,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let request = api
        .request(method, path)?
        .timeout(Duration::from_secs(120))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?);
    let resp = send(api, request).await?;
    resp.json().await.with_context(|| format!("reading the answer of {path}"))
}
