//! The alert history through the API, over real QUIC and HTTP: alerts from a sensor appear in
//! query, export (each format parses) and the live stream; pages stay stable while alerts keep
//! arriving; the stream resumes with `Last-Event-ID` after a disconnect and after an engine
//! restart, losing nothing and repeating nothing; bad parameters are named; one-time export
//! links (what a browser downloads) work once, for their creator's tenant, while its token is
//! valid.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use vedette_schemas::frame::Control;
use vedette_tests::{RawClient, SseClient, TestEngine, eventually, ndjson_frame, shadow_cat};

/// Sends `rows` shadow reads (ids `from..from+rows`) as one frame `seq` and waits for its ack.
async fn send(t: &TestEngine, sensor: &str, seq: u64, from: i64, rows: i64) {
    let mut c = RawClient::connect(&t.sensor(sensor, "acme"), seq - 1).await.unwrap();
    let mut s = c.data_stream().await;
    let events: Vec<Value> = (from..from + rows).map(shadow_cat).collect();
    s.write_all(&ndjson_frame(seq, "process_events", &events)).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.through >= seq)).await;
}

/// Waits until `n` alerts are durable — what queries and exports read (an appended alert is
/// counted by `size()` a moment before its flush makes it readable).
async fn stored(t: &TestEngine, n: usize) {
    let durable = || t.engine.history().count(None).unwrap_or(0);
    assert!(
        eventually(Duration::from_secs(10), || durable() >= n as u64).await,
        "history has {} of {n} readable",
        durable()
    );
}

fn pids(items: &[Value]) -> Vec<i64> {
    items.iter().map(|i| i["alert"]["row"]["pid"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn query_pages_newest_first_and_stay_stable_while_alerts_arrive() {
    let t = TestEngine::start().await;
    send(&t, "s1", 1, 0, 10).await;
    stored(&t, 10).await;
    let first = t.api("GET", "/api/v1/alerts?limit=4").await.json();
    let items = first["items"].as_array().unwrap();
    assert_eq!(pids(items), [9, 8, 7, 6], "newest first");
    assert!(items[0]["position"].as_u64().unwrap() > items[1]["position"].as_u64().unwrap());
    // New alerts arrive between pages: the next pages continue where the first ended.
    send(&t, "s1", 2, 100, 5).await;
    stored(&t, 15).await;
    let mut seen = pids(items);
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let page = t.api("GET", &format!("/api/v1/alerts?limit=4&cursor={cursor}")).await.json();
        seen.extend(pids(page["items"].as_array().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, (0..10).rev().collect::<Vec<_>>(), "no alert skipped or repeated");
    let newest = t.api("GET", "/api/v1/alerts?limit=1").await.json();
    assert_eq!(pids(newest["items"].as_array().unwrap()), [104]);

    // Filters.
    let r = t.api("GET", "/api/v1/alerts?rule=linux.shadow_in_cmdline&severity=high&sensor=s1&limit=1000").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 15, "{}", r.body);
    let r = t.api("GET", "/api/v1/alerts?sensor=nobody").await;
    assert!(r.json()["items"].as_array().unwrap().is_empty());
    let r = t.api("GET", "/api/v1/alerts?severity=critical").await;
    assert!(r.json()["items"].as_array().unwrap().is_empty(), "shadow reads are high, not critical");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = t.api("GET", &format!("/api/v1/alerts?since={future}")).await;
    assert!(r.json()["items"].as_array().unwrap().is_empty(), "{}", r.body);

    // One alert by id.
    let id = newest["items"][0]["alert"]["alert_id"].as_str().unwrap();
    let one = t.api("GET", &format!("/api/v1/alerts/{id}")).await.json();
    assert_eq!(one["alert"]["alert_id"], id);
    assert_eq!(t.api("GET", "/api/v1/alerts/00000000-0000-0000-0000-000000000000").await.status, 404);
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_the_parameter() {
    let t = TestEngine::start().await;
    for (query, param) in [
        ("severity=urgent", "severity"),
        ("since=yesterday", "since"),
        ("until=2026-02-30T00:00:00Z", "until"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=nope", "cursor"),
        ("sevrity=high", "sevrity"),
    ] {
        let r = t.api("GET", &format!("/api/v1/alerts?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(r.json()["param"], param, "{query}: {}", r.body);
    }
    let r = t.api("GET", "/api/v1/alerts/export?format=pdf").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("format")));
    let r = t.api("GET", "/api/v1/alerts/not-a-uuid").await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("id")));
    // A cursor made for other filters.
    let c = t.api("GET", "/api/v1/alerts?limit=1").await.json()["next_cursor"].clone();
    assert!(c.is_null(), "empty history: no next page");
}

#[tokio::test]
async fn export_streams_every_format_and_each_parses() {
    let t = TestEngine::start().await;
    send(&t, "s1", 1, 0, 3).await;
    stored(&t, 3).await;
    let json = t.api("GET", "/api/v1/alerts/export?format=json").await;
    assert_eq!(json.header("content-type"), Some("application/x-ndjson"));
    let alerts: Vec<Value> = json.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(alerts.len(), 3);
    assert!(alerts.iter().all(|a| a["rule_id"] == "linux.shadow_in_cmdline"));
    let cef = t.api("GET", "/api/v1/alerts/export?format=cef").await.body;
    assert_eq!(cef.lines().filter(|l| l.starts_with("CEF:0|")).count(), 3, "{cef}");
    let stix = t.api("GET", "/api/v1/alerts/export?format=stix").await.body;
    for l in stix.lines() {
        let b: Value = serde_json::from_str(l).unwrap();
        assert_eq!(b["type"], "bundle");
    }
    assert_eq!(stix.lines().count(), 3);
    let ocsf = t.api("GET", "/api/v1/alerts/export?format=ocsf&limit=2").await.body;
    let findings: Vec<Value> = ocsf.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(findings.len(), 2, "limit caps the export");
    assert!(findings.iter().all(|f| f["class_uid"] == 2004));
}

/// A token of `role` for `tenant`, made by the admin.
async fn token(t: &TestEngine, role: &str, tenant: &str) -> (String, String) {
    let body = serde_json::json!({"name": format!("{role}@{tenant}"), "role": role, "tenant": tenant});
    let body = serde_json::to_vec(&body).unwrap();
    let r = vedette_tests::http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&body))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (v["token"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn export_links_work_once_for_their_creators_tenant_while_its_token_is_valid() {
    let t = TestEngine::start().await;
    send(&t, "s1", 1, 0, 4).await;
    let mut c = RawClient::connect(&t.sensor("o1", "other"), 0).await.unwrap();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "process_events", &[shadow_cat(100), shadow_cat(101)])).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.through >= 1)).await;
    stored(&t, 6).await;
    let addr = t.engine.api_addr;
    let (viewer, viewer_id) = token(&t, "viewer", "acme").await;
    let call = |method: &'static str, path: String, token: Option<String>| async move {
        vedette_tests::http_call(addr, method, &path, token.as_deref(), None).await
    };

    // A link: made with a token, used without one, once.
    let r = call("POST", "/api/v1/alerts/export/links?format=cef".into(), Some(viewer.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let link = r.json();
    assert_eq!(link["filename"], "vedette-alerts.cef");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("/api/v1/alerts/export/download/"), "{url}");
    let got = call("GET", url.clone(), None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.header("content-disposition"), Some("attachment; filename=\"vedette-alerts.cef\""));
    let lines: Vec<&str> = got.body.lines().collect();
    assert_eq!(lines.len(), 4, "the creator's tenant only: {}", got.body);
    assert!(lines.iter().all(|l| l.starts_with("CEF:0|") && !l.contains("#10")), "{}", got.body);
    let again = call("GET", url, None).await;
    assert_eq!(again.status, 404, "a link works once: {}", again.body);
    assert!(again.body.contains("create a new one"), "{}", again.body);

    // The filters and the limit are the export's; a bad one is refused when the link is made.
    let r = call("POST", "/api/v1/alerts/export/links?limit=2".into(), Some(viewer.clone())).await;
    let got = call("GET", r.json()["url"].as_str().unwrap().to_string(), None).await;
    assert_eq!(got.body.lines().count(), 2);
    assert_eq!(got.header("content-disposition"), Some("attachment; filename=\"vedette-alerts.jsonl\""));
    let r = call("POST", "/api/v1/alerts/export/links?tenant=other".into(), Some(viewer.clone())).await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("tenant")), "{}", r.body);
    let r = call("POST", "/api/v1/alerts/export/links?format=pdf".into(), Some(viewer.clone())).await;
    assert_eq!((r.status, r.json()["param"].as_str()), (400, Some("format")), "{}", r.body);

    // Refusals: no token to make one; a made-up link; the creator's token revoked since.
    assert_eq!(call("POST", "/api/v1/alerts/export/links".into(), None).await.status, 401);
    let made_up =
        call("GET", "/api/v1/alerts/export/download/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(), None).await;
    assert_eq!(made_up.status, 404);
    let r = call("POST", "/api/v1/alerts/export/links".into(), Some(viewer.clone())).await;
    let url = r.json()["url"].as_str().unwrap().to_string();
    let revoked = t.api("DELETE", &format!("/api/v1/tokens/{viewer_id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let r = call("GET", url, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
}

async fn collect(sse: &mut SseClient, n: usize) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(e) = sse.next(Duration::from_secs(10)).await else { break };
        assert_eq!(e.event, "alert");
        let a: Value = serde_json::from_str(&e.data).unwrap();
        out.push((e.id.unwrap().parse().unwrap(), a["row"]["pid"].as_i64().unwrap()));
    }
    out
}

#[tokio::test]
async fn the_stream_resumes_after_a_disconnect_and_after_a_restart_without_loss_or_repeats() {
    let t = TestEngine::start().await;
    let token = t.admin_token();
    let mut sse = SseClient::open(t.engine.api_addr, "/api/v1/alerts/stream", &token, None).await;
    send(&t, "s1", 1, 0, 3).await;
    let live = collect(&mut sse, 3).await;
    assert_eq!(live.iter().map(|e| e.1).collect::<Vec<_>>(), [0, 1, 2]);
    let last = live.last().unwrap().0;
    drop(sse);

    // Missed while disconnected.
    send(&t, "s1", 2, 10, 2).await;
    stored(&t, 5).await;
    let mut sse = SseClient::open(t.engine.api_addr, "/api/v1/alerts/stream", &token, Some(&last.to_string())).await;
    let resumed = collect(&mut sse, 2).await;
    assert_eq!(resumed.iter().map(|e| e.1).collect::<Vec<_>>(), [10, 11]);
    assert!(sse.next(Duration::from_millis(300)).await.is_none(), "nothing repeated");
    let last = resumed.last().unwrap().0;
    drop(sse);

    // Missed across a restart (a filtered stream, too).
    send(&t, "s1", 3, 20, 2).await;
    stored(&t, 7).await;
    let t = t.restart().await;
    let mut sse = SseClient::open(
        t.engine.api_addr,
        "/api/v1/alerts/stream?rule=linux.shadow_in_cmdline",
        &t.admin_token(),
        Some(&last.to_string()),
    )
    .await;
    let after_restart = collect(&mut sse, 2).await;
    assert_eq!(after_restart.iter().map(|e| e.1).collect::<Vec<_>>(), [20, 21]);
    send(&t, "s1", 4, 30, 1).await;
    let live = collect(&mut sse, 1).await;
    assert_eq!(live[0].1, 30, "then live alerts");
    let ids: BTreeSet<u64> = after_restart.iter().chain(&live).map(|e| e.0).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|&id| id > last));
}

/// Parses the events of an SSE body.
fn events(body: &str) -> Vec<(String, String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut id = String::new();
            let mut event = String::new();
            let mut data = String::new();
            for line in block.lines() {
                match line.split_once(':') {
                    Some(("id", v)) => id = v.trim().to_string(),
                    Some(("event", v)) => event = v.trim().to_string(),
                    Some(("data", v)) => data.push_str(v.strip_prefix(' ').unwrap_or(v)),
                    _ => {}
                }
            }
            (!data.is_empty()).then_some((id, event, data))
        })
        .collect()
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off_with_a_resume_point_and_loses_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TOTAL: i64 = 12_000;
    let t = TestEngine::start_with(|c| {
        c.history.stream_stall_timeout = Duration::from_secs(1);
        c.alerts.storm_max_per_rule = 0;
    })
    .await;
    let token = t.admin_token();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(t.engine.api_addr).await.unwrap();
    let req = format!("GET /api/v1/alerts/stream HTTP/1.1\r\nHost: l\r\nAuthorization: Bearer {token}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The stream is open (headers sent) before the alerts exist; then the client stops reading.
    let mut head = [0u8; 256];
    let n = s.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    let c = RawClient::connect(&t.sensor("s1", "acme"), 0).await.unwrap();
    for f in 0..(TOTAL / 1000) {
        let mut d = c.data_stream().await;
        let rows: Vec<Value> = (f * 1000..(f + 1) * 1000).map(shadow_cat).collect();
        d.write_all(&ndjson_frame(f as u64 + 1, "process_events", &rows)).await.unwrap();
        d.finish().unwrap();
    }
    stored(&t, TOTAL as usize).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Now read what was queued: alerts, then the cut-off notice, then the end of the response.
    let mut buf = head[..n].to_vec();
    let mut chunk = vec![0u8; 65536];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = vedette_tests::parse_http(&buf).body;
    let evs = events(&body);
    let (last_id, last_event, last_data) = evs.last().cloned().expect("some events");
    assert_eq!(last_event, "cutoff", "the stalled client was cut off");
    let alerts: Vec<&(String, String, String)> = evs.iter().filter(|e| e.1 == "alert").collect();
    assert!((alerts.len() as i64) < TOTAL, "it was cut off before the end ({} alerts)", alerts.len());
    let resume: Value = serde_json::from_str(&last_data).unwrap();
    assert_eq!(resume["resume_after"].to_string(), last_id);
    assert_eq!(alerts.last().map(|a| a.0.clone()).unwrap_or_else(|| "0".into()), last_id, "resume after the last sent");

    // Resuming where it said gets exactly the rest.
    let mut sse = SseClient::open(t.engine.api_addr, "/api/v1/alerts/stream", &token, Some(&last_id)).await;
    let rest = collect(&mut sse, TOTAL as usize - alerts.len()).await;
    let mut pids: Vec<i64> = alerts
        .iter()
        .map(|a| serde_json::from_str::<Value>(&a.2).unwrap()["row"]["pid"].as_i64().unwrap())
        .chain(rest.iter().map(|e| e.1))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len() as i64, TOTAL, "every alert once across the cut");
}
