//! Access control of the HTTP API, route by route, over real HTTP on 127.0.0.1: 401 without a
//! token or with a bad, revoked or expired one; 403 with a role too weak or a tenant-scoped
//! token on a fleet-wide route; other tenants' objects answer 404; mutating calls are audited,
//! reads are not; rate limits answer 429 with Retry-After; oversized bodies 413.

use std::time::Duration;

use serde_json::{Value, json};
use vedette_engine::api::{Access, ROUTES};
use vedette_engine::auth::Role;
use vedette_tests::{RawClient, TestEngine, eventually, http_call, ndjson_frame, shadow_cat};

/// Only the status line and headers: streaming routes never end.
async fn status_of(addr: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = if method == "POST" && path == "/api/v1/tokens" { r#"{"name":"x","role":"viewer"}"# } else { "" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: l\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "{method} {path}: connection closed before headers");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn token(t: &TestEngine, role: &str, tenant: &str, ttl: Option<&str>) -> (String, String) {
    let body =
        serde_json::to_vec(&json!({"name": format!("{role}@{tenant}"), "role": role, "tenant": tenant, "ttl": ttl}))
            .unwrap();
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (v["token"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "linux.shadow_in_cmdline").replace("{name}", "file")
}

fn weaker(role: Role) -> Option<&'static str> {
    match role {
        Role::Viewer => None,
        Role::Analyst => Some("viewer"),
        Role::Admin => Some("analyst"),
    }
}

#[tokio::test]
async fn every_route_refuses_missing_bad_revoked_expired_and_too_weak_tokens() {
    let t = TestEngine::start().await;
    let addr = t.engine.api_addr;
    let mut tokens = std::collections::HashMap::new();
    for role in ["viewer", "analyst", "admin"] {
        tokens.insert((role, "*"), token(&t, role, "*", None).await.0);
        tokens.insert((role, "acme"), token(&t, role, "acme", None).await.0);
    }
    let (revoked, revoked_id) = token(&t, "admin", "*", None).await;
    let r = http_call(addr, "DELETE", &format!("/api/v1/tokens/{revoked_id}"), Some(&t.admin_token()), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (expiring, _) = token(&t, "admin", "*", Some("1s")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let forged = format!("{}x", &t.admin_token()[..t.admin_token().len() - 1]);

    for spec in ROUTES {
        let path = concrete(spec.path);
        let m = spec.method;
        let (role, fleet) = match spec.access {
            Access::Open => {
                assert_ne!(status_of(addr, m, &path, None).await, 401, "{m} {path} is open");
                continue;
            }
            // Open on loopback by default; the refusal with `open_status = never` is tested below.
            Access::Status => {
                assert_eq!(status_of(addr, m, &path, None).await, 200, "{m} {path} open on loopback");
                continue;
            }
            Access::Tenant(r) => (r, false),
            Access::Fleet(r) => (r, true),
        };
        for (what, tok) in [
            ("no token", None),
            ("forged", Some(forged.as_str())),
            ("revoked", Some(&revoked)),
            ("expired", Some(&expiring)),
        ] {
            assert_eq!(status_of(addr, m, &path, tok).await, 401, "{m} {path} with {what} token");
        }
        if let Some(w) = weaker(role) {
            assert_eq!(status_of(addr, m, &path, Some(&tokens[&(w, "*")])).await, 403, "{m} {path} as {w}");
        }
        let scoped = status_of(addr, m, &path, Some(&tokens[&(role.as_str(), "acme")])).await;
        if fleet {
            assert_eq!(scoped, 403, "{m} {path}: a tenant-scoped {} must not change shared state", role.as_str());
        } else {
            assert!(![401, 403].contains(&scoped), "{m} {path} as a tenant {}: {scoped}", role.as_str());
        }
        let allowed = status_of(addr, m, &path, Some(&tokens[&(role.as_str(), "*")])).await;
        assert!(![401, 403, 500].contains(&allowed), "{m} {path} as fleet {}: {allowed}", role.as_str());
    }
}

#[tokio::test]
async fn status_routes_need_a_token_when_configured_closed() {
    let t = TestEngine::start_with(|c| c.api.open_status = vedette_config::OpenStatus::Never).await;
    for path in ["/health/ready", "/metrics"] {
        assert_eq!(status_of(t.engine.api_addr, "GET", path, None).await, 401, "{path}");
        assert_eq!(t.api("GET", path).await.status, 200, "{path} with a token");
    }
    assert_eq!(status_of(t.engine.api_addr, "GET", "/health/live", None).await, 200);
}

#[tokio::test]
async fn other_tenants_alerts_tokens_and_dead_letters_are_invisible() {
    let t = TestEngine::start().await;
    let addr = t.engine.api_addr;
    // One alert from a sensor of tenant `acme`, one from `globex`.
    for (sensor, tenant) in [("s-acme", "acme"), ("s-globex", "globex")] {
        let mut c = RawClient::connect(&t.sensor(sensor, tenant), 0).await.unwrap();
        let mut s = c.data_stream().await;
        s.write_all(&ndjson_frame(1, "process_events", &[shadow_cat(1)])).await.unwrap();
        c.until(|m| matches!(m, vedette_schemas::frame::Control::Ack(_))).await;
    }
    assert!(eventually(Duration::from_secs(10), || t.engine.history().size().0 == 2).await, "both in the history");
    let (acme, _) = token(&t, "admin", "acme", None).await;
    let (_, globex_token_id) = token(&t, "viewer", "globex", None).await;

    let page = http_call(addr, "GET", "/api/v1/alerts", Some(&acme), None).await.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["alert"]["tenant"], "acme");
    let all = t.api("GET", "/api/v1/alerts").await.json();
    let globex_alert = all["items"].as_array().unwrap().iter().find(|i| i["alert"]["tenant"] == "globex").unwrap();
    let id = globex_alert["alert"]["alert_id"].as_str().unwrap();
    let r = http_call(addr, "GET", &format!("/api/v1/alerts/{id}"), Some(&acme), None).await;
    assert_eq!(r.status, 404, "another tenant's alert does not exist for acme: {}", r.body);
    assert_eq!(t.api("GET", &format!("/api/v1/alerts/{id}")).await.status, 200);
    let r = http_call(addr, "GET", "/api/v1/alerts?tenant=globex", Some(&acme), None).await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("tenant")));

    let r = http_call(addr, "DELETE", &format!("/api/v1/tokens/{globex_token_id}"), Some(&acme), None).await;
    assert_eq!(r.status, 404, "another tenant's token: {}", r.body);
    let listed = http_call(addr, "GET", "/api/v1/tokens", Some(&acme), None).await.json();
    assert!(listed.as_array().unwrap().iter().all(|t| t["tenant"] == "acme"), "{listed}");
    let body = serde_json::to_vec(&json!({"name": "x", "role": "viewer", "tenant": "*"})).unwrap();
    let r = http_call(addr, "POST", "/api/v1/tokens", Some(&acme), Some(&body)).await;
    assert_eq!(r.status, 403, "a tenant admin cannot mint fleet-wide tokens");

    let sse = http_call(addr, "GET", "/api/v1/alerts/export?format=json", Some(&acme), None).await;
    let lines: Vec<Value> = sse.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tenant"], "acme");
}

#[tokio::test]
async fn mutating_calls_are_audited_and_reads_are_not() {
    let t = TestEngine::start().await;
    let addr = t.engine.api_addr;
    t.api("GET", "/api/v1/rules").await;
    let r = t.api("POST", "/api/v1/rules/linux.shadow_in_cmdline/disable").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (viewer, _) = token(&t, "viewer", "*", None).await;
    let r = http_call(addr, "POST", "/api/v1/rules/apply", Some(&viewer), None).await;
    assert_eq!(r.status, 403);
    let entries = t.api("GET", "/api/v1/audit").await.json()["entries"].as_array().unwrap().clone();
    let routes: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e["route"].as_str().unwrap(), e["outcome"].as_str().unwrap(), e["token_name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        routes,
        [
            ("/api/v1/rules/apply", "refused", "viewer@*"),
            ("/api/v1/tokens", "ok", "local-admin"),
            ("/api/v1/rules/{id}/disable", "ok", "local-admin"),
        ],
        "newest first; GET /api/v1/rules is not there"
    );
    assert_eq!(entries[2]["target"], "/api/v1/rules/linux.shadow_in_cmdline/disable");
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_big_bodies_get_413() {
    let t = TestEngine::start_with(|c| {
        c.api.rate_limit_per_sec = 1;
        c.api.rate_limit_burst = 3;
        c.api.max_body_bytes = 4096;
    })
    .await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let r = t.api("GET", "/api/v1/whoami").await;
        statuses.push(r.status);
        last = Some(r);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let last = last.unwrap();
    assert_eq!(last.header("retry-after"), Some("1"));
    assert!(last.json()["error"].as_str().unwrap().contains("rate limit"));

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let big = vec![b' '; 8192];
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&big)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("too large"), "{}", r.body);
}

#[tokio::test]
async fn https_api_serves_tls_with_the_configured_certificate_and_refuses_plain_http() {
    let t = TestEngine::start_with(|c| {
        vedette_engine::pki::ensure_dev_pki(&c.data_dir).unwrap();
        let paths = vedette_engine::pki::PkiPaths::new(&c.data_dir);
        c.api.tls_cert = Some(paths.server_cert);
        c.api.tls_key = Some(paths.server_key);
    })
    .await;
    vedette_actors::sinks::http::ensure_crypto_provider();
    let ca = std::fs::read(vedette_engine::pki::PkiPaths::new(&t.data_dir()).ca_cert).unwrap();
    let client =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap()).build().unwrap();
    let port = t.engine.api_addr.port();
    let r = client
        .get(format!("https://localhost:{port}/api/v1/whoami"))
        .bearer_auth(t.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!((me["role"].as_str(), me["tenant"].as_str()), (Some("admin"), Some("*")));
    // A client that does not trust the CA is refused at the handshake; plain HTTP gets no answer.
    assert!(reqwest::Client::new().get(format!("https://localhost:{port}/health/live")).send().await.is_err());
    let plain =
        tokio::time::timeout(Duration::from_secs(5), http_call(t.engine.api_addr, "GET", "/health/live", None, None))
            .await
            .unwrap();
    assert_ne!(plain.status, 200, "plain HTTP must not be served on an HTTPS listener");
}

#[test]
fn a_non_loopback_api_without_tls_is_refused_unless_insecure_http_is_set() {
    let err = vedette_config::Config::from_toml_str("[api]\nlisten = \"0.0.0.0:7780\"\n").unwrap_err();
    assert_eq!(err.problems()[0].path, "api.listen", "{err}");
    assert!(err.to_string().contains("tls_cert"), "{err}");
    vedette_config::Config::from_toml_str("[api]\nlisten = \"0.0.0.0:7780\"\ninsecure_http = true\n").unwrap();
    let err = vedette_config::Config::from_toml_str("[api]\ntls_cert = \"c.pem\"\n").unwrap_err();
    assert_eq!(err.problems()[0].path, "api.tls_key", "{err}");
}

#[tokio::test]
async fn a_bad_token_request_names_the_field() {
    let t = TestEngine::start().await;
    for (body, field) in [
        (json!({"name": "x", "role": "root"}), "`role`"),
        (json!({"name": "", "role": "viewer"}), "`name`"),
        (json!({"name": "x", "role": "viewer", "tenant": "a b"}), "`tenant`"),
        (json!({"name": "x", "role": "viewer", "ttl": "0s"}), "`ttl`"),
        (json!({"name": "x", "role": "viewer", "ttl": "9999d"}), "`ttl`"),
        (json!({"name": "x", "role": "viewer", "colour": "red"}), "colour"),
    ] {
        let raw = serde_json::to_vec(&body).unwrap();
        let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&raw)).await;
        assert!(matches!(r.status, 400 | 422), "{body}: {} {}", r.status, r.body);
        assert!(r.json()["error"].as_str().unwrap().contains(field), "{body}: {}", r.body);
    }
}
