//! Enrollment and rotation over real QUIC and HTTP: a sensor enrolls with a one-time token
//! (its key made on the sensor, the engine's CA pinned by fingerprint) and then just runs;
//! used-up, expired and revoked tokens, a wrong CA fingerprint and a taken id are refused; a
//! connected sensor renews its certificate while streaming without losing or repeating events.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use vedette_actors::tls;
use vedette_engine::auth::Secret;
use vedette_engine::pki::PkiPaths;
use vedette_engine::sensor::enroll::{EnrollRequest, SensorIdentity, enroll};
use vedette_engine::sensor::{self, Event, SensorConfig, SensorError, SensorStats};
use vedette_tests::{TestEngine, eventually, http_call, shadow_cat};

/// The engine CA's SHA-256 as `openssl x509 -fingerprint -sha256` prints it.
fn ca_fingerprint(t: &TestEngine) -> String {
    let pem = std::fs::read(t.data_dir().join("ca/ca.pem")).unwrap();
    let hex = tls::fingerprint(tls::certs_from_pem(&pem, "ca").unwrap()[0].as_ref());
    let pairs: Vec<String> = hex.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
    format!("sha256 Fingerprint={}", pairs.join(":"))
}

async fn create_token(t: &TestEngine, body: Value) -> Value {
    let body = serde_json::to_vec(&body).unwrap();
    let r =
        http_call(t.engine.api_addr, "POST", "/api/v1/enrollment-tokens", Some(&t.admin_token()), Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn request(t: &TestEngine, token: &str, pin: &str, sensor_id: &str, dir: &std::path::Path) -> EnrollRequest {
    EnrollRequest {
        server: t.engine.ingest_addr,
        server_name: "localhost".into(),
        token: Secret::new(token),
        ca_sha256: pin.into(),
        sensor_id: sensor_id.into(),
        host: "edge-host".into(),
        data_dir: dir.to_path_buf(),
        force: false,
    }
}

fn refused(e: SensorError) -> String {
    match e {
        SensorError::Refused { message, .. } => message,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn a_sensor_enrolls_with_a_token_and_runs_and_bad_tokens_or_pins_are_refused() {
    let t = TestEngine::start().await;
    let pin = ca_fingerprint(&t);
    let token = create_token(&t, json!({"tenant": "acme", "labels": "env=prod,role=db"})).await;
    assert_eq!((token["uses"].as_u64(), token["used"].as_u64()), (Some(1), Some(0)), "default: one use");
    let secret = token["token"].as_str().unwrap().to_string();

    // A man in the middle (or a typo) in the CA fingerprint: refused before the token is sent.
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let e = refused(enroll(&request(&t, &secret, &wrong, "edge-01", dir.path())).await.unwrap_err());
    assert!(e.contains("pinned"), "{e}");
    assert!(!SensorIdentity::path(dir.path()).exists(), "nothing written");

    let done = enroll(&request(&t, &secret, &pin, "edge-01", dir.path())).await.unwrap();
    assert_eq!((done.identity.sensor_id.as_str(), done.identity.tenant.as_str()), ("edge-01", "acme"));
    assert_eq!(done.labels.get("env").map(String::as_str), Some("prod"));
    let mode = std::fs::metadata(&done.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is private");
    assert_eq!(SensorIdentity::load(dir.path()).unwrap().unwrap(), done.identity);

    let r = t.api("GET", "/api/v1/sensors/edge-01").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!((s["tenant"].as_str(), s["labels"]["role"].as_str()), (Some("acme"), Some("db")));
    assert_eq!(s["status"], "offline", "enrolled, not connected yet");
    assert_eq!(s["enrolled_with"], token["id"]);

    // The token is spent: a second sensor is refused, and the id cannot enroll twice.
    let other = tempfile::tempdir().unwrap();
    let e = refused(enroll(&request(&t, &secret, &pin, "edge-02", other.path())).await.unwrap_err());
    assert!(e.contains("used up"), "{e}");
    let fresh = create_token(&t, json!({"tenant": "acme", "uses": 5})).await;
    let fresh = fresh["token"].as_str().unwrap().to_string();
    let e = refused(enroll(&request(&t, &fresh, &pin, "edge-01", other.path())).await.unwrap_err());
    assert!(e.contains("already registered"), "{e}");

    // An expired token and a revoked one.
    let short = create_token(&t, json!({"tenant": "acme", "ttl": "1ms"})).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let e = refused(
        enroll(&request(&t, short["token"].as_str().unwrap(), &pin, "edge-03", other.path())).await.unwrap_err(),
    );
    assert!(e.contains("expired"), "{e}");
    let rev = create_token(&t, json!({"tenant": "acme"})).await;
    let r = t.api("DELETE", &format!("/api/v1/enrollment-tokens/{}", rev["id"].as_str().unwrap())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let e =
        refused(enroll(&request(&t, rev["token"].as_str().unwrap(), &pin, "edge-04", other.path())).await.unwrap_err());
    assert!(e.contains("revoked"), "{e}");
    let e =
        refused(enroll(&request(&t, "vde_0000000000000000_nope", &pin, "edge-05", other.path())).await.unwrap_err());
    assert!(e.contains("not valid"), "{e}");

    // The enrolled sensor just runs from its data dir, as tenant acme.
    let paths = PkiPaths::new(dir.path());
    let (cert, key) = paths.sensor("edge-01");
    let cfg = SensorConfig::new(t.engine.ingest_addr, paths.ca_cert, cert, key, "edge-host");
    let (tx, rx) = mpsc::channel(8);
    tx.send(Event { table: "process_events".into(), row: shadow_cat(1) }).await.unwrap();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), sensor::run(cfg, rx, Arc::new(SensorStats::default())))
        .await
        .expect("the sensor finishes")
        .unwrap();
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0]["sensor_id"].as_str(), alerts[0]["tenant"].as_str()), (Some("edge-01"), Some("acme")));
    let list = t.api("GET", "/api/v1/enrollment-tokens").await.json();
    let used = list.as_array().unwrap().iter().find(|x| x["id"] == token["id"]).unwrap().clone();
    assert_eq!((used["used"].as_u64(), used["sensors"][0].as_str()), (Some(1), Some("edge-01")));
    t.engine.shutdown().await;
}

#[tokio::test]
async fn enrollment_tokens_follow_roles_and_tenants() {
    let t = TestEngine::start().await;
    let admin = t.admin_token();
    let mk = |role: &str, tenant: &str| json!({"name": "t", "role": role, "tenant": tenant});
    let mut tokens = Vec::new();
    for (role, tenant) in [("admin", "globex"), ("analyst", "acme")] {
        let body = serde_json::to_vec(&mk(role, tenant)).unwrap();
        let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&admin), Some(&body)).await;
        tokens.push(r.json()["token"].as_str().unwrap().to_string());
    }
    let acme = create_token(&t, json!({"tenant": "acme"})).await;
    let body = serde_json::to_vec(&json!({"tenant": "acme"})).unwrap();
    let path = "/api/v1/enrollment-tokens";
    let r = http_call(t.engine.api_addr, "POST", path, Some(&tokens[0]), Some(&body)).await;
    assert_eq!(r.status, 403, "another tenant's admin cannot enroll into acme: {}", r.body);
    let r = http_call(t.engine.api_addr, "POST", path, Some(&tokens[1]), Some(&body)).await;
    assert_eq!(r.status, 403, "an analyst cannot create enrollment tokens: {}", r.body);
    let r = http_call(t.engine.api_addr, "GET", path, Some(&tokens[0]), None).await;
    assert_eq!(r.json(), json!([]), "globex sees none of acme's tokens");
    let del = format!("{path}/{}", acme["id"].as_str().unwrap());
    let r = http_call(t.engine.api_addr, "DELETE", &del, Some(&tokens[0]), None).await;
    assert_eq!(r.status, 404, "{}", r.body);
    for (bad, field) in [
        (json!({"tenant": "acme", "uses": 0}), "uses"),
        (json!({"tenant": "acme", "ttl": "forever"}), "ttl"),
        (json!({"tenant": "acme", "labels": "env"}), "labels"),
        (json!({"tenant": "../x"}), "tenant"),
        (json!({}), "tenant"),
    ] {
        let body = serde_json::to_vec(&bad).unwrap();
        let r = http_call(t.engine.api_addr, "POST", path, Some(&admin), Some(&body)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.contains(field), "{bad}: {}", r.body);
    }
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_sensor_renews_its_certificate_while_streaming_and_every_event_arrives_once() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("rot-1", "default");
    let old_cert = std::fs::read_to_string(&cfg.cert).unwrap();
    let stats = Arc::new(SensorStats::default());
    let (tx, rx) = mpsc::channel(64);
    let run = tokio::spawn(sensor::run(cfg.clone(), rx, Arc::clone(&stats)));
    const N: i64 = 600;
    let producer = tokio::spawn(async move {
        for n in 0..N {
            tx.send(Event { table: "process_events".into(), row: shadow_cat(n) }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(eventually(Duration::from_secs(10), || stats.frames_acked.load(Ordering::Relaxed) > 5).await);
    let body = serde_json::to_vec(&json!({"renew_certificate": true})).unwrap();
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/sensors/rot-1/commands", Some(&t.admin_token()), Some(&body))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["sent_now"], 1);
    assert!(eventually(Duration::from_secs(10), || stats.renewals.load(Ordering::Relaxed) == 1).await, "renewed");
    producer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), run).await.expect("the sensor finishes").unwrap().unwrap();

    assert_ne!(std::fs::read_to_string(&cfg.cert).unwrap(), old_cert, "a new certificate is installed");
    let mode = std::fs::metadata(&cfg.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let s = t.api("GET", "/api/v1/sensors/rot-1").await.json();
    assert_eq!(s["fingerprints"].as_array().unwrap().len(), 2, "current and previous: {s}");
    assert!(stats.connections.load(Ordering::Relaxed) >= 2, "it reconnected with the new certificate");
    let cmds = t.api("GET", "/api/v1/sensors/rot-1/commands").await.json();
    assert_eq!(cmds[0]["state"], "done", "{cmds}");

    let alerts = t.alerts().await;
    let pids: HashSet<i64> = alerts.iter().map(|a| a["row"]["pid"].as_i64().unwrap()).collect();
    assert_eq!(alerts.len(), N as usize, "every event once, none twice");
    assert_eq!(pids.len(), N as usize);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn an_enrollment_csr_cannot_choose_its_tenant_and_the_token_is_not_spent() {
    let t = TestEngine::start().await;
    let token = create_token(&t, json!({"tenant": "acme"})).await;
    let pin = vedette_actors::registry::normalize_fingerprint(&ca_fingerprint(&t)).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "evil-1");
    params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, "globex");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(tls::enrollment_client_config(&pin).unwrap());
    let conn = ep.connect(t.engine.ingest_addr, "localhost").unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let enroll = vedette_schemas::fleet::Enroll {
        token: token["token"].as_str().unwrap().into(),
        csr,
        sensor_version: None,
        host: None,
    };
    send.write_all(&vedette_schemas::frame::Control::Enroll(enroll).to_frame()).await.unwrap();
    let answer = sensor::read_control(&mut recv).await.unwrap();
    let vedette_schemas::frame::Control::Error(e) = answer else { panic!("expected a refusal, got {answer:?}") };
    assert_eq!(e.code, "enrollment_refused");
    assert!(e.message.contains("tenant (OU) `globex`"), "{e:?}");
    let closed = conn.closed().await;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == 11),
        "{closed}"
    );
    let list = t.api("GET", "/api/v1/enrollment-tokens").await.json();
    assert_eq!(list[0]["used"], 0, "a refused enrollment spends nothing: {list}");
    assert_eq!(t.api("GET", "/api/v1/sensors/evil-1").await.status, 404);
    let refused = t.engine.metrics().ingest_refused.with_label_values(&["enrollment"]).get();
    assert_eq!(refused, 1);
    t.engine.shutdown().await;
}
