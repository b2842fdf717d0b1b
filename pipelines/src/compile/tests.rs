use super::*;
use crate::rule::{RuleDef, Severity};
use crate::window::WindowState;
use arrow::array::RecordBatch;
use vedette_schemas::decode::{Identity as SensorIdentity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};

fn rule(id: &str, sql: &str) -> RuleDef {
    RuleDef { severity: Severity::High, tags: vec!["t1".into()], ..RuleDef::new(id, sql) }
}

fn pack(rules: Vec<RuleDef>) -> Pack {
    Pack { name: "test".into(), version: 3, description: String::new(), author: String::new(), rules }
}

fn batch(table: &str, seq: u64, ndjson: &str) -> RecordBatch {
    let cat = Catalog::builtin();
    let frame = DataFrame { seq, table, encoding: Encoding::Ndjson, payload: ndjson.as_bytes() };
    let id = SensorIdentity { sensor_id: "s-1", tenant: "acme", default_host: Some("h1"), trust_rows: false };
    let d = decode_frame(cat.get(table).unwrap(), &frame, &id, 1000).unwrap();
    assert_eq!(d.rejected, 0, "{:?}", d.errors);
    d.batch.unwrap()
}

fn compiler() -> Compiler {
    Compiler::new(Arc::new(Catalog::builtin())).unwrap()
}

#[tokio::test]
async fn stateless_rule_runs_on_every_batch_with_one_plan() {
    let c = compiler();
    let p = pack(vec![rule("sh", "SELECT exe, cmdline FROM process_events WHERE exe LIKE '%/sh'")]);
    let by_table = c.compile_pack(&p).await.unwrap();
    let rules = TableRules::new(&c, "process_events", by_table["process_events"].clone());
    let now = Utc::now();
    let b1 = batch(
        "process_events",
        1,
        "{\"ts\":1000000,\"exe\":\"/bin/sh\",\"cmdline\":\"sh -c x\"}\n{\"ts\":2,\"exe\":\"/bin/ls\"}\n",
    );
    let b2 = batch("process_events", 2, "{\"ts\":3000000,\"exe\":\"/usr/bin/sh\"}\n");
    let a1 = rules.evaluate(&b1, now).await.alerts;
    let a2 = rules.evaluate(&b2, now).await.alerts;
    assert_eq!(a1.len(), 1);
    assert_eq!(a2.len(), 1);
    let a = &a1[0];
    assert_eq!(a.rule_id, "sh");
    assert_eq!(a.rule_version, 3);
    assert_eq!(a.sensor_id.as_deref(), Some("s-1"));
    assert_eq!(a.tenant.as_deref(), Some("acme"));
    assert_eq!(a.host.as_deref(), Some("h1"));
    assert_eq!(a.ts.timestamp_micros(), 1_000_000);
    assert_eq!(a.row.keys().collect::<Vec<_>>(), ["cmdline", "exe"]);
    assert_eq!(a.row["exe"], "/bin/sh");
    // Same frame again (a replay) gives the same id; another frame a different one.
    let again = rules.evaluate(&b1, Utc::now()).await.alerts;
    assert_eq!(again[0].alert_id, a.alert_id);
    assert_ne!(a2[0].alert_id, a.alert_id);
}

#[tokio::test]
async fn select_star_hides_internal_columns() {
    let c = compiler();
    let p = pack(vec![rule("all", "SELECT * FROM auth_events WHERE outcome = 'failure'")]);
    let by_table = c.compile_pack(&p).await.unwrap();
    let rules = TableRules::new(&c, "auth_events", by_table["auth_events"].clone()).with_clock_skew(None, None);
    let b = batch("auth_events", 7, "{\"ts\":5,\"user\":\"bob\",\"outcome\":\"failure\"}\n");
    let alerts = rules.evaluate(&b, Utc::now()).await.alerts;
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].row.keys().all(|k| !k.starts_with("__")), "{:?}", alerts[0].row);
    assert_eq!(alerts[0].row["user"], "bob");
    assert_eq!(alerts[0].row["ts"], "1970-01-01T00:00:00.000005Z");
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_rule_id() {
    let c = compiler();
    let cases = [
        ("ddl", "DROP TABLE process_events", "only a SELECT"),
        ("two", "SELECT 1 FROM process_events; SELECT 2 FROM process_events", "exactly one SQL statement"),
        ("syntax", "SELEC exe FROM process_events", "rule `syntax`"),
        ("table", "SELECT exe FROM processes", "processes"),
        ("column", "SELECT nope FROM process_events", "nope"),
        ("none", "SELECT 1", "reads no telemetry table"),
        ("join", "SELECT p.exe FROM process_events p JOIN file_events f ON p.pid = f.pid", "several telemetry tables"),
    ];
    for (id, sql, needle) in cases {
        let err = c.compile(&pack(vec![]), &rule(id, sql)).await.unwrap_err().to_string();
        assert!(err.contains(&format!("rule `{id}`")), "{id}: {err}");
        assert!(err.contains(needle), "{id}: {err}");
    }
}

#[tokio::test]
async fn builtin_pack_compiles() {
    let c = compiler();
    let by_table = c.compile_pack(&Pack::builtin()).await.unwrap();
    let tables: Vec<_> = by_table.keys().map(String::as_str).collect();
    assert_eq!(tables, ["auth_events", "file_events", "network_events", "process_events"]);
}

const BRUTE: &str = "SELECT host, user, count(*) AS failures FROM auth_events WHERE outcome = 'failure' \
                     GROUP BY tumble(ts, INTERVAL '1 minute'), host, user HAVING count(*) >= 3";

fn auth(ts_s: i64, user: &str, outcome: &str) -> String {
    format!("{{\"ts\":{},\"user\":\"{user}\",\"outcome\":\"{outcome}\",\"host\":\"h1\"}}\n", ts_s * 1_000_000)
}

async fn windowed(sql: &str) -> (Compiler, TableRules) {
    let c = compiler();
    let p = pack(vec![RuleDef { lateness: Some(std::time::Duration::from_secs(5)), ..rule("brute", sql) }]);
    let by_table = c.compile_pack(&p).await.unwrap();
    let rules = TableRules::new(&c, "auth_events", by_table["auth_events"].clone()).with_clock_skew(None, None);
    (c, rules)
}

fn stored(base: &[u8]) -> crate::window::checkpoint::Stored {
    crate::window::checkpoint::Stored { base: base.to_vec(), log: Vec::new() }
}

async fn feed(rules: &TableRules, seq: u64, rows: &str) -> Vec<Alert> {
    let eval = rules.evaluate(&batch("auth_events", seq, rows), Utc::now()).await;
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    rules.commit(eval.window_updates);
    eval.alerts
}

#[tokio::test]
async fn session_window_spans_first_event_to_last_event_plus_gap() {
    let sql = "SELECT user, count(*) AS failures FROM auth_events WHERE outcome = 'failure' \
               GROUP BY session(ts, INTERVAL '30 seconds'), user HAVING count(*) >= 2";
    let (_c, rules) = windowed(sql).await;
    // alice: 100, 120, 140 s (gaps < 30 s) then 200 s (a new session); bob once.
    let rows = auth(100, "alice", "failure") + &auth(120, "alice", "failure") + &auth(101, "bob", "failure");
    assert!(feed(&rules, 1, &rows).await.is_empty());
    assert!(feed(&rules, 2, &auth(140, "alice", "failure")).await.is_empty());
    // Watermark 195 s (lateness 5 s): alice's session ends at 170 s, bob's at 131 s (one event).
    let a = feed(&rules, 3, &auth(200, "alice", "failure")).await;
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].row["failures"], 3);
    assert_eq!((a[0].window_start.unwrap().timestamp(), a[0].window_end.unwrap().timestamp()), (100, 170));
    assert_eq!(a[0].ts.timestamp(), 170, "a window alert's ts is its end");
    assert!(a[0].row.keys().all(|k| !k.starts_with("__")), "{:?}", a[0].row);
    // The new session [200, 230) is still open; the state survives a checkpoint round trip.
    let keys: Vec<String> = rules.rules().iter().map(|r| r.state_key()).collect();
    let saved = rules.checkpoint(&keys).unwrap();
    let (_c2, restored) = windowed(sql).await;
    restored.restore(|k| saved.iter().find(|(key, _)| key == k).map(|(_, b)| stored(b))).unwrap();
    assert!(feed(&restored, 4, &auth(210, "alice", "failure")).await.is_empty());
    let rest = restored.tick(Utc::now(), true).await;
    assert_eq!(rest.alerts.len(), 1, "{:#?}", rest.alerts);
    let a = &rest.alerts[0];
    assert_eq!((a.window_start.unwrap().timestamp(), a.window_end.unwrap().timestamp()), (200, 240));
    assert_eq!(a.row["failures"], 2);
}

#[tokio::test]
async fn tumbling_window_emits_once_when_the_watermark_passes_its_end() {
    let (_c, rules) = windowed(BRUTE).await;
    // Window [60 s, 120 s): alice fails 3 times across two batches, bob twice.
    let a =
        feed(&rules, 1, &(auth(61, "alice", "failure") + &auth(62, "bob", "failure") + &auth(70, "alice", "failure")))
            .await;
    assert!(a.is_empty());
    let a = feed(
        &rules,
        2,
        &(auth(100, "alice", "failure") + &auth(101, "bob", "failure") + &auth(102, "alice", "success")),
    )
    .await;
    assert!(a.is_empty(), "window still open");
    // Event time 124 s: watermark 119 s (lateness 5 s) — not past 120 s yet.
    assert!(feed(&rules, 3, &auth(124, "carol", "success")).await.is_empty());
    // 126 s: watermark 121 s > window end: the window closes, alice's count is 3.
    let a = feed(&rules, 4, &auth(126, "carol", "success")).await;
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].row["user"], "alice");
    assert_eq!(a[0].row["failures"], 3);
    assert_eq!(a[0].window_start.unwrap().timestamp(), 60);
    assert_eq!(a[0].window_end.unwrap().timestamp(), 120);
    assert!(a[0].row.keys().all(|k| !k.starts_with("__")), "{:?}", a[0].row);
    assert_eq!(
        (a[0].sensor_id.as_deref(), a[0].tenant.as_deref(), a[0].host.as_deref()),
        (Some("s-1"), Some("acme"), Some("h1"))
    );
    assert_eq!(a[0].ts.timestamp(), 120, "a window alert's ts is its end");
    // A late failure for the closed window is counted, not merged.
    assert!(feed(&rules, 5, &auth(90, "alice", "failure")).await.is_empty());
    assert_eq!(rules.late_rows(), [("brute".to_string(), 1)]);
    // End of input closes everything still open.
    let rest = rules.tick(Utc::now(), true).await;
    assert!(rest.alerts.is_empty());
}

#[tokio::test]
async fn uncommitted_window_state_is_not_applied() {
    let (_c, rules) = windowed(BRUTE).await;
    let b =
        batch("auth_events", 1, &(auth(61, "a", "failure") + &auth(62, "a", "failure") + &auth(63, "a", "failure")));
    // Evaluated twice without commit (a retried batch): counted once.
    let _ = rules.evaluate(&b, Utc::now()).await;
    let eval = rules.evaluate(&b, Utc::now()).await;
    rules.commit(eval.window_updates);
    let out = rules.tick(Utc::now(), true).await;
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].row["failures"], 3);
}

#[tokio::test]
async fn aggregating_rule_without_window_is_refused() {
    let c = compiler();
    let err = c
        .compile(&pack(vec![]), &rule("agg", "SELECT user, count(*) FROM auth_events GROUP BY user"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("need an event-time window"), "{err}");
}

#[tokio::test]
async fn window_state_checkpoint_restores_into_a_fresh_worker() {
    let (c, rules) = windowed(BRUTE).await;
    feed(&rules, 1, &(auth(61, "alice", "failure") + &auth(62, "alice", "failure"))).await;
    let key = rules.rules()[0].state_key();
    assert!(key.starts_with("auth_events/brute#"), "{key}");
    let saved = rules.checkpoint(std::slice::from_ref(&key)).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].0, key);
    // A new process: same rule compiled again, state restored from the checkpoint.
    let p = pack(vec![RuleDef { lateness: Some(std::time::Duration::from_secs(5)), ..rule("brute", BRUTE) }]);
    let fresh = TableRules::new(&c, "auth_events", c.compile_pack(&p).await.unwrap()["auth_events"].clone())
        .with_clock_skew(None, None);
    let store: std::collections::HashMap<_, _> = saved.into_iter().collect();
    assert_eq!(fresh.restore(|k| store.get(k).map(|b| stored(b))).unwrap(), 1);
    let a = feed(&fresh, 2, &(auth(70, "alice", "failure") + &auth(130, "x", "success"))).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].row["failures"], 3);
    assert!(WindowState::from_bytes(b"\0\0\0\x09{garbage}").is_err());
}

#[tokio::test]
async fn hot_apply_keeps_state_of_unchanged_rules_and_never_replans_them() {
    let (c, rules) = windowed(BRUTE).await;
    let built = c.plans_built();
    feed(&rules, 1, &(auth(61, "alice", "failure") + &auth(62, "alice", "failure"))).await;
    // Re-applied: same SQL (plan reused, state kept) plus one new stateless rule.
    let brute = RuleDef { lateness: Some(std::time::Duration::from_secs(5)), ..rule("brute", BRUTE) };
    let other = rule("other", "SELECT user FROM auth_events WHERE outcome = 'weird'");
    let p = pack(vec![brute.clone(), other]);
    let all = c.compile_pack(&p).await.unwrap()["auth_events"].clone();
    assert_eq!(c.plans_built(), built + 1, "only the new rule was planned");
    let next = rules.with_rules(all, |_| None).unwrap();
    assert!(next.prune_windows().is_empty());
    let a = feed(&next, 2, &(auth(70, "alice", "failure") + &auth(130, "x", "success"))).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].row["failures"], 3, "state of the unchanged rule carried over");

    // Changed SQL: a new state key; the old state is dropped, nothing leaks into the new one.
    feed(&next, 3, &auth(190, "bob", "failure")).await;
    let changed = RuleDef { sql: BRUTE.replace(">= 3", ">= 1"), ..brute };
    let changed = c.compile(&pack(vec![changed.clone()]), &changed).await.unwrap();
    let after = next.with_rules(vec![Arc::new(changed)], |_| None).unwrap();
    assert_eq!(after.prune_windows().len(), 1);
    let a = feed(&after, 4, &(auth(200, "bob", "failure") + &auth(300, "x", "success"))).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].row["failures"], 1, "the old rule's open window is not merged into the new rule");
}

#[tokio::test]
async fn a_dedup_key_gives_repeats_of_a_detection_one_id_and_must_name_result_columns() {
    let c = compiler();
    let keyed = RuleDef {
        dedup_key: vec!["user".into(), "exe".into()],
        ..rule("k", "SELECT user, exe, cmdline FROM process_events WHERE exe LIKE '%/sh'")
    };
    let by_table = c.compile_pack(&pack(vec![keyed])).await.unwrap();
    let rules = TableRules::new(&c, "process_events", by_table["process_events"].clone());
    let rows = "{\"ts\":1,\"user\":\"root\",\"exe\":\"/bin/sh\",\"cmdline\":\"sh -c a\"}\n\
                {\"ts\":2,\"user\":\"root\",\"exe\":\"/bin/sh\",\"cmdline\":\"sh -c b\"}\n\
                {\"ts\":3,\"user\":\"www\",\"exe\":\"/bin/sh\",\"cmdline\":\"sh -c a\"}\n";
    let a = rules.evaluate(&batch("process_events", 1, rows), Utc::now()).await.alerts;
    let later = rules.evaluate(&batch("process_events", 9, rows), Utc::now()).await.alerts;
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].alert_id, a[1].alert_id, "same user and exe: one detection");
    assert_ne!(a[0].alert_id, a[2].alert_id, "another user");
    assert_eq!(a[0].alert_id, later[0].alert_id, "another frame, same key");

    let err = c
        .compile(
            &pack(vec![]),
            &RuleDef { dedup_key: vec!["pid".into()], ..rule("bad", "SELECT user FROM process_events") },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rule `bad`") && err.contains("dedup_key column `pid`") && err.contains("it has: user"),
        "{err}"
    );

    // Windowed: the key's values and the window start.
    let def = RuleDef {
        lateness: Some(std::time::Duration::from_secs(5)),
        dedup_key: vec!["user".into()],
        ..rule("brute", BRUTE)
    };
    let by_table = c.compile_pack(&pack(vec![def])).await.unwrap();
    let w = TableRules::new(&c, "auth_events", by_table["auth_events"].clone()).with_clock_skew(None, None);
    let rows: String =
        (0..3).map(|i| auth(i, "bob", "failure")).chain((0..4).map(|i| auth(60 + i, "bob", "failure"))).collect();
    let mut alerts = feed(&w, 1, &rows).await;
    alerts.extend(feed(&w, 2, &auth(200, "x", "success")).await);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let meta = RuleMeta { id: "brute".into(), version: 3, ..(*by_table["auth_events"][0].meta).clone() };
    let expect = |start: i64| {
        alert_id("acme", &meta, Identity::Key { values: &[&serde_json::Value::from("bob")], window_start: Some(start) })
    };
    assert_eq!(alerts[0].alert_id, expect(0));
    assert_eq!(alerts[1].alert_id, expect(60_000_000));
}

/// The engine's tree of window checkpoints, in memory.
#[derive(Default)]
struct CheckpointStore(std::collections::BTreeMap<Vec<u8>, Vec<u8>>);

impl CheckpointStore {
    /// Applies writes; returns (bases, deltas) written.
    fn apply(&mut self, writes: Vec<crate::window::checkpoint::WindowWrite>) -> (usize, usize) {
        use crate::window::checkpoint::WindowWrite;
        let (mut bases, mut deltas) = (0, 0);
        for w in writes {
            match w {
                WindowWrite::Put(k, v) => {
                    if k.contains(&0) {
                        deltas += 1
                    } else {
                        bases += 1
                    }
                    self.0.insert(k, v);
                }
                WindowWrite::Remove(k) => {
                    assert!(self.0.remove(&k).is_some(), "removing a delta that is not stored");
                }
            }
        }
        (bases, deltas)
    }

    fn load(&self, key: &str) -> Option<crate::window::checkpoint::Stored> {
        let prefix = crate::window::checkpoint::log_prefix(key);
        let base = self.0.get(key.as_bytes())?.clone();
        let log = self
            .0
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Some(crate::window::checkpoint::Stored { base, log })
    }

    fn logged(&self, key: &str) -> usize {
        let prefix = crate::window::checkpoint::log_prefix(key);
        self.0.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).count()
    }
}

#[tokio::test]
async fn window_checkpoint_log_restores_exactly_the_state_in_memory() {
    let sqls = [
        ("tumble", BRUTE.to_string()),
        (
            "hop",
            "SELECT host, user, count(*) AS failures FROM auth_events WHERE outcome = 'failure' \
             GROUP BY hop(ts, INTERVAL '20 seconds', INTERVAL '1 minute'), host, user HAVING count(*) >= 3"
                .to_string(),
        ),
        (
            "session",
            "SELECT user, count(*) AS failures FROM auth_events WHERE outcome = 'failure' \
             GROUP BY session(ts, INTERVAL '30 seconds'), user HAVING count(*) >= 2"
                .to_string(),
        ),
    ];
    let c = compiler();
    let defs: Vec<RuleDef> = sqls
        .iter()
        .map(|(id, sql)| RuleDef { lateness: Some(std::time::Duration::from_secs(5)), ..rule(id, sql) })
        .collect();
    let p = pack(defs);
    let compiled = c.compile_pack(&p).await.unwrap()["auth_events"].clone();
    let rules = TableRules::new(&c, "auth_events", compiled.clone()).with_clock_skew(None, None);
    let keys: Vec<String> = rules.rules().iter().map(|r| r.state_key()).collect();
    let mut store = CheckpointStore::default();
    let (mut bases, mut deltas, mut alerts) = (0, 0, 0);
    for step in 0..80i64 {
        // Four users fail now and then; time moves 4 s per batch, so windows and sessions close.
        let rows: String = (0..4)
            .map(|u| {
                auth(
                    100 + step * 4 + u,
                    &format!("u{}", (step + u) % 5),
                    if (step + u) % 3 == 0 { "success" } else { "failure" },
                )
            })
            .collect();
        let mut eval = rules.evaluate(&batch("auth_events", step as u64 + 1, &rows), Utc::now()).await;
        assert!(eval.errors.is_empty(), "{:?}", eval.errors);
        let (b, d) = store.apply(rules.checkpoint_updates(&mut eval.window_updates).unwrap());
        (bases, deltas, alerts) = (bases + b, deltas + d, alerts + eval.alerts.len());
        rules.commit(eval.window_updates);
        for key in &keys {
            assert_eq!(rules.window_state(key).unwrap().logged as usize, store.logged(key), "step {step}: {key}");
        }
        if step % 7 == 3 || step == 79 {
            // A restart here: every rule's state is read back from the base and its log.
            let fresh = TableRules::new(&c, "auth_events", compiled.clone()).with_clock_skew(None, None);
            assert_eq!(fresh.restore(|k| store.load(k)).unwrap(), keys.len());
            for key in &keys {
                let (a, b) = (rules.window_state(key).unwrap(), fresh.window_state(key).unwrap());
                assert_eq!(a.states, b.states, "step {step}: {key}");
                assert_eq!(
                    (&a.sensors, a.closed_upto, &a.closed, a.late_rows, a.merged, &a.skewed, a.logged),
                    (&b.sensors, b.closed_upto, &b.closed, b.late_rows, b.merged, &b.skewed, b.logged),
                    "step {step}: {key}"
                );
            }
        }
    }
    assert!(alerts > 10, "windows closed and fired: {alerts}");
    assert!(deltas > 3 * bases, "most batches only log a delta: {deltas} deltas, {bases} bases");
    assert!(bases >= keys.len() + 6, "merges and closes write a new base: {bases}");
}

/// Metrics registered in a plan's nodes (each execution of a node registers its own).
fn registered_metrics(plan: &Arc<dyn ExecutionPlan>) -> usize {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut n = 0;
    plan.apply(|p| {
        n += p.metrics().map_or(0, |m| m.iter().count());
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    n
}

#[tokio::test]
async fn running_rules_again_and_again_leaves_nothing_behind_in_their_plans() {
    let (_c, rules) = windowed(BRUTE).await;
    let c = compiler();
    let p = pack(vec![rule("cat", "SELECT pid FROM process_events WHERE lower(cmdline) LIKE '%shadow%'")]);
    let stateless = TableRules::new(&c, "process_events", c.compile_pack(&p).await.unwrap()["process_events"].clone());
    let plans = |t: &TableRules| -> Vec<Arc<dyn ExecutionPlan>> {
        t.rules()
            .iter()
            .flat_map(|r| {
                let mut v = vec![Arc::clone(&r.plans.plan)];
                v.extend(r.plans.unfiltered.iter().cloned());
                v.extend(r.plans.window.iter().flat_map(|w| w.stages().map(Arc::clone)));
                v
            })
            .collect()
    };
    let count = |t: &TableRules| plans(t).iter().map(registered_metrics).sum::<usize>();
    let before = (count(&rules), count(&stateless));
    let mut fired = 0;
    for seq in 1..=30u64 {
        let t = 60 * seq as i64;
        let rows = auth(t, "a", "failure") + &auth(t + 1, "a", "failure") + &auth(t + 2, "a", "failure");
        fired += feed(&rules, seq, &rows).await.len();
        let row = format!("{{\"ts\":1,\"pid\":{seq},\"cmdline\":\"cat /etc/shadow\"}}\n");
        fired += stateless.evaluate(&batch("process_events", seq, &row), Utc::now()).await.alerts.len();
    }
    assert!(fired >= 50, "the rules ran and fired: {fired}");
    assert_eq!((count(&rules), count(&stateless)), before, "metrics piled up in the long-lived plans");
}
