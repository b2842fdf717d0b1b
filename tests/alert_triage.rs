//! Alert triage and rule trials through the API over real QUIC and HTTP: states with who,
//! when and note; bulk by ids and by filter; counts per tenant; the `triage` filter; the
//! refusals (viewer, other tenant, bad note, neither ids nor filter); the per-minute histogram;
//! validation with positions and a dry run that gives what `vedette rules test` gives.

use std::time::Duration;

use serde_json::{Value, json};
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, TestEngine, eventually, http_call, ndjson_frame, shadow_cat};

async fn send(t: &TestEngine, sensor: &str, tenant: &str, seq: u64, from: i64, rows: i64) {
    let mut c = RawClient::connect(&t.sensor(sensor, tenant), seq - 1).await.unwrap();
    let mut s = c.data_stream().await;
    let events: Vec<Value> = (from..from + rows).map(shadow_cat).collect();
    s.write_all(&ndjson_frame(seq, "process_events", &events)).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.through >= seq)).await;
}

async fn token(t: &TestEngine, role: &str, tenant: &str) -> String {
    let body =
        serde_json::to_vec(&json!({"name": format!("{role}@{tenant}"), "role": role, "tenant": tenant})).unwrap();
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

async fn call(t: &TestEngine, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
    let r = http_call(t.engine.api_addr, method, path, Some(token), bytes.as_deref()).await;
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["alert"]["alert_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn triage_states_counts_bulk_and_refusals() {
    let t = TestEngine::start().await;
    send(&t, "a1", "acme", 1, 0, 6).await;
    send(&t, "o1", "other", 1, 100, 3).await;
    assert!(eventually(Duration::from_secs(10), || t.engine.history().count(None).unwrap_or(0) >= 9).await);
    let admin = t.admin_token();
    let analyst = token(&t, "analyst", "acme").await;
    let viewer = token(&t, "viewer", "acme").await;
    let other_analyst = token(&t, "analyst", "other").await;

    let (_, counts) = call(&t, &analyst, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(counts, json!({"total": 6, "new": 6, "acknowledged": 0, "resolved": 0}));
    let (_, page) = call(&t, &analyst, "GET", "/api/v1/alerts?limit=10", None).await;
    let acme = ids(&page);
    assert_eq!(acme.len(), 6);
    assert!(page["items"][0]["triage"].is_null(), "never triaged: null");

    // One alert, with a note; the record names the token and the time.
    let (s, rec) = call(
        &t,
        &analyst,
        "PUT",
        &format!("/api/v1/alerts/{}/triage", acme[0]),
        Some(json!({"state": "acknowledged", "note": "looking"})),
    )
    .await;
    assert_eq!(s, 200, "{rec}");
    assert_eq!(rec["state"], "acknowledged");
    assert_eq!(rec["note"], "looking");
    assert!(rec["by"].as_str().unwrap().starts_with("analyst@acme ("), "{rec}");
    assert!(rec["at"].as_str().is_some());
    let (_, one) = call(&t, &viewer, "GET", &format!("/api/v1/alerts/{}", acme[0]), None).await;
    assert_eq!(one["triage"]["state"], "acknowledged");
    let (_, counts) = call(&t, &viewer, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(counts["new"], 5);
    assert_eq!(counts["acknowledged"], 1);

    // Refusals: a viewer may not; another tenant's analyst gets 404 (the alert is invisible);
    // bad notes and bodies are named.
    let path = format!("/api/v1/alerts/{}/triage", acme[1]);
    let (s, _) = call(&t, &viewer, "PUT", &path, Some(json!({"state": "resolved"}))).await;
    assert_eq!(s, 403);
    let (s, _) = call(&t, &other_analyst, "PUT", &path, Some(json!({"state": "resolved"}))).await;
    assert_eq!(s, 404);
    let (s, e) = call(&t, &analyst, "PUT", &path, Some(json!({"state": "resolved", "note": "x".repeat(5000)}))).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("note"), "{e}");
    let (s, e) = call(&t, &analyst, "PUT", &path, Some(json!({"state": "closed"}))).await;
    assert_eq!(s, 422, "{e}");
    let (s, _) = call(&t, &analyst, "PUT", "/api/v1/alerts/not-a-uuid/triage", Some(json!({"state": "new"}))).await;
    assert_eq!(s, 400);
    let (s, e) = call(&t, &analyst, "POST", "/api/v1/alerts/triage", Some(json!({"state": "resolved"}))).await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/alerts/triage",
        Some(json!({"state": "resolved", "filter": {"sevrity": "x"}})),
    )
    .await;
    assert_eq!((s, e["param"].as_str()), (400, Some("sevrity")));
    let (s, _) =
        call(&t, &viewer, "POST", "/api/v1/alerts/triage", Some(json!({"state": "resolved", "ids": [acme[1]]}))).await;
    assert_eq!(s, 403);

    // Bulk by ids: another tenant's id counts as unknown and is left alone.
    let (_, other_page) = call(&t, &other_analyst, "GET", "/api/v1/alerts", None).await;
    let other = ids(&other_page);
    let (s, r) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/alerts/triage",
        Some(json!({"state": "resolved", "note": "benign", "ids": [acme[1], acme[2], other[0]]})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((r["matched"].as_u64(), r["changed"].as_u64()), (Some(2), Some(2)));
    assert_eq!(r["unknown"], json!([other[0]]));
    let (_, oc) = call(&t, &other_analyst, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(oc, json!({"total": 3, "new": 3, "acknowledged": 0, "resolved": 0}));

    // The triage filter, and bulk by filter (only the caller's tenant).
    let (_, resolved) = call(&t, &analyst, "GET", "/api/v1/alerts?triage=resolved", None).await;
    let mut got = ids(&resolved);
    got.sort();
    let mut want = vec![acme[1].clone(), acme[2].clone()];
    want.sort();
    assert_eq!(got, want);
    let (_, fresh) = call(&t, &analyst, "GET", "/api/v1/alerts?triage=new", None).await;
    assert_eq!(ids(&fresh).len(), 3);
    let (s, r) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/alerts/triage",
        Some(json!({"state": "acknowledged", "filter": {"triage": "new"}})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!((r["matched"].as_u64(), r["changed"].as_u64()), (Some(3), Some(3)));
    let (_, counts) = call(&t, &analyst, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(counts, json!({"total": 6, "new": 0, "acknowledged": 4, "resolved": 2}));
    let (_, oc) = call(&t, &other_analyst, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(oc["new"], 3, "the other tenant's alerts were not touched");
    let (_, all) = call(&t, &admin, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(all, json!({"total": 9, "new": 3, "acknowledged": 4, "resolved": 2}));
    let (s, _) = call(&t, &analyst, "GET", "/api/v1/alerts/triage?tenant=other", None).await;
    assert_eq!(s, 400, "a tenant-scoped token cannot count another tenant");

    // One alert in a sink format; a bad format is named.
    let r = http_call(
        t.engine.api_addr,
        "GET",
        &format!("/api/v1/alerts/{}/export?format=cef", acme[0]),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("CEF:0|") && r.body.lines().count() == 1, "{}", r.body);
    let (s, e) = call(&t, &viewer, "GET", &format!("/api/v1/alerts/{}/export?format=xml", acme[0]), None).await;
    assert_eq!((s, e["param"].as_str()), (400, Some("format")));
    let (s, _) = call(&t, &other_analyst, "GET", &format!("/api/v1/alerts/{}/export", acme[0]), None).await;
    assert_eq!(s, 404, "another tenant's alert does not exist for them");

    // Reopen.
    let (_, rec) =
        call(&t, &analyst, "PUT", &format!("/api/v1/alerts/{}/triage", acme[1]), Some(json!({"state": "new"}))).await;
    assert_eq!(rec["state"], "new");
    let (_, counts) = call(&t, &analyst, "GET", "/api/v1/alerts/triage", None).await;
    assert_eq!(counts["new"], 1);

    // Triage survives a restart (it lives beside the history), counts too.
    let t = t.restart().await;
    let (_, counts) = call(&t, &t.admin_token(), "GET", "/api/v1/alerts/triage?tenant=acme", None).await;
    assert_eq!(counts, json!({"total": 6, "new": 1, "acknowledged": 4, "resolved": 1}));

    // Every triage change is in the audit log.
    let (_, audit) = call(&t, &t.admin_token(), "GET", "/api/v1/audit?limit=100", None).await;
    let triaged = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["route"].as_str().is_some_and(|r| r.contains("triage")) && e["status"] == 200)
        .count();
    assert_eq!(triaged, 4, "one, two bulk, one reopen: {audit}");

    // The histogram counts them by minute and severity (shadow reads are high).
    let (s, h) = call(&t, &t.admin_token(), "GET", "/api/v1/alerts/histogram?tenant=acme", None).await;
    assert_eq!(s, 200, "{h}");
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 60);
    assert_eq!(buckets.iter().map(|b| b["high"].as_u64().unwrap()).sum::<u64>(), 6);
    assert_eq!(buckets.iter().map(|b| b["critical"].as_u64().unwrap()).sum::<u64>(), 0);
    assert_eq!(h["truncated"], false);
    let (s, e) = call(&t, &t.admin_token(), "GET", "/api/v1/alerts/histogram?bucket=1", None).await;
    assert_eq!((s, e["param"].as_str()), (400, Some("bucket")), "3,600 buckets are too many");
}

#[tokio::test]
async fn rule_validation_points_at_the_error_and_dry_runs_match_rules_test() {
    let t = TestEngine::start().await;
    let analyst = token(&t, "analyst", "acme").await;
    let viewer = token(&t, "viewer", "acme").await;
    let pack = |sql: &str| {
        json!({"name": "draft", "version": 1, "rules": [{"id": "d.rule", "name": "Draft", "severity": "high", "sql": sql}]})
            .to_string()
    };
    let (s, v) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/rules/validate",
        Some(json!({"pack": pack("SELECT exe\nFROM process_events\nWHERE cmdline LIKE '%x%' AN pid > 1")})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(
        (e["rule"].as_str(), e["in"].as_str(), e["line"].as_u64()),
        (Some("d.rule"), Some("sql"), Some(3)),
        "{v}"
    );
    let (_, v) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/rules/validate",
        Some(json!({"pack": pack("SELECT exe\nFROM process_events\nWHERE no_such_column = 1")})),
    )
    .await;
    let e = &v["errors"][0];
    assert!(e["message"].as_str().unwrap().contains("no_such_column"), "{v}");
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(3), Some(7)), "{v}");
    let (_, v) =
        call(&t, &analyst, "POST", "/api/v1/rules/validate", Some(json!({"pack": "name: x\nversion: [\n"}))).await;
    assert_eq!(v["errors"][0]["in"], "pack", "{v}");
    let (_, v) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/rules/validate",
        Some(json!({"pack": pack("SELECT exe FROM process_events")})),
    )
    .await;
    assert_eq!(v, json!({"valid": true, "errors": []}));
    let (s, _) = call(&t, &viewer, "POST", "/api/v1/rules/validate", Some(json!({"pack": pack("SELECT 1")}))).await;
    assert_eq!(s, 403, "trying rules needs an analyst");

    // A dry run gives exactly what `vedette rules test` prints for the same pack and events.
    let sql = "SELECT pid, exe FROM process_events WHERE exe LIKE '%/cat' AND cmdline ILIKE '%SHADOW%'";
    let events: Vec<String> = (0..5)
        .map(|n| shadow_cat(n).to_string())
        .chain([
            json!({"ts": 1_700_000_000_000_010i64, "event_type": "start", "pid": 9, "exe": "/bin/ls", "cmdline": "ls"})
                .to_string(),
        ])
        .collect();
    let events = events.join("\n");
    let (s, r) =
        call(&t, &analyst, "POST", "/api/v1/rules/test", Some(json!({"pack": pack(sql), "events": events}))).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["alerts"].as_array().unwrap().len(), 5, "{r}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), pack(sql)).unwrap();
    std::fs::write(dir.path().join("e.jsonl"), &events).unwrap();
    let cli =
        vedette_engine::rules_cli::test_pack(&dir.path().join("p.yaml"), &dir.path().join("e.jsonl"), None, 1024, None)
            .await
            .unwrap();
    assert!(cli.warnings.is_empty(), "{:?}", cli.warnings);
    assert_eq!(r["alerts"], Value::Array(cli.alerts.unwrap()));
    assert_eq!(r["warnings"], json!([]), "{r}");
    // A misspelt field: the run goes on, and the warning names the field and the line.
    let typo = json!({"ts": 1_700_000_000_000_011i64, "pid": 9, "exe": "/bin/cat", "cmd_line": "cat /etc/SHADOW"});
    let (s, r) =
        call(&t, &analyst, "POST", "/api/v1/rules/test", Some(json!({"pack": pack(sql), "events": typo.to_string()})))
            .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["alerts"], json!([]), "{r}");
    assert_eq!(r["warnings"][0]["line"], 1, "{r}");
    assert!(
        r["warnings"][0]["reason"].as_str().unwrap().contains("`cmd_line` is not a column of `process_events`"),
        "{r}"
    );
    // Malformed events are named by line; nothing else runs.
    let (_, r) = call(
        &t,
        &analyst,
        "POST",
        "/api/v1/rules/test",
        Some(json!({"pack": pack(sql), "events": "{\"pid\": 1}\nnot json"})),
    )
    .await;
    assert_eq!(r["ok"], false);
    let errs = r["event_errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2, "{r}");
    assert!(errs[0]["reason"].as_str().unwrap().contains("ts is required"), "{r}");
    assert_eq!(errs[1]["line"], 2, "{r}");
    assert!(errs[1]["reason"].as_str().unwrap().contains("invalid JSON"), "{r}");
    // The running rules were not touched.
    let (_, rules) = call(&t, &analyst, "GET", "/api/v1/rules", None).await;
    assert!(rules["rules"].as_array().unwrap().iter().all(|r| r["id"] != "d.rule"));
}

/// The next `triage` event of `s` (alerts that arrive meanwhile are skipped).
async fn next_triage(s: &mut vedette_tests::SseClient) -> Value {
    loop {
        let e = s.next(Duration::from_secs(5)).await.expect("a triage event");
        if e.event == "triage" {
            assert!(e.id.is_none(), "triage events are not resumable positions: {e:?}");
            return serde_json::from_str(&e.data).unwrap();
        }
    }
}

fn sorted(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn triage_changes_reach_live_streams_of_their_tenant_only() {
    let t = TestEngine::start().await;
    send(&t, "a1", "acme", 1, 0, 3).await;
    send(&t, "o1", "other", 1, 100, 2).await;
    assert!(eventually(Duration::from_secs(10), || t.engine.history().count(None).unwrap_or(0) >= 5).await);
    let admin = t.admin_token();
    let (acme_analyst, other_analyst) = (token(&t, "analyst", "acme").await, token(&t, "analyst", "other").await);
    let acme_viewer = token(&t, "viewer", "acme").await;
    let (_, page) = call(&t, &acme_analyst, "GET", "/api/v1/alerts?limit=10", None).await;
    let mut acme = ids(&page);
    let (_, page) = call(&t, &other_analyst, "GET", "/api/v1/alerts?limit=10", None).await;
    let mut other = ids(&page);
    let open = |token: String| {
        let addr = t.engine.api_addr;
        async move { vedette_tests::SseClient::open(addr, "/api/v1/alerts/stream", &token, None).await }
    };
    let mut acme_stream = open(acme_viewer).await;
    let mut other_stream = open(other_analyst.clone()).await;
    let mut admin_stream = open(admin.clone()).await;

    // One analyst's acknowledgement reaches every reader of that tenant, and the fleet admin.
    let path = format!("/api/v1/alerts/{}/triage", acme[0]);
    let (s, _) = call(&t, &acme_analyst, "PUT", &path, Some(json!({"state": "acknowledged", "note": "on it"}))).await;
    assert_eq!(s, 200);
    for stream in [&mut acme_stream, &mut admin_stream] {
        let e = next_triage(stream).await;
        assert_eq!((e["state"].as_str(), e["note"].as_str()), (Some("acknowledged"), Some("on it")), "{e}");
        assert_eq!(sorted(&e), [acme[0].clone()]);
        assert!(e["by"].as_str().unwrap().starts_with("analyst@acme ("), "{e}");
    }
    // Another tenant's reader hears only of its own alerts: its next event is its own change.
    let path = format!("/api/v1/alerts/{}/triage", other[0]);
    let (s, _) = call(&t, &other_analyst, "PUT", &path, Some(json!({"state": "acknowledged"}))).await;
    assert_eq!(s, 200);
    assert_eq!(sorted(&next_triage(&mut other_stream).await), [other[0].clone()]);
    assert_eq!(sorted(&next_triage(&mut admin_stream).await), [other[0].clone()]);
    // Setting a state an alert already has changes nothing and announces nothing.
    let (s, _) = call(&t, &other_analyst, "PUT", &path, Some(json!({"state": "acknowledged"}))).await;
    assert_eq!(s, 200);

    // A change by filter across tenants: each reader gets its tenant's part.
    let (s, r) =
        call(&t, &admin, "POST", "/api/v1/alerts/triage", Some(json!({"state": "resolved", "filter": {}}))).await;
    assert_eq!((s, r["changed"].as_u64()), (200, Some(5)), "{r}");
    acme.sort();
    other.sort();
    assert_eq!(sorted(&next_triage(&mut acme_stream).await), acme);
    let e = next_triage(&mut other_stream).await;
    assert_eq!((sorted(&e), e["state"].as_str()), (other.clone(), Some("resolved")), "not the repeat, the bulk change");
    let mut all = [acme.clone(), other.clone()].concat();
    all.sort();
    assert_eq!(sorted(&next_triage(&mut admin_stream).await), all);
}
