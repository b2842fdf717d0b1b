//! Identity comes from the certificate: unknown CAs, missing certificates, wrong ALPN and
//! identity claims are refused.

use std::time::Duration;

use serde_json::json;
use vedette_actors::tls;
use vedette_engine::pki;
use vedette_engine::sensor;
use vedette_schemas::frame::{Control, Hello};
use vedette_tests::{RawClient, TestEngine, eventually, hello, ndjson_frame, shadow_cat};

fn refused_count(t: &TestEngine) -> u64 {
    let m = t.engine.metrics();
    m.ingest_refused.with_label_values(&["handshake"]).get() + m.ingest_refused.with_label_values(&["hello"]).get()
}

async fn try_session(t: &TestEngine, client: quinn::ClientConfig) -> Result<Control, String> {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(client);
    let conn = ep.connect(t.engine.ingest_addr, "localhost").unwrap().await.map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&Control::Hello(hello(0)).to_frame()).await.map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), sensor::read_control(&mut recv))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn sensor_with_certificate_from_another_ca_is_refused() {
    let t = TestEngine::start().await;
    let rogue_ca = pki::new_ca("rogue CA").unwrap();
    let rogue = pki::issue_sensor(&rogue_ca, "demo-sensor", "default", 30).unwrap();
    let ca = std::fs::read(t.data_dir().join("ca/ca.pem")).unwrap();
    let client = tls::client_config(&ca, Some((rogue.cert.as_bytes(), rogue.key.as_bytes())), b"vedette/1").unwrap();
    let result = try_session(&t, client).await;
    assert!(result.is_err(), "rogue certificate must not get a WELCOME: {result:?}");
    assert!(eventually(Duration::from_secs(5), || refused_count(&t) >= 1).await);
    assert_eq!(t.engine.sensors_connected(), 0);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn sensor_without_client_certificate_is_refused() {
    let t = TestEngine::start().await;
    let ca = std::fs::read(t.data_dir().join("ca/ca.pem")).unwrap();
    let client = tls::client_config(&ca, None, b"vedette/1").unwrap();
    let result = try_session(&t, client).await;
    assert!(result.is_err(), "no client certificate must not get a WELCOME: {result:?}");
    assert!(eventually(Duration::from_secs(5), || refused_count(&t) >= 1).await);
    assert_eq!(t.engine.sensors_connected(), 0);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn wrong_alpn_is_refused_at_the_handshake() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s1", "default");
    let (ca, cert, key) =
        (std::fs::read(&cfg.ca).unwrap(), std::fs::read(&cfg.cert).unwrap(), std::fs::read(&cfg.key).unwrap());
    let client = tls::client_config(&ca, Some((&cert, &key)), b"h3").unwrap();
    let err = try_session(&t, client).await.unwrap_err();
    assert!(err.to_lowercase().contains("alpn") || err.contains("120") || err.contains("protocol"), "{err}");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn hello_claiming_another_sensor_id_is_refused() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s1", "default");
    let ep = sensor::endpoint(&cfg).unwrap();
    let claim = Hello { sensor_id: Some("someone-else".into()), ..hello(0) };
    let err = sensor::connect(&ep, &cfg, claim).await.err().expect("refused").to_string();
    assert!(err.contains("identity_mismatch") && err.contains("certificate says `s1`"), "{err}");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn rows_claiming_another_sensor_id_are_rejected_and_batch_mates_kept() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s1", "t1");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    assert_eq!(c.session.welcome.sensor_id, "s1");
    assert_eq!(c.session.welcome.tenant, "t1");
    let mut forged = shadow_cat(1);
    forged["sensor_id"] = json!("victim");
    let mut own = shadow_cat(2);
    own["sensor_id"] = json!("s1");
    let mut data = c.data_stream().await;
    data.write_all(&ndjson_frame(1, "process_events", &[forged, own, shadow_cat(3)])).await.unwrap();
    let Control::RowErrors(r) = c.until(|m| matches!(m, Control::RowErrors(_))).await else { unreachable!() };
    assert_eq!((r.seq, r.accepted, r.rejected), (1, 2, 1));
    assert_eq!(r.errors[0].row, 0);
    assert_eq!(r.errors[0].column.as_deref(), Some("sensor_id"));
    assert!(r.errors[0].reason.contains("`victim`"), "{:?}", r.errors[0]);
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|a| a["sensor_id"] == "s1" && a["tenant"] == "t1"));
    t.engine.shutdown().await;
}

/// Only an edge certificate (tenant `vedette-edge`) may forward alerts: a sensor's ALERTS frame
/// is refused by name, consumed, and nothing is spooled; an edge's bad lines are reported per
/// line while its good ones are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_edges_may_forward_alerts_and_bad_lines_are_reported() {
    let t = TestEngine::start().await;
    let mut alert = serde_json::to_value(vedette_pipelines::formats::sample_alert()).unwrap();
    alert["tenant"] = "acme".into();
    let line = serde_json::json!({"alert": alert, "claimed": []}).to_string();
    let frame = |seq: u64, body: &str| {
        let mut out = Vec::new();
        vedette_schemas::frame::encode_alerts(&mut out, seq, body.as_bytes());
        out
    };

    let mut sensor = RawClient::connect(&t.sensor("s-1", "acme"), 0).await.unwrap();
    let mut s = sensor.data_stream().await;
    s.write_all(&frame(1, &format!("{line}\n"))).await.unwrap();
    s.finish().unwrap();
    let Control::Error(e) = sensor.until(|m| matches!(m, Control::Error(_))).await else { unreachable!() };
    assert_eq!((e.code.as_str(), e.seq), ("not_an_edge", Some(1)), "{e:?}");
    assert!(e.message.contains("vedette-edge"), "{e:?}");
    // Nor may a sensor report an edge's rule set.
    let report =
        Control::RulesApplied(vedette_schemas::fleet::RulesApplied { packs: vec![("x".into(), 1)], error: None });
    sensor.session.ctrl_send.write_all(&report.to_frame()).await.unwrap();
    let Control::Error(e) = sensor.until(|m| matches!(m, Control::Error(_))).await else { unreachable!() };
    assert_eq!(e.code, "unexpected_message", "{e:?}");
    let rec = t.api("GET", "/api/v1/sensors/s-1").await.json();
    assert!(rec.get("rules").is_none(), "{rec}");

    let mut edge = RawClient::connect(&t.sensor("edge-9", "vedette-edge"), 0).await.unwrap();
    let mut s = edge.data_stream().await;
    s.write_all(&frame(1, &format!("{line}\nnot json\n{{\"alert\": {{}}}}\n"))).await.unwrap();
    s.finish().unwrap();
    let Control::RowErrors(r) = edge.until(|m| matches!(m, Control::RowErrors(_))).await else { unreachable!() };
    assert_eq!((r.accepted, r.rejected), (1, 2), "{r:?}");
    assert_eq!(r.errors.iter().map(|e| e.row).collect::<Vec<_>>(), [1, 2]);
    edge.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 1, "only the edge's good line: {alerts:?}");
    assert_eq!(alerts[0]["edge"], "edge-9");
    t.engine.shutdown().await;
}
