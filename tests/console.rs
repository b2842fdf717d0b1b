//! The web console end to end in real headless Chromium (Debian's `chromium` driven through
//! `chromedriver` over WebDriver, both on 127.0.0.1) against a real engine and the demo sensor
//! over QUIC: a wrong token is refused with a clear message; log in; the demo sensor is online;
//! built-in rule alerts arrive live; filter them; another analyst's triage shows in the list
//! and the badge live; export them through a one-time download link; open one; acknowledge it and the unacknowledged badge drops; disable a
//! rule and it stops firing; validate and dry-run a new rule; delivery health; a phone-sized screen; a viewer sees no mutating control and the API
//! refuses them anyway; a revoked token and a stopped engine are announced.
//!
//! Screenshots of each view go to `$CARGO_TARGET_TMPDIR/console-screenshots` (or
//! `VEDETTE_SCREENSHOTS`). `VEDETTE_CHROMEDRIVER` / `VEDETTE_CHROMIUM` point at other binaries.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vedette_engine::sensor::{self, SensorStats};
use vedette_tests::{TestEngine, http_call};

const WAIT: Duration = Duration::from_secs(30);

struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn browser() -> Browser {
    let driver_bin = std::env::var("VEDETTE_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    let chromium = std::env::var("VEDETTE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    for bin in [&driver_bin, &chromium] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: the console tests need Debian's `chromium` and `chromium-driver` \
             (./run-tests.sh installs them; or set VEDETTE_CHROMEDRIVER / VEDETTE_CHROMIUM)"
        );
    }
    let port = free_port();
    let driver = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap().keep();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--window-size=1280,800", format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                let shots = std::env::var("VEDETTE_SCREENSHOTS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
                std::fs::create_dir_all(&shots).unwrap();
                return Browser { client, driver, shots };
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start a Chromium session: {last:?}");
}

impl Browser {
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs JavaScript; returns its value.
    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Waits until `script` (an expression) is truthy; returns its value.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let body = format!("try {{ return ({script}); }} catch (e) {{ return null; }}");
        loop {
            let v = self.js(&body).await;
            if !(v.is_null() || v == Value::Bool(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.js("return document.body.innerText").await;
                panic!("timed out waiting for {what} ({script}); the page says:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    async fn select(&self, css: &str, value: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        el.select_by_value(value).await.unwrap();
    }

    async fn count(&self, css: &str) -> u64 {
        self.js(&format!("return document.querySelectorAll({}).length", json!(css))).await.as_u64().unwrap()
    }

    async fn login(&self, base: &str, token: &str) {
        self.go(&format!("{base}/ui/")).await;
        self.until("the login form", "document.querySelector('#token')").await;
        self.type_into("#token", token).await;
        self.click("form button[type=submit]").await;
    }
}

async fn token(t: &TestEngine, role: &str) -> (String, String) {
    let body = serde_json::to_vec(&json!({"name": format!("console-{role}"), "role": role, "tenant": "*"})).unwrap();
    let r = http_call(t.engine.api_addr, "POST", "/api/v1/tokens", Some(&t.admin_token()), Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (v["token"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
}

/// The demo scenario's events at `now` (µs), with its window-closing event.
async fn demo_round(tx: &mpsc::Sender<sensor::Event>, now: i64) {
    for ev in sensor::demo_scenario("web-1", now) {
        tx.send(ev).await.unwrap();
    }
    tx.send(sensor::demo_closing_event("web-1", sensor::demo_window_closes_at(now))).await.unwrap();
}

const NETCAT: &str = "linux.reverse_shell_netcat";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_fleet_streams_alerts_triages_and_tries_rules() {
    let t = TestEngine::start_with(|c| c.rules.max_clock_ahead = Duration::ZERO).await;
    let base = format!("http://{}", t.engine.api_addr);
    let (viewer, viewer_id) = token(&t, "viewer").await;
    let b = browser().await;

    // A wrong token: a clear message, still on the login page.
    b.login(&base, "vdt_wrong").await;
    let msg = b.until("the refusal", "document.querySelector('#login-error').innerText").await;
    assert!(msg.as_str().unwrap().contains("refused"), "{msg}");
    b.shot("01-login-refused").await;

    // Log in as admin: the alert list is empty, and says so.
    b.login(&base, &t.admin_token()).await;
    b.until("the empty alert list", "document.body.innerText.includes('No alerts match')").await;
    b.until("the live stream", "document.querySelector('#live-status').innerText.includes('live')").await;

    // The demo sensor connects and stays connected (its channel stays open).
    let (tx, rx) = mpsc::channel(1024);
    let stats = Arc::new(SensorStats::default());
    let sensor_task = tokio::spawn(sensor::run(t.sensor("demo-sensor", "default"), rx, stats));
    let t0 = chrono::Utc::now().timestamp_micros();
    demo_round(&tx, t0).await;
    let builtin = vedette_pipelines::rule::Pack::builtin().rules.len() as u64;

    // Alerts arrive live: no reload, no navigation.
    b.until(
        "every built-in rule's alert",
        &format!("document.querySelectorAll('#alert-table tbody tr').length >= {builtin}"),
    )
    .await;
    assert_eq!(b.js("return location.hash").await, "", "the page never navigated");
    b.until("the badge to count them", &format!("document.querySelector('#unack-badge').dataset.count == '{builtin}'"))
        .await;
    b.until("the chart", "document.querySelectorAll('.chart rect').length > 0").await;
    b.shot("02-alerts-live").await;

    // Filter: critical only.
    b.select("select[name=severity]", "critical").await;
    let critical = vedette_pipelines::rule::Pack::builtin()
        .rules
        .iter()
        .filter(|r| r.severity == vedette_pipelines::rule::Severity::Critical)
        .count();
    b.until(
        "only critical alerts",
        &format!(
            "(() => {{ const rows = [...document.querySelectorAll('#alert-table tbody tr')];
                return rows.length == {critical} && rows.every(r => r.innerText.toLowerCase().includes('critical')); }})()"
        ),
    )
    .await;
    b.shot("03-alerts-filtered").await;
    b.select("select[name=severity]", "").await;
    b.until("the whole list again", &format!("document.querySelectorAll('#alert-table tbody tr').length >= {builtin}"))
        .await;

    // Another analyst resolves an alert, then reopens it: the row and the badge follow live.
    let page = t.api("GET", "/api/v1/alerts?limit=2").await.json();
    let other = page["items"].as_array().unwrap().iter().find(|i| i["alert"]["rule_id"] != NETCAT).unwrap();
    let id = other["alert"]["alert_id"].as_str().unwrap().to_string();
    let chip = |state: &str| {
        format!(
            "document.querySelector(\"#alert-table a[href='#/alerts/{id}']\").closest('tr').querySelector('.chip.st-{state}')"
        )
    };
    for (state, badge) in [("resolved", builtin - 1), ("new", builtin)] {
        let body = serde_json::to_vec(&json!({"state": state})).unwrap();
        let path = format!("/api/v1/alerts/{id}/triage");
        let r = http_call(t.engine.api_addr, "PUT", &path, Some(&t.admin_token()), Some(&body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        b.until(&format!("the row to show `{state}`"), &chip(state)).await;
        b.until("the badge to follow", &format!("document.querySelector('#unack-badge').dataset.count == '{badge}'"))
            .await;
    }

    // Export: the console asks for a one-time link and the browser downloads it (no cap, no
    // token in the URL). The link is caught here and fetched without a token.
    b.js("window.__links = []; window.__click = HTMLAnchorElement.prototype.click;
          HTMLAnchorElement.prototype.click = function () { window.__links.push([this.href, this.download]); };
          return null")
        .await;
    b.select("select[aria-label='Export format']", "ocsf").await;
    b.click(".export button").await;
    b.until("the export link", "window.__links.length == 1").await;
    let link = b.js("HTMLAnchorElement.prototype.click = window.__click; return window.__links[0]").await;
    let (href, name) = (link[0].as_str().unwrap(), link[1].as_str().unwrap());
    assert_eq!(name, "vedette-alerts.jsonl");
    let path = &href[href.find("/api/").expect("a path on the engine")..];
    let file = http_call(t.engine.api_addr, "GET", path, None, None).await;
    assert_eq!(file.status, 200, "{}", file.body);
    let stored = t.engine.history().count(None).unwrap();
    assert_eq!(file.body.lines().count() as u64, stored, "every alert");
    assert!(file.body.lines().all(|l| serde_json::from_str::<Value>(l).unwrap()["class_uid"] == 2004));
    assert_eq!(http_call(t.engine.api_addr, "GET", path, None, None).await.status, 404, "once");

    // Open the netcat alert, acknowledge it: the badge drops by one.
    b.click(&format!("#alert-table tr[data-rule='{NETCAT}'] a")).await;
    b.until("the alert detail", "document.querySelector('#alert-detail #row-table')").await;
    let row = b.js("return document.querySelector('#row-table').innerText").await;
    assert!(row.as_str().unwrap().contains("cmdline"), "the triggering row is shown: {row}");
    b.shot("04-alert-detail").await;
    b.type_into("#alert-detail input[aria-label=Note]", "checked with the web team").await;
    b.click("#ack").await;
    b.until("the acknowledged state", "document.querySelector('#alert-detail .chip.st-acknowledged')").await;
    b.until("the badge to drop", &format!("document.querySelector('#unack-badge').dataset.count == '{}'", builtin - 1))
        .await;
    let page = t.api("GET", "/api/v1/alerts?triage=acknowledged").await.json();
    assert_eq!(page["items"][0]["alert"]["rule_id"], NETCAT);
    assert_eq!(page["items"][0]["triage"]["note"], "checked with the web team");
    b.shot("05-alert-acknowledged").await;

    // Keyboard: `g f` goes to the fleet, where the demo sensor is online.
    b.js("document.activeElement && document.activeElement.blur(); return null").await;
    b.client.find(Locator::Css("body")).await.unwrap().send_keys("gf").await.unwrap();
    b.until("the fleet view", "location.hash == '#/fleet'").await;
    b.until(
        "the demo sensor online",
        "document.querySelector(\"#sensor-table tr[data-sensor='demo-sensor'] .chip\").innerText == 'online'",
    )
    .await;
    b.shot("06-fleet").await;
    b.click("#sensor-table tr[data-sensor='demo-sensor'] a").await;
    b.until("the sensor page", "document.querySelector('#sensor-page')").await;
    // Its live tail shows the next events it sends.
    b.until("the tail to connect", "document.querySelector('#h-tail') && document.body.innerText.includes('● live')")
        .await;
    demo_round(&tx, t0 + 1_000_000).await;
    b.until(
        "telemetry in the tail",
        "document.querySelector('#tail') && document.querySelector('#tail').innerText.includes('web-1')",
    )
    .await;
    b.shot("07-sensor").await;

    // Rules: counters, and disabling netcat stops it firing.
    b.go(&format!("{base}/ui/#/rules")).await;
    b.until("the rules", &format!("document.querySelector(\"[data-toggle='{NETCAT}']\")")).await;
    let alerts_before = t.api("GET", &format!("/api/v1/alerts?rule={NETCAT}&limit=1000")).await.json()["items"]
        .as_array()
        .unwrap()
        .len();
    b.click(&format!("[data-toggle='{NETCAT}']")).await;
    b.until("the rule off", &format!("document.querySelector(\"[data-toggle='{NETCAT}']\").innerText == 'off'")).await;
    b.shot("08-rules").await;
    let others_before =
        t.api("GET", "/api/v1/alerts?rule=linux.reverse_shell_dev_tcp&limit=1000").await.json()["items"]
            .as_array()
            .unwrap()
            .len();
    demo_round(&tx, t0 + 2_000_000).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = t.api("GET", "/api/v1/alerts?rule=linux.reverse_shell_dev_tcp&limit=1000").await.json()["items"]
            .as_array()
            .unwrap()
            .len();
        if n > others_before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the other rules fire again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts_after = t.api("GET", &format!("/api/v1/alerts?rule={NETCAT}&limit=1000")).await.json()["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(alerts_after, alerts_before, "a disabled rule does not fire");

    // The editor: a mistake is shown at its line; the fixed rule's dry run shows its alerts.
    b.click("#new-rule").await;
    b.until("the editor", "document.querySelector('#sql')").await;
    b.js("const a = document.querySelector('#sql');
         a.value = \"SELECT exe\\nFROM process_events\\nWHERE cmdline LIKE '%x%' AN pid > 1\";
         a.dispatchEvent(new Event('input', {bubbles: true})); return null")
        .await;
    b.click("#validate").await;
    let problem = b.until("the error", "document.querySelector('#problems .problems li').innerText").await;
    assert!(problem.as_str().unwrap().starts_with("SQL 3:"), "{problem}");
    assert_eq!(b.js("return document.querySelector('.gutter .bad').innerText").await, "3");
    b.shot("09-editor-error").await;
    b.js(
        "const a = document.querySelector('#sql');
         a.value = \"SELECT host, user, pid, exe, cmdline\\nFROM process_events\\nWHERE exe LIKE '%/curl' AND cmdline ILIKE '%--UPLOAD-FILE%'\";
         a.dispatchEvent(new Event('input', {bubbles: true})); return null",
    )
    .await;
    b.click("#validate").await;
    b.until("valid", "document.querySelector('#valid')").await;
    b.click("#dry-run").await;
    b.until("the dry run's alert", "document.querySelectorAll('#dry-run-alerts tbody tr').length == 1").await;
    let hit = b.js("return document.querySelector('#dry-run-alerts').innerText").await;
    assert!(hit.as_str().unwrap().contains("4242"), "the sample's matching event: {hit}");
    b.shot("10-editor-dry-run").await;
    // A misspelt field in the sample is named, not silently ignored.
    b.js("const e = document.querySelector('#events');
         e.value = '{\"ts\": 1, \"exe\": \"/usr/bin/curl\", \"cmd_line\": \"curl --upload-file x\"}';
         e.dispatchEvent(new Event('input', {bubbles: true})); return null")
        .await;
    b.click("#dry-run").await;
    let warning = b.until("the warning", "document.querySelector('#dry-run-warnings li')?.innerText").await;
    assert!(warning.as_str().unwrap().contains("`cmd_line` is not a column of `process_events`"), "{warning}");

    // Delivery.
    b.go(&format!("{base}/ui/#/delivery")).await;
    b.until(
        "the file sink",
        "document.querySelector(\"#sink-table tr[data-sink='file'] .chip\").innerText == 'closed' && \
         document.querySelector(\"#sink-table tr[data-sink='file'] .chip.st-ok\").innerText == 'ok'",
    )
    .await;
    b.until("a delivery rate", "!document.querySelector(\"#sink-table tr[data-sink='file']\").innerText.includes('…')")
        .await;
    b.shot("11-delivery").await;

    // A phone-sized screen: nothing wider than the screen but the tables' own scrollers.
    b.client.set_window_size(390, 844).await.unwrap();
    b.go(&format!("{base}/ui/#/alerts")).await;
    b.until("the alerts", "document.querySelectorAll('#alert-table tbody tr').length > 0").await;
    let overflow = b.js("return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
    assert!(overflow.as_i64().unwrap() <= 0, "the page scrolls sideways on a phone: {overflow}px");
    b.shot("12-phone-alerts").await;
    b.client.set_window_size(1280, 800).await.unwrap();

    // A viewer: no mutating control anywhere, and the API refuses them anyway.
    b.click("header button.link").await; // log out
    b.login(&base, &viewer).await;
    b.until("the alerts", "document.querySelectorAll('#alert-table tbody tr').length > 0").await;
    assert_eq!(b.count("#ack-selected, #alert-table input[type=checkbox]").await, 0);
    b.click("#alert-table tbody tr a").await;
    b.until("the detail", "document.querySelector('#alert-detail')").await;
    assert_eq!(b.count("#ack, #resolve").await, 0, "no triage for a viewer");
    b.go(&format!("{base}/ui/#/rules")).await;
    b.until("the rules", "document.querySelector('#rule-table')").await;
    assert_eq!(b.count("[data-toggle], #new-rule").await, 0, "no rule controls for a viewer");
    b.go(&format!("{base}/ui/#/fleet/demo-sensor")).await;
    b.until("the sensor page", "document.querySelector('#sensor-page')").await;
    assert_eq!(b.count("#revoke").await, 0);
    let refused = b
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const h = {Authorization: 'Bearer ' + sessionStorage.getItem('vedette.token'), 'Content-Type': 'application/json'};
             Promise.all([
               fetch('/api/v1/rules/linux.ssh_root_login/disable', {method: 'POST', headers: h}),
               fetch('/api/v1/alerts/triage', {method: 'POST', headers: h, body: JSON.stringify({state: 'resolved', filter: {}})}),
               fetch('/api/v1/sensors/demo-sensor/revoke', {method: 'POST', headers: h}),
             ]).then(rs => done(rs.map(r => r.status)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!([403, 403, 403]));
    b.shot("13-viewer-sensor").await;

    // The viewer's token is revoked: the console says so at its next call.
    let r =
        http_call(t.engine.api_addr, "DELETE", &format!("/api/v1/tokens/{viewer_id}"), Some(&t.admin_token()), None)
            .await;
    assert_eq!(r.status, 200);
    let banner = b.until("the refused-token banner", "document.querySelector('#trouble').innerText").await;
    assert!(banner.as_str().unwrap().contains("no longer works"), "{banner}");
    b.shot("14-token-revoked").await;

    // The engine goes away: the console says it is unreachable.
    b.click("#trouble button").await;
    b.login(&base, &t.admin_token()).await;
    b.go(&format!("{base}/ui/#/fleet")).await;
    b.until("the fleet", "document.querySelector('#sensor-table')").await;
    drop(tx);
    let _ = tokio::time::timeout(WAIT, sensor_task).await;
    t.engine.shutdown().await;
    let banner = b.until("the unreachable banner", "document.querySelector('#trouble').innerText").await;
    assert!(banner.as_str().unwrap().contains("unreachable"), "{banner}");
    b.shot("15-engine-unreachable").await;
    b.client.clone().close().await.unwrap();
}

/// Sends `rows` shadow reads (pids `from..from+rows`) from sensor `s1` as frame `seq` and
/// waits for the acknowledgement.
async fn shadow_reads(t: &TestEngine, seq: u64, from: i64, rows: i64) {
    use vedette_schemas::frame::Control;
    let mut c = vedette_tests::RawClient::connect(&t.sensor("s1", "acme"), seq - 1).await.unwrap();
    let mut s = c.data_stream().await;
    let events: Vec<Value> = (from..from + rows).map(vedette_tests::shadow_cat).collect();
    s.write_all(&vedette_tests::ndjson_frame(seq, "process_events", &events)).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.through >= seq)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_list_resumes_after_a_network_drop_without_gaps_or_repeats() {
    let t = TestEngine::start().await;
    let relay = vedette_tests::tcp_relay::TcpRelay::start(t.engine.api_addr).await;
    let base = format!("http://{}", relay.addr);
    let b = browser().await;
    b.login(&base, &t.admin_token()).await;
    b.until("the live stream", "document.querySelector('#live-status').innerText.includes('live')").await;
    shadow_reads(&t, 1, 0, 5).await;
    b.until("the first alerts", "document.querySelectorAll('#alert-table tbody tr').length == 5").await;

    // The network drops; alerts keep coming meanwhile.
    relay.cut();
    b.until("the console to notice", "document.querySelector('#live-status').innerText.includes('reconnecting')").await;
    shadow_reads(&t, 2, 100, 7).await;
    assert!(vedette_tests::eventually(WAIT, || t.engine.history().count(None).unwrap_or(0) >= 12).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.count("#alert-table tbody tr").await, 5, "nothing arrives while the network is down");
    b.shot("16-reconnecting").await;

    // Back: the stream resumes after the last alert it saw — every missed alert, once.
    relay.heal();
    b.until("every alert", "document.querySelectorAll('#alert-table tbody tr').length >= 12").await;
    b.until("live again", "document.querySelector('#live-status').innerText.includes('live')").await;
    shadow_reads(&t, 3, 200, 2).await;
    b.until("later alerts too", "document.querySelectorAll('#alert-table tbody tr').length >= 14").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = b
        .js("return [...document.querySelectorAll('#alert-table tbody tr a')].map(a => a.getAttribute('href').split('/').pop())")
        .await;
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    let unique: std::collections::BTreeSet<&String> = shown.iter().collect();
    assert_eq!((shown.len(), unique.len()), (14, 14), "no alert missing or twice: {shown:?}");
    let page = t.api("GET", "/api/v1/alerts?limit=100").await.json();
    let stored: std::collections::BTreeSet<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["alert"]["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(unique.into_iter().cloned().collect::<std::collections::BTreeSet<_>>(), stored);
    b.client.clone().close().await.unwrap();
}
