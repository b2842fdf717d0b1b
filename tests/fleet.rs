//! The fleet registry and revocation over real QUIC and HTTP: sensors register on HELLO and are
//! listed with their status; revoking a connected sensor closes its session within a second
//! and its certificates are refused at every later handshake, across restarts; a revoked
//! certificate (by fingerprint) alone is refused; deregistration frees the id; an id cannot
//! change tenant; other tenants' sensors are invisible.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vedette_engine::pki;
use vedette_schemas::frame::close_code;
use vedette_tests::{RawClient, TestEngine, http_call};

async fn sensors(t: &TestEngine, query: &str) -> Vec<Value> {
    let r = t.api("GET", &format!("/api/v1/sensors{query}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

fn closed_with(err: quinn::ConnectionError) -> u64 {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test]
async fn a_revoked_sensor_is_disconnected_within_a_second_and_refused_after_restarts() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("web-01", "acme");
    let client = RawClient::connect(&cfg, 0).await.unwrap();
    let list = sensors(&t, "").await;
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(
        (s["sensor_id"].as_str(), s["tenant"].as_str(), s["status"].as_str()),
        (Some("web-01"), Some("acme"), Some("online"))
    );
    assert_eq!(s["host"], "raw-host");
    assert_eq!(s["sensor_version"], "test/1");
    assert_eq!(s["fingerprints"].as_array().unwrap().len(), 1);
    assert!(s["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));

    let started = Instant::now();
    let r = t.api("POST", "/api/v1/sensors/web-01/revoke").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "revoked");
    let err = tokio::time::timeout(Duration::from_secs(1), client.session.conn.closed())
        .await
        .expect("the revoked sensor's session closes within one second");
    assert_eq!(closed_with(err), u64::from(close_code::REVOKED));
    assert!(started.elapsed() < Duration::from_secs(1));

    assert!(RawClient::connect(&cfg, 0).await.is_err(), "refused at the handshake");
    let t = t.restart().await;
    let cfg = t.sensor("web-01", "acme");
    assert!(RawClient::connect(&cfg, 0).await.is_err(), "still refused after a restart");
    assert_eq!(sensors(&t, "?status=revoked").await.len(), 1);
    let (_, metrics) = vedette_tests::http_get(t.engine.api_addr, "/metrics").await;
    assert!(metrics.contains("vedette_ingest_refused_total{reason=\"handshake\"}"), "counted");

    // Deregistered, the id may come back with a new certificate (its old one stays refused).
    let r = t.api("DELETE", "/api/v1/sensors/web-01").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(t.api("GET", "/api/v1/sensors/web-01").await.status, 404);
    assert!(RawClient::connect(&cfg, 0).await.is_err(), "the revoked certificate stays revoked");
    pki::issue_sensor_files(&t.data_dir(), "web-01", "acme", 30, true, None).unwrap();
    let again = RawClient::connect(&t.sensor("web-01", "acme"), 0).await.unwrap();
    assert_eq!(sensors(&t, "?status=online").await.len(), 1);
    drop(again);
}

#[tokio::test]
async fn revoking_one_certificate_by_fingerprint_disconnects_and_refuses_it() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("db-07", "acme");
    let client = RawClient::connect(&cfg, 0).await.unwrap();
    let fp = sensors(&t, "").await[0]["fingerprints"][0].as_str().unwrap().to_string();
    // As `openssl x509 -fingerprint -sha256` prints it.
    let openssl: Vec<String> = fp.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
    let r = t.api("POST", &format!("/api/v1/certificates/{}/revoke", openssl.join(":"))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"fingerprint": fp, "sensor_id": "db-07", "disconnected": true}));
    let err = tokio::time::timeout(Duration::from_secs(1), client.session.conn.closed()).await.unwrap();
    assert_eq!(closed_with(err), u64::from(close_code::REVOKED));
    assert!(RawClient::connect(&cfg, 0).await.is_err());
    let s = sensors(&t, "").await[0].clone();
    assert_eq!(s["connected"], false);
    assert_ne!(s["status"], "revoked", "the sensor itself is not revoked: {s}");
    let r = t.api("POST", "/api/v1/certificates/not-a-fingerprint/revoke").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("fingerprint")));
}

#[tokio::test]
async fn a_sensor_id_cannot_move_to_another_tenant_and_tenants_see_only_their_sensors() {
    let t = TestEngine::start().await;
    drop(RawClient::connect(&t.sensor("app-1", "acme"), 0).await.unwrap());
    drop(RawClient::connect(&t.sensor("app-2", "globex"), 0).await.unwrap());
    // A certificate for app-1 that says tenant globex.
    pki::issue_sensor_files(&t.data_dir(), "app-1", "globex", 30, true, None).unwrap();
    let refused = RawClient::connect(&t.sensor("app-1", "globex"), 0).await;
    let err = refused.err().expect("an id registered to acme cannot speak for globex");
    assert!(format!("{err:#}").contains("tenant"), "{err:#}");

    let body = serde_json::to_vec(&json!({"name": "acme-admin", "role": "admin", "tenant": "acme"})).unwrap();
    let acme = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&body)).await;
    let acme = acme.json()["token"].as_str().unwrap().to_string();
    let get = |path: &'static str| http_call(t.engine.api_addr, "GET", path, Some(&acme), None);
    let list = get("/api/v1/sensors").await.json();
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|s| s["sensor_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["app-1"]);
    assert_eq!(get("/api/v1/sensors/app-2").await.status, 404);
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/sensors/app-2/revoke", Some(&acme), None).await;
    assert_eq!(r.status, 404, "another tenant's sensor cannot be revoked, nor seen");
    assert_eq!(get("/api/v1/sensors?tenant=globex").await.status, 400);
    assert_eq!(sensors(&t, "?tenant=globex").await.len(), 1, "fleet-wide tokens pick any tenant");
    let r = t.api("GET", "/api/v1/sensors?status=sleeping").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("status")));
    let r = t.api("GET", "/api/v1/sensors?label=nokey").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("label")));
}

#[tokio::test]
async fn an_expired_certificate_is_refused_at_the_handshake() {
    let t = TestEngine::start().await;
    pki::issue_sensor_files(&t.data_dir(), "old-1", "default", 0, false, None).unwrap();
    let cfg = t.sensor("old-1", "default");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = RawClient::connect(&cfg, 0).await.err().expect("refused").to_string();
    assert!(err.contains("expired"), "{err}");
    assert_eq!(t.engine.sensors_connected(), 0);
    t.engine.shutdown().await;
}
