//! Analyst tooling and signed packs, through the `vedette` binary and the engine library.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vedette");

const PACK: &str = r#"name: acme
version: 1
description: test pack
author: detection team
rules:
  - id: acme.shadow
    name: shadow read
    severity: high
    sql: |
      SELECT user, cmdline FROM process_events
      WHERE cmdline LIKE '%/etc/shadow%'
"#;

fn vedette(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN).args(args).current_dir(dir).output().expect("run vedette")
}

/// Engine config on loopback with `packs/` under `dir` and extra `[rules]` keys.
fn engine_config(dir: &Path, rules: &str) -> vedette_config::Config {
    let text = format!(
        "data_dir = \"{}\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n[rules]\npacks_dir = \"packs\"\n{rules}\n[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"a.jsonl\"\n",
        dir.display()
    );
    vedette_config::Config::from_toml_str(&text).unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn keys_sign_verify_and_tamper_detection() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("acme.yaml"), PACK).unwrap();
    let o = vedette(&["keys", "generate", "--out", "team"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::fs::metadata(d.path().join("team.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let o = vedette(&["rules", "sign", "acme.yaml", "--key", "team.key"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(d.path().join("acme.yaml.sig").exists());
    let o = vedette(&["rules", "verify", "acme.yaml", "--pubkey", "team.pub"], d.path());
    assert!(o.status.success(), "{}", text(&o));

    // Change only the SQL: the signature no longer verifies.
    std::fs::write(d.path().join("acme.yaml"), PACK.replace("/etc/shadow", "/etc/passwd")).unwrap();
    let o = vedette(&["rules", "verify", "acme.yaml", "--pubkey", "team.pub"], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("does not match the pack contents"), "{}", text(&o));

    // Another key is not trusted.
    vedette(&["keys", "generate", "--out", "other"], d.path());
    std::fs::write(d.path().join("acme.yaml"), PACK).unwrap();
    let o = vedette(&["rules", "verify", "acme.yaml", "--pubkey", "other.pub"], d.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not trusted"), "{}", text(&o));
}

#[test]
fn validate_lists_every_bad_rule_with_its_position() {
    let d = tempfile::tempdir().unwrap();
    let bad = r#"name: bad
version: 1
rules:
  - {id: ok, name: ok, severity: low, sql: "SELECT exe FROM process_events"}
  - {id: fn, name: f, severity: low, sql: "SELECT exe FROM process_events WHERE pid = random()"}
  - {id: tbl, name: t, severity: low, sql: "SELECT exe FROM procs"}
  - {id: col, name: c, severity: low, sql: "SELECT nope FROM process_events"}
"#;
    std::fs::write(d.path().join("bad.yaml"), bad).unwrap();
    let o = vedette(&["rules", "validate", "bad.yaml"], d.path());
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("rule `fn`: function `random` is not allowed in rules (line 1, column 44)"), "{t}");
    assert!(t.contains("rule `tbl`: table `procs` does not exist (line 1, column 17)"), "{t}");
    assert!(t.contains("rule `col`") && t.contains("nope") && t.contains("(line 1, column 8)"), "{t}");
    assert!(t.contains("3 error(s)"), "{t}");
    std::fs::write(d.path().join("good.yaml"), PACK).unwrap();
    assert!(vedette(&["rules", "validate", "good.yaml"], d.path()).status.success());
    std::fs::write(d.path().join("broken.yaml"), "name: x\nversion: one\nrules: []\n").unwrap();
    let o = vedette(&["rules", "validate", "broken.yaml"], d.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("version") && text(&o).contains("broken.yaml:2:10: "), "{}", text(&o));

    // Block style, as packs are written: a YAML mistake and a SQL mistake in one answer, each
    // at its line and column in the file, with no position counted inside the SQL.
    let block = "name: two\nversion: 1\nrules:\n  - id: typo\n    name: t\n    severity: lo\n    sql: SELECT exe FROM process_events\n  - id: sql\n    name: s\n    severity: low\n    sql: |\n      SELECT exe\n      FROM process_events\n      WHERE pid = 1 AN uid = 0\n";
    std::fs::write(d.path().join("two.yaml"), block).unwrap();
    let o = vedette(&["rules", "validate", "two.yaml"], d.path());
    let t = text(&o);
    assert!(t.contains("two.yaml:6:5: rule `typo`: rules[0].severity: unknown variant `lo`"), "{t}");
    assert!(t.contains("two.yaml:14:21: rule `sql`: ") && t.contains("found: AN"), "{t}");
    assert!(!t.contains("Line:") && !t.contains("ParserError"), "{t}");
    assert!(t.contains("2 error(s)"), "{t}");
}

#[test]
fn rules_test_prints_one_stable_json_line_per_alert_and_reports_bad_events() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("acme.yaml"), PACK).unwrap();
    let events = concat!(
        r#"{"ts": "2026-01-01T00:00:00Z", "user": "root", "cmdline": "cat /etc/shadow", "sensor_id": "web-1"}"#,
        "\n",
        r#"{"ts": 1767225601000000, "user": "bob", "cmdline": "ls"}"#,
        "\n",
        "\n",
        r#"{"ts": 1767225602000000, "user": "eve", "cmdline": "cp /etc/shadow /tmp"}"#,
        "\n",
    );
    std::fs::write(d.path().join("events.jsonl"), events).unwrap();
    let o = vedette(&["rules", "test", "acme.yaml", "--events", "events.jsonl"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["rule_id"], "acme.shadow");
    assert_eq!(lines[0]["sensor_id"], "web-1");
    assert_eq!(lines[0]["ts"], "2026-01-01T00:00:00Z");
    assert_eq!(lines[0]["row"], serde_json::json!({"user": "root", "cmdline": "cat /etc/shadow"}));
    assert_eq!(lines[1]["row"]["user"], "eve");
    // Same input, same output (analysts diff it in CI).
    let again = vedette(&["rules", "test", "acme.yaml", "--events", "events.jsonl"], d.path());
    assert_eq!(again.stdout, o.stdout);
    assert!(!text(&again).contains("warning"), "{}", text(&again));

    // A misspelt column is ignored by the decoder: the test passes while testing nothing, so
    // it is named, with the lines it is on and the table's real columns.
    std::fs::write(
        d.path().join("typo.jsonl"),
        "{\"ts\": 1, \"user\": \"root\", \"command_line\": \"cat /etc/shadow\"}\n{\"ts\": 2, \"command_line\": \"id\"}\n",
    )
    .unwrap();
    let o = vedette(&["rules", "test", "acme.yaml", "--events", "typo.jsonl"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("typo.jsonl:1: warning: `command_line` is not a column of `process_events`: ignored in 2 event(s) (lines 1, 2)"),
        "{t}"
    );
    assert!(t.contains("cmdline") && !t.contains("__seq"), "{t}");

    std::fs::write(d.path().join("bad.jsonl"), "{\"ts\": 1, \"pid\": \"x\"}\n\nnot json\n").unwrap();
    let o = vedette(&["rules", "test", "acme.yaml", "--events", "bad.jsonl"], d.path());
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("bad.jsonl:1: column `pid`: expected int64"), "{t}");
    assert!(t.contains("bad.jsonl:3: invalid JSON"), "{t}");
}

#[tokio::test]
async fn engine_loads_signed_packs_and_refuses_unsigned_or_tampered_ones() {
    let d = tempfile::tempdir().unwrap();
    let packs = d.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    std::fs::write(packs.join("acme.yaml"), PACK).unwrap();
    let config_for = |allow_unsigned: bool| {
        engine_config(d.path(), &format!("trusted_keys = [\"team.pub\"]\nallow_unsigned = {allow_unsigned}"))
    };
    vedette(&["keys", "generate", "--out", "team"], d.path());
    // Unsigned: refused, unless the operator opts out.
    let err = vedette_engine::EngineHandle::start(config_for(false)).await.err().expect("refused").to_string();
    assert!(err.contains("unsigned") && err.contains("acme.yaml.sig"), "{err}");
    let e =
        vedette_engine::EngineHandle::start(config_for(true)).await.expect("allowed when unsigned packs are allowed");
    e.shutdown().await;
    // Signed: loads.
    let o = vedette(&["rules", "sign", "packs/acme.yaml", "--key", "team.key"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let e = vedette_engine::EngineHandle::start(config_for(false)).await.expect("signed pack loads");
    e.shutdown().await;
    // Tampered after signing: refused; the engine comes back with the pack it applied last.
    std::fs::write(packs.join("acme.yaml"), PACK.replace("severity: high", "severity: low")).unwrap();
    let err = refused_at_start(config_for(false), &[("acme", 1), ("builtin-linux", 1)]).await;
    assert!(err.contains("does not match"), "{err}");
}

/// Starts an engine whose packs directory does not apply: it must come back with the set
/// applied last (`expected` packs) and report why. Returns the reported error.
async fn refused_at_start(config: vedette_config::Config, expected: &[(&str, u32)]) -> String {
    let e = vedette_engine::EngineHandle::start(config).await.expect("starts on the applied set");
    let status = e.rules_status().await;
    e.shutdown().await;
    let expected: Vec<(String, u32)> = expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    assert_eq!(status.packs, expected);
    status.last_error.expect("the refusal is reported")
}

#[tokio::test]
async fn pack_versions_only_go_up_and_a_version_is_immutable() {
    let d = tempfile::tempdir().unwrap();
    let packs = d.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    let config = || engine_config(d.path(), "allow_unsigned = true");
    let write = |text: &str| std::fs::write(packs.join("acme.yaml"), text).unwrap();
    write(PACK);
    vedette_engine::EngineHandle::start(config()).await.expect("v1 applies").shutdown().await;
    // Same version, other contents: refused (and the engine keeps refusing until bumped).
    write(&PACK.replace("/etc/shadow", "/etc/gshadow"));
    let v1 = [("acme", 1), ("builtin-linux", 1)];
    let err = refused_at_start(config(), &v1).await;
    assert!(err.contains("version 1) was applied with other contents"), "{err}");
    write(&PACK.replace("version: 1", "version: 0"));
    let err = refused_at_start(config(), &v1).await;
    assert!(err.contains("lower than the applied version 1"), "{err}");
    write(&PACK.replace("version: 1", "version: 2").replace("/etc/shadow", "/etc/gshadow"));
    vedette_engine::EngineHandle::start(config()).await.expect("v2 applies").shutdown().await;
    // A rule id owned by another pack is a conflict naming both packs.
    std::fs::write(packs.join("zeta.yaml"), PACK.replace("name: acme", "name: zeta")).unwrap();
    let err = refused_at_start(config(), &[("acme", 2), ("builtin-linux", 1)]).await;
    assert!(err.contains("acme.shadow") && err.contains("`acme`") && err.contains("`zeta`"), "{err}");
}

#[test]
fn rules_test_runs_multi_table_packs_with_the_configs_tables_and_reference_tables() {
    let d = tempfile::tempdir().unwrap();
    let pack = r#"name: multi
version: 1
rules:
  - {id: m.ioc, name: ioc, severity: high, sql: "SELECT exe FROM process_events WHERE sha256 IN (SELECT sha256 FROM ioc)"}
  - {id: m.dns, name: dns, severity: low, sql: "SELECT query FROM dns_events WHERE query LIKE '%.evil'"}
  - {id: m.brute, name: brute, severity: medium, sql: "SELECT user, count(*) AS n FROM auth_events WHERE outcome = 'failure' GROUP BY hop(ts, INTERVAL '30 seconds', INTERVAL '1 minute'), user HAVING count(*) >= 2"}
"#;
    std::fs::write(d.path().join("multi.yaml"), pack).unwrap();
    std::fs::write(d.path().join("ioc.csv"), "sha256\nbad1\n").unwrap();
    let config = format!(
        "data_dir = \"{}\"\n[[tables]]\nname = \"dns_events\"\ncolumns = {{ query = \"string\" }}\n[[reference_tables]]\nname = \"ioc\"\npath = \"ioc.csv\"\ncolumns = {{ sha256 = \"string\" }}\n",
        d.path().display()
    );
    std::fs::write(d.path().join("vedette.toml"), config).unwrap();
    // Without the config the custom and reference tables are unknown.
    let o = vedette(&["rules", "validate", "multi.yaml"], d.path());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("`ioc`") || text(&o).contains("ioc"), "{}", text(&o));
    let o = vedette(&["rules", "validate", "multi.yaml", "--config", "vedette.toml"], d.path());
    assert!(o.status.success(), "{}", text(&o));

    let events = [
        r#"{"_table": "process_events", "ts": 1, "exe": "/tmp/a", "sha256": "bad1"}"#,
        r#"{"_table": "process_events", "ts": 2, "exe": "/tmp/b", "sha256": "good"}"#,
        r#"{"_table": "dns_events", "ts": 3, "query": "c2.evil"}"#,
        r#"{"_table": "auth_events", "ts": "2026-01-01T00:00:40Z", "user": "u", "outcome": "failure"}"#,
        r#"{"_table": "auth_events", "ts": "2026-01-01T00:00:50Z", "user": "u", "outcome": "failure"}"#,
    ];
    std::fs::write(d.path().join("events.jsonl"), events.join("\n")).unwrap();
    let o = vedette(&["rules", "test", "multi.yaml", "--events", "events.jsonl", "--config", "vedette.toml"], d.path());
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<(String, String)> =
        lines.iter().map(|l| (l["rule_id"].as_str().unwrap().into(), l["window_start"].to_string())).collect();
    assert_eq!(
        summary,
        [
            ("m.brute".to_string(), "\"2026-01-01T00:00:00Z\"".to_string()),
            ("m.brute".to_string(), "\"2026-01-01T00:00:30Z\"".to_string()),
            ("m.dns".to_string(), "null".to_string()),
            ("m.ioc".to_string(), "null".to_string()),
        ]
    );
    assert_eq!(lines[3]["row"]["exe"], "/tmp/a");

    // A line without its table, or naming an unknown one, is reported with its line number.
    std::fs::write(d.path().join("bad.jsonl"), "{\"ts\": 1}\n{\"_table\": \"nope\", \"ts\": 1}\n").unwrap();
    let o = vedette(&["rules", "test", "multi.yaml", "--events", "bad.jsonl", "--config", "vedette.toml"], d.path());
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("bad.jsonl:1: the pack reads several tables"), "{t}");
    assert!(t.contains("bad.jsonl:2: unknown table `nope`"), "{t}");
}
