//! The `vedette` binary as an operator uses it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

#[test]
fn validate_reports_every_problem_with_its_key_path_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[ingest]\nlisten = \"nowhere\"\n[pipeline]\nbatch_rows = 0\n[[sinks]]\nname = \"x\"\ntype = \"telegram\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["validate", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest.listen"), "{err}");
    assert!(err.contains("sinks[0].type"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[api]\nlisten = \"127.0.0.1:9999\"\n").unwrap();
    let out = Command::new(BIN).args(["validate", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_finds_in_one_pass_what_serve_refuses_and_serve_writes_nothing_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("vedette.toml");
    // Bad values, a cross-key problem, and files that are missing or wrong, all at once.
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{}"
[ingest]
max_frame_bytes = "big"
heartbeat_interval = "10s"
idle_timeout = "5s"
ca_cert = "pki/ca.pem"
[rules]
trusted_keys = ["keys/team.pub"]
packs_dir = "packs"
[[reference_tables]]
name = "iocs"
path = "iocs.csv"
columns = {{ sha256 = "string" }}
[[sinks]]
name = "hook"
type = "webhook"
url = "https://127.0.0.1:9/hook"
tls_ca = "siem-ca.pem"
"#,
            data.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(BIN).args(args).arg("--config").arg(&config).envs(env.iter().copied()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["validate"], &[("VEDETTE__API__LISTEN", "notanaddr")]);
    assert_eq!(code, Some(1), "{err}");
    for key in [
        "api.listen",
        "ingest.max_frame_bytes",
        "ingest.idle_timeout",
        "ingest.ca_cert",
        "ingest.server_cert",
        "rules.trusted_keys[0]",
        "reference_tables[0].path",
        "rules.packs_dir",
        "sinks[0].tls_ca",
    ] {
        assert!(err.contains(&format!("  - {key}: ")), "{key} missing in:\n{err}");
    }
    // Relative paths are inside the data dir, and the message says which file was looked for.
    assert!(err.contains(&data.join("keys/team.pub").display().to_string()), "{err}");
    assert!(!data.exists(), "validate wrote to the data dir");

    // serve refuses the same config before creating anything (no development CA, no state).
    let (code, err) = run(&["serve"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("ingest.ca_cert") && err.contains("rules.trusted_keys[0]"), "{err}");
    assert!(!data.exists(), "serve wrote to the data dir before refusing its config");

    // A pack that does not compile, on a fresh data dir: validate names the file and the rule,
    // serve refuses it before writing.
    std::fs::create_dir_all(dir.path().join("packs")).unwrap();
    std::fs::write(
        dir.path().join("packs/local.yaml"),
        "name: local\nversion: 1\nrules:\n  - id: local.bad\n    name: Bad\n    severity: low\n    sql: SELECT * FROM process_events WHERE nosuchcolumn = 1\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[rules]\nallow_unsigned = true\npacks_dir = \"{}\"\n",
            data.display(),
            dir.path().join("packs").display()
        ),
    )
    .unwrap();
    let (code, err) = run(&["validate"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rules.packs_dir") && err.contains("local.yaml") && err.contains("local.bad"), "{err}");
    assert!(err.contains("nosuchcolumn"), "{err}");
    assert!(err.contains("warning: rules.allow_unsigned"), "{err}");
    let (code, err) = run(&["serve"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("local.bad"), "{err}");
    assert!(!data.exists(), "serve wrote to the data dir before refusing its packs");
}

#[test]
fn serve_with_no_config_runs_the_demo_and_shuts_down_gracefully_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve = serve(dir.path(), quic, http, &[], &[], true);
    let sensor = demo_sensor(dir.path(), quic);
    assert!(sensor.status.success(), "{}", String::from_utf8_lossy(&sensor.stderr));
    // Sinks deliver from their spools, a moment after the frames were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alerts = loop {
        let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap_or_default();
        if alerts.lines().count() >= 10 || Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(alerts.lines().count(), 10, "{alerts}");
    // `vedette top --once`: the three sections, with what the demo sensor did.
    let (ok, top) = vedette_cmd(dir.path(), http, "top", &["--once", "--interval", "300ms"]);
    assert!(ok, "{top}");
    assert!(top.contains("TABLE") && top.contains("EVENTS/S") && top.contains("RULE") && top.contains("SINK"), "{top}");
    let row = top.lines().find(|l| l.starts_with("process_events ")).expect("a row per table");
    let events: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(events > 0.0, "the demo's events are counted: {top}");
    assert!(top.lines().any(|l| l.starts_with("alerts_file ") && l.contains(" ok ")), "{top}");
    // Listings align: every row's second column starts where its header does.
    let (_, list) = vedette_cmd(dir.path(), http, "rules", &["list"]);
    let col = list.lines().next().unwrap().find("PACK").unwrap();
    assert!(
        list.lines().skip(1).take_while(|l| !l.starts_with('*')).all(|l| l[col..].starts_with("builtin")),
        "{list}"
    );
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    let status = serve.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut stdout = String::new();
    serve.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert_eq!(stdout.lines().filter(|l| l.contains("linux.")).count(), 10, "{stdout}");
    let mut stderr = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("Shutdown complete."), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes in logs that go to a pipe: {stderr}");
}

/// `vedette sensor --demo --no-proc` against the engine on `quic`, to completion.
const ACME: &str = "name: acme\nversion: VERSION\ndescription: d\nauthor: a\nrules:\n  - id: acme.shadow\n    name: shadow\n    severity: high\n    sql: SELECT user FROM process_events WHERE cmdline LIKE '%/etc/shadow%'\n";
const PASSWD: &str = "  - id: acme.passwd\n    name: passwd\n    severity: low\n    sql: SELECT user FROM process_events WHERE cmdline LIKE '%/etc/passwd%'\n";
const BROKEN: &str = "  - id: acme.broken\n    name: broken\n    severity: low\n    sql: SELECT user FROM process_events WHERE no_such_column = 1\n";

#[test]
fn rules_apply_list_enable_disable_and_sighup_against_a_running_engine() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    let write = |version: u32, extra: &str| {
        let text = ACME.replace("VERSION", &version.to_string()) + extra;
        std::fs::write(packs.join("acme.yaml"), text).unwrap();
    };
    write(1, "");
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let rules = [("VEDETTE__RULES__PACKS_DIR", "\"packs\""), ("VEDETTE__RULES__ALLOW_UNSIGNED", "true")];
    let mut serve = serve(dir.path(), quic, http, &rules, &[], false);
    let (ok, list) = vedette_api(dir.path(), http, &["list"]);
    assert!(ok, "{list}");
    assert!(list.lines().any(|l| l.starts_with("acme.shadow") && l.contains(" enabled")), "{list}");
    assert!(list.contains("linux.ssh_bruteforce"), "{list}");

    write(2, PASSWD);
    let (ok, out) = vedette_api(dir.path(), http, &["apply"]);
    assert!(ok, "{out}");
    assert!(out.contains("acme v2") && out.contains("1 planned"), "{out}");

    let (ok, out) = vedette_api(dir.path(), http, &["disable", "acme.shadow"]);
    assert!(ok, "{out}");
    let (_, list) = vedette_api(dir.path(), http, &["list"]);
    assert!(list.lines().any(|l| l.starts_with("acme.shadow") && l.contains("disabled*")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("acme.passwd") && l.contains(" enabled")), "{list}");
    let (ok, out) = vedette_api(dir.path(), http, &["enable", "acme.nope"]);
    assert!(!ok && out.contains("no applied rule has the id `acme.nope`"), "{out}");

    // A broken pack: `rules apply` fails naming the rule; SIGHUP is refused the same way.
    write(3, &format!("{PASSWD}{BROKEN}"));
    let (ok, out) = vedette_api(dir.path(), http, &["apply"]);
    assert!(!ok && out.contains("acme.broken") && out.contains("no_such_column"), "{out}");
    // Located in the pack file: the 4th rule's `sql:` line, at the column.
    assert!(out.contains("pack `acme` line 17, column 48: rule `acme.broken`: ") && !out.contains("(line 1,"), "{out}");
    write(4, "");
    assert!(Command::new("kill").args(["-HUP", &serve.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = vedette_api(dir.path(), http, &["list"]);
        if !list.contains("acme.passwd") {
            assert!(!list.contains("last apply refused"), "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not apply acme v4: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    assert!(serve.wait().unwrap().success());
}

/// The status codes of `n` quick calls of the API with `token`, one connection each.
fn statuses(http: u16, token: &str, n: usize) -> Vec<u16> {
    use std::io::Write;
    (0..n)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap_or_else(|e| panic!("call {i}: {e}"));
            write!(
                c,
                "GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).unwrap();
            answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
        })
        .collect()
}

#[test]
fn reload_applies_what_can_change_live_all_at_once_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "sha256\naaa\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), "sha256\nbbb\nccc\n").unwrap();
    let config = dir.path().join("vedette.toml");
    let write = |csv: &str, rate: u32, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[api]\nrate_limit_per_sec = {rate}\nrate_limit_burst = {rate}\n[history]\nmax_age = \"30d\"\n{extra}\
                 [[reference_tables]]\nname = \"iocs\"\npath = \"{csv}\"\ncolumns = {{ sha256 = \"string\" }}\n"
            ),
        )
        .unwrap()
    };
    write("a.csv", 1000, "");
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let args = ["--config", config.to_str().unwrap(), "--log-format", "json"];
    let mut serve = KillOnDrop(serve(dir.path(), quic, http, &[], &args, true));
    // The engine's log, read as it comes (a pipe nobody reads would fill up).
    let log = {
        let mut stderr = serve.0.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
    };
    let rows = || {
        let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["list", "-o", "json"]);
        assert!(ok, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["rows"].as_u64().unwrap()
    };
    assert_eq!(rows(), 1);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();

    // Live keys: applied together, and named.
    write(
        "b.csv",
        1000,
        "[log]\nlevel = \"warn\"\n[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"archive.jsonl\"\n",
    );
    let (ok, out) = vedette_cmd(dir.path(), http, "reload", &[]);
    assert!(ok, "{out}");
    assert!(out.contains("changed: log.level, reference_tables[0].path, sinks[alerts_file], sinks[archive]"), "{out}");
    // The default sinks give way to the configured one.
    assert!(out.contains("sinks added: archive\nsinks removed: stdout, alerts_file"), "{out}");
    let (_, list) = vedette_cmd(dir.path(), http, "sinks", &["list", "-o", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert!(list.iter().any(|s| s["name"] == "archive" && s["removed"] == false), "{list:?}");
    assert_eq!(rows(), 2, "the new file's rows are in use");
    let (_, list) = vedette_cmd(dir.path(), http, "reference", &["list"]);
    assert!(list.contains("b.csv"), "the table's file is the new one: {list}");

    // A key that needs a restart, beside a live change: nothing is applied; the keys named.
    write("a.csv", 1000, "[log]\nformat = \"json\"\n");
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("30d", "7d")).unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "reload", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("history.max_age: changes only with a restart"), "{out}");
    assert!(out.contains("log.format: changes only with a restart"), "{out}");
    assert_eq!(rows(), 2, "refused: the reference file in use stays");
    // A bad value: refused, naming it.
    write("a.csv", 0, "");
    let (ok, out) = vedette_cmd(dir.path(), http, "reload", &[]);
    assert!(!ok && out.contains("api.rate_limit_per_sec: must be at least 1"), "{out}");
    // A missing file: refused before anything changes.
    write("missing.csv", 1000, "");
    let (ok, out) = vedette_cmd(dir.path(), http, "reload", &[]);
    assert!(!ok && out.contains("reference_tables[0].path") && out.contains("missing.csv"), "{out}");
    assert_eq!(rows(), 2);

    // Rate limits change live.
    write("b.csv", 2, "");
    let (ok, out) = vedette_cmd(dir.path(), http, "reload", &[]);
    assert!(ok && out.contains("api.rate_limit_per_sec"), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(statuses(http, token, 4)[2..], [429, 429], "the new rate limit applies");

    // SIGHUP does the same.
    write("a.csv", 1000, "");
    assert!(Command::new("kill").args(["-HUP", &serve.0.id().to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rows(), 1, "SIGHUP reloaded the config");
    assert_eq!(statuses(http, token, 5), [200; 5], "the rate limit is back up");
    // `--log-format json`: every log line is a JSON object; reloads and refusals are logged.
    assert!(Command::new("kill").args(["-INT", &serve.0.id().to_string()]).status().unwrap().success());
    serve.0.wait().unwrap();
    let stderr = log.join().unwrap();
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"Config reloaded."), "{stderr}");
    assert!(messages.contains(&"Config reload refused; the running config stays."), "{stderr}");
}

#[test]
fn reference_list_upload_and_reload_against_a_running_engine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ioc.csv"), "sha256,family\naaa,emotet\n").unwrap();
    let config = dir.path().join("vedette.toml");
    std::fs::write(
        &config,
        "[rules]\nbuiltin = true\n[[reference_tables]]\nname = \"ioc_hashes\"\npath = \"ioc.csv\"\n\
         columns = { sha256 = \"string\", family = \"string\" }\n",
    )
    .unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve = serve(dir.path(), quic, http, &[], &["--config", config.to_str().unwrap()], false);
    let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["list"]);
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l.starts_with("ioc_hashes") && l.split_whitespace().nth(1) == Some("1")), "{out}");

    // A bad upload names the line; the file and the rows in use are unchanged.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "sha256,family\nbbb,qakbot\nccc\n").unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["upload", "ioc_hashes", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("ioc_hashes") && out.contains("line 3"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.path().join("ioc.csv")).unwrap(), "sha256,family\naaa,emotet\n");
    let (_, out) = vedette_cmd(dir.path(), http, "reference", &["list"]);
    assert!(out.contains("last reload refused"), "{out}");

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "sha256,family\nbbb,qakbot\nccc,lockbit\n").unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["upload", "ioc_hashes", good.to_str().unwrap()]);
    assert!(ok && out.contains("2 rows uploaded"), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("ioc.csv")).unwrap(),
        std::fs::read(&good).unwrap(),
        "written over the file"
    );

    std::fs::write(dir.path().join("ioc.csv"), "sha256,family\nddd,x\neee,y\nfff,z\n").unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["reload", "ioc_hashes"]);
    assert!(ok && out.contains("3 rows loaded"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "reference", &["reload", "nope"]);
    assert!(!ok && out.contains("nope"), "{out}");
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    assert!(serve.wait().unwrap().success());
}

/// The `SPOOLED` column of `vedette sinks list` for `sink`.
fn spooled(dir: &std::path::Path, http: u16, sink: &str) -> Option<u64> {
    let (ok, out) = vedette_cmd(dir, http, "sinks", &["list", "--output", "json"]);
    assert!(ok, "{out}");
    let sinks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    sinks.iter().find(|s| s["name"] == sink)?["spooled"].as_u64()
}

#[test]
fn spooled_alerts_survive_kill_9_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The destination is down: its directory is a regular file, so every write fails.
    std::fs::write(dir.path().join("siem"), "not a directory").unwrap();
    let config = dir.path().join("vedette.toml");
    std::fs::write(
        &config,
        "[[sinks]]\nname = \"siem\"\ntype = \"file\"\npath = \"siem/alerts.jsonl\"\nretry = { base = \"10ms\", cap = \"100ms\" }\n",
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve1 = serve(dir.path(), quic, http, &[], &args, false);
    let sensor = demo_sensor(dir.path(), quic);
    // Every frame was acknowledged although the destination is down: the alerts are spooled.
    assert!(sensor.status.success(), "{}", String::from_utf8_lossy(&sensor.stderr));
    assert_eq!(spooled(dir.path(), http, "siem"), Some(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = vedette_cmd(dir.path(), http, "sinks", &["list"]);
        if out.contains("degraded: failing") {
            assert!(out.contains("siem/alerts.jsonl"), "the error names the file: {out}");
            let row = out.lines().find(|l| l.starts_with("siem ")).unwrap();
            assert!(row.contains(" degraded "), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "no delivery failure reported: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Readiness: still 200, `degraded`, with the reason; the history sink is fine.
    vedette_actors::sinks::http::ensure_crypto_provider();
    let (code, ready) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let r = reqwest::get(format!("http://127.0.0.1:{http}/health/ready")).await.unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    });
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["sinks"]["siem"]["state"], "degraded", "{ready}");
    assert!(ready["sinks"]["siem"]["reason"].as_str().unwrap().contains("10 alerts spooled"), "{ready}");
    assert_eq!(ready["sinks"]["history"]["state"], "ok", "{ready}");
    let (_, json) = vedette_cmd(dir.path(), http, "sinks", &["list", "-o", "json"]);
    let sinks: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let siem = sinks.iter().find(|s| s["name"] == "siem").unwrap();
    assert!(siem["failed_attempts"].as_u64().unwrap() >= 1 && siem["failing_since"].is_string(), "{siem}");
    assert!(siem["last_success"].is_null() && siem["oldest_spooled_age_secs"].as_f64().unwrap() >= 0.0, "{siem}");
    assert!(Command::new("kill").args(["-9", &serve1.id().to_string()]).status().unwrap().success());
    serve1.wait().unwrap();

    // The destination comes back; a new engine delivers what the killed one spooled.
    std::fs::remove_file(dir.path().join("siem")).unwrap();
    let mut serve2 = serve(dir.path(), quic, http, &[], &args, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while spooled(dir.path(), http, "siem") != Some(0) {
        assert!(Instant::now() < deadline, "spool not drained after restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(dir.path().join("siem/alerts.jsonl")).unwrap();
    let ids: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((text.lines().count(), ids.len()), (10, 10), "every alert once: {text}");
    // The alert history, fed from its own spool, holds the same alerts once too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let history: Vec<String> = loop {
        let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--json", "--limit", "1000"]);
        assert!(ok, "{out}");
        let got: Vec<String> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .collect();
        if got.len() >= 10 || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(history.iter().cloned().collect::<std::collections::BTreeSet<_>>(), ids, "history after kill -9");
    assert_eq!(history.len(), 10, "no alert twice in the history");
    // Dead letters: none here; an unknown sink is named, with the sinks there are.
    let (ok, out) = vedette_cmd(dir.path(), http, "dlq", &["list", "siem"]);
    assert!(ok && out.contains("0 dead letter(s) in `siem`"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "dlq", &["purge", "nope"]);
    assert!(!ok && out.contains("no sink named `nope` (sinks: siem, history)"), "{out}");
    assert!(Command::new("kill").args(["-INT", &serve2.id().to_string()]).status().unwrap().success());
    assert!(serve2.wait().unwrap().success());
}

#[test]
fn tokens_alert_queries_exports_and_tail_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let api = format!("http://127.0.0.1:{http}");
    let mut serve = serve(dir.path(), quic, http, &[], &[], false);
    // Replays the whole history, then follows: no race with the sensor below.
    let mut tail = Command::new(BIN)
        .args(["tail", "--json", "--after", "0", "--api", &api, "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sensor = demo_sensor(dir.path(), quic);
    assert!(sensor.status.success(), "{}", String::from_utf8_lossy(&sensor.stderr));

    // The history holds the demo's alerts once delivered there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alerts = loop {
        let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--json", "--limit", "1000"]);
        assert!(ok, "{out}");
        let lines: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() >= 10 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(alerts.len() >= 10, "{alerts:?}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["export", "--format", "cef"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("CEF:0|")).count(), alerts.len(), "{out}");
    let id = alerts[0]["alert_id"].as_str().unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["get", id]);
    assert!(ok && out.contains(id), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--severity", "urgent"]);
    assert!(!ok && out.contains("severity"), "a bad filter is named: {out}");

    // Triage from the CLI: ack, resolve, reopen; the state shows in query and filters it.
    let other = alerts[1]["alert_id"].as_str().unwrap();
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["ack", id, other, "--note", "on it"]);
    assert!(ok && out.contains("acknowledged 2 alert(s)"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["ack", id]);
    assert!(ok && out.contains("acknowledged 0 alert(s) (1 already were)"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["resolve", other]);
    assert!(ok && out.contains("resolved 1 alert(s)"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--triage", "resolved", "--json"]);
    assert!(ok && out.lines().count() == 1 && out.contains(other), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["query", "--triage", "acknowledged"]);
    assert!(ok && out.trim_end().ends_with("[acknowledged]"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["reopen", other]);
    assert!(ok && out.contains("reopened 1 alert(s)"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["ack", "not-an-id"]);
    assert!(!ok && out.contains("`not-an-id` is not an alert id"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "alerts", &["ack", "00000000-0000-0000-0000-000000000000"]);
    assert!(!ok && out.contains("not in the history"), "{out}");

    // A viewer token: reads, but may not change rules; once revoked, refused.
    let (ok, out) = vedette_cmd(dir.path(), http, "tokens", &["create", "--role", "viewer", "--name", "ops"]);
    assert!(ok, "{out}");
    let viewer = out.lines().next().unwrap().trim().to_string();
    assert!(viewer.starts_with("vdt_"), "{out}");
    let as_viewer = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--api", &api, "--token", &viewer]).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = as_viewer(&["alerts", "query", "--limit", "1"]);
    assert!(ok, "{out}");
    let (ok, out) = as_viewer(&["rules", "disable", "linux.shadow_in_cmdline"]);
    assert!(!ok && out.contains("needs role `analyst`"), "{out}");
    let (ok, out) = as_viewer(&["alerts", "resolve", id]);
    assert!(!ok && out.contains("needs role `analyst`"), "a viewer may not triage: {out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "tokens", &["list"]);
    assert!(ok && out.contains("ops") && out.contains("local-admin"), "{out}");
    let viewer_id = &viewer[4..20];
    let (ok, out) = vedette_cmd(dir.path(), http, "tokens", &["revoke", viewer_id]);
    assert!(ok, "{out}");
    let (ok, out) = as_viewer(&["alerts", "query"]);
    assert!(!ok && out.contains("revoked"), "{out}");

    // tail printed every alert of the history, as JSON lines.
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut tailed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tailed.len() < alerts.len() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            tailed.insert(v["alert_id"].as_str().unwrap().to_string());
        }
    }
    let queried: std::collections::BTreeSet<String> =
        alerts.iter().map(|a| a["alert_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(tailed, queried);
    tail.kill().unwrap();
    let _ = tail.wait();
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    assert!(serve.wait().unwrap().success());
}

#[test]
fn ca_issue_refuses_path_like_ids_and_existing_ids_and_certificates_expire() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    assert!(run(&["ca", "init", "--data-dir", d]).0);
    let ca_key = std::fs::read(dir.path().join("ca/ca.key")).unwrap();
    let ca_cert = std::fs::read(dir.path().join("ca/ca.pem")).unwrap();
    // Tried as a new user would: this used to overwrite the fleet CA's certificate and key.
    let (ok, out) = run(&["ca", "issue", "--data-dir", d, "--sensor-id", "../ca/ca"]);
    assert!(!ok && out.contains("must start with a letter or a digit"), "{out}");
    let (ok, out) = run(&["ca", "issue", "--data-dir", d, "--sensor-id", "a/b"]);
    assert!(!ok && out.contains("contains `/`"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("ca/ca.key")).unwrap(), ca_key, "CA key untouched");
    assert_eq!(std::fs::read(dir.path().join("ca/ca.pem")).unwrap(), ca_cert, "CA certificate untouched");

    let (ok, out) = run(&["ca", "issue", "--data-dir", d, "--sensor-id", "web-01", "--tenant", "acme"]);
    assert!(ok, "{out}");
    let expires = out.lines().find_map(|l| l.strip_prefix("expires: ")).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(expires).unwrap().with_timezone(&chrono::Utc);
    let days = (expires - chrono::Utc::now()).num_days();
    assert!((29..=30).contains(&days), "30-day default, got {days}");
    let key = std::fs::read(dir.path().join("sensors/web-01.key")).unwrap();
    let (ok, out) = run(&["ca", "issue", "--data-dir", d, "--sensor-id", "web-01"]);
    assert!(!ok && out.contains("already exists") && out.contains("--force"), "{out}");
    assert_eq!(std::fs::read(dir.path().join("sensors/web-01.key")).unwrap(), key, "key kept");
    let (ok, out) = run(&["ca", "issue", "--data-dir", d, "--sensor-id", "web-01", "--force", "--days", "2"]);
    assert!(ok, "{out}");
    assert_ne!(std::fs::read(dir.path().join("sensors/web-01.key")).unwrap(), key, "replaced with --force");
}

#[test]
fn sensors_list_show_revoke_and_deregister_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_udp_port(), free_tcp_port());
    let mut serve = serve(dir.path(), quic, http, &[], &[], false);
    assert!(demo_sensor(dir.path(), quic).status.success());
    // The engine sees the sensor's connection end a moment after the process exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["list"]);
        assert!(ok && out.contains("demo-sensor") && out.contains("default"), "{out}");
        if out.contains("offline") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.contains("offline"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["show", "demo-sensor"]);
    assert!(ok && out.contains("\"fingerprints\""), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["revoke", "demo-sensor"]);
    assert!(ok && out.contains("revoked"), "{out}");
    let again = demo_sensor(dir.path(), quic);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains("revoked"), "a revoked sensor stops and says why: {err}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["list", "--status", "revoked", "--json"]);
    assert!(ok && out.lines().count() == 1 && out.contains("demo-sensor"), "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["deregister", "demo-sensor"]);
    assert!(ok, "{out}");
    let (ok, out) = vedette_cmd(dir.path(), http, "sensors", &["show", "demo-sensor"]);
    assert!(!ok && out.contains("no sensor `demo-sensor`"), "{out}");
    assert!(Command::new("kill").args(["-INT", &serve.id().to_string()]).status().unwrap().success());
    assert!(serve.wait().unwrap().success());
}
