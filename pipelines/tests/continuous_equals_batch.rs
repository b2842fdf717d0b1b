//! The correctness oracle: continuous evaluation (random batch splits, out-of-order events
//! within the lateness bound, two sensors) produces exactly the alerts of the same SQL run as
//! one batch query over all events — per window for windowed rules.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::RecordBatch;
use chrono::Utc;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use vedette_pipelines::compile::{Compiler, TableRules};
use vedette_pipelines::rule::{Pack, RuleDef};
use vedette_pipelines::values::cell_to_json;
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::Catalog;

const LATENESS_S: i64 = 10;

/// (rule id, continuous SQL, equivalent batch SQL with the window start as first column).
const RULES: &[(&str, &str, &str)] = &[
    (
        "stateless",
        "SELECT host, user, src_ip FROM auth_events WHERE outcome = 'failure' AND user IN ('u1', 'u2')",
        "SELECT host, user, src_ip FROM auth_events WHERE outcome = 'failure' AND user IN ('u1', 'u2')",
    ),
    (
        "brute",
        "SELECT host, user, count(*) AS n FROM auth_events WHERE outcome = 'failure' \
         GROUP BY tumble(ts, INTERVAL '1 minute'), host, user HAVING count(*) >= 3",
        "SELECT tumble(ts, INTERVAL '1 minute') AS w, host, user, count(*) AS n FROM auth_events \
         WHERE outcome = 'failure' GROUP BY tumble(ts, INTERVAL '1 minute'), host, user HAVING count(*) >= 3",
    ),
    (
        "spray",
        "SELECT src_ip, count(DISTINCT user) AS users, min(ts) AS first, max(ts) AS last FROM auth_events \
         GROUP BY tumble(ts, INTERVAL '30 seconds'), src_ip HAVING count(DISTINCT user) > 1",
        "SELECT tumble(ts, INTERVAL '30 seconds') AS w, src_ip, count(DISTINCT user) AS users, min(ts) AS first, \
         max(ts) AS last FROM auth_events GROUP BY tumble(ts, INTERVAL '30 seconds'), src_ip HAVING count(DISTINCT user) > 1",
    ),
    (
        "hopping",
        "SELECT user, count(*) AS n FROM auth_events WHERE outcome = 'failure' \
         GROUP BY hop(ts, INTERVAL '20 seconds', INTERVAL '1 minute'), user HAVING count(*) >= 2",
        "SELECT w, user, count(*) AS n FROM (SELECT unnest(hop_starts(ts, INTERVAL '20 seconds', INTERVAL '1 minute')) AS w, \
         user FROM auth_events WHERE outcome = 'failure') GROUP BY w, user HAVING count(*) >= 2",
    ),
    // Session windows, batch form: a new session starts where the gap to the key's previous
    // event is at least the gap (ties share a session: RANGE frame over peers).
    (
        "session",
        "SELECT user, count(*) AS n, max(ts) AS last FROM auth_events WHERE outcome = 'failure' \
         GROUP BY session(ts, INTERVAL '30 seconds'), user HAVING count(*) >= 3",
        "SELECT min(ts) AS w, user, count(*) AS n, max(ts) AS last FROM ( \
           SELECT ts, user, tenant, sum(brk) OVER (PARTITION BY tenant, user ORDER BY ts) AS sid FROM ( \
             SELECT ts, user, tenant, CASE WHEN arrow_cast(ts, 'Int64') - arrow_cast(lag(ts) OVER \
               (PARTITION BY tenant, user ORDER BY ts), 'Int64') < 30000000 THEN 0 ELSE 1 END AS brk \
             FROM auth_events WHERE outcome = 'failure')) \
         GROUP BY tenant, user, sid HAVING count(*) >= 3",
    ),
    (
        "session_spray",
        "SELECT src_ip, count(DISTINCT user) AS users FROM auth_events \
         GROUP BY session(ts, INTERVAL '20 seconds'), src_ip HAVING count(DISTINCT user) > 2",
        "SELECT min(ts) AS w, src_ip, count(DISTINCT user) AS users FROM ( \
           SELECT ts, user, src_ip, tenant, sum(brk) OVER (PARTITION BY tenant, src_ip ORDER BY ts) AS sid FROM ( \
             SELECT ts, user, src_ip, tenant, CASE WHEN arrow_cast(ts, 'Int64') - arrow_cast(lag(ts) OVER \
               (PARTITION BY tenant, src_ip ORDER BY ts), 'Int64') < 20000000 THEN 0 ELSE 1 END AS brk \
             FROM auth_events)) \
         GROUP BY tenant, src_ip, sid HAVING count(DISTINCT user) > 2",
    ),
];

#[derive(Debug, Clone)]
struct Ev {
    ts_s: i64,
    sensor: u8,
    user: u8,
    ip: u8,
    failure: bool,
}

fn events() -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0i64..400, 0u8..2, 0u8..4, 0u8..3, any::<bool>()), 1..120).prop_map(|v| {
        let mut evs: Vec<Ev> =
            v.into_iter().map(|(ts_s, sensor, user, ip, failure)| Ev { ts_s, sensor, user, ip, failure }).collect();
        evs.sort_by_key(|e| e.ts_s);
        evs
    })
}

/// Out of order, but never by more than the lateness bound.
fn shuffle_within_lateness(mut evs: Vec<Ev>, swaps: &[usize]) -> Vec<Ev> {
    for &i in swaps {
        if i + 1 < evs.len() && evs[i + 1].ts_s - evs[i].ts_s <= LATENESS_S {
            evs.swap(i, i + 1);
        }
    }
    evs
}

fn ndjson(evs: &[Ev]) -> String {
    evs.iter()
        .map(|e| {
            format!(
                "{{\"ts\":{},\"sensor_id\":\"s{}\",\"host\":\"h{}\",\"user\":\"u{}\",\"src_ip\":\"10.0.0.{}\",\"outcome\":\"{}\"}}\n",
                e.ts_s * 1_000_000 + 17,
                e.sensor,
                e.sensor,
                e.user,
                e.ip,
                if e.failure { "failure" } else { "success" }
            )
        })
        .collect()
}

fn decode(catalog: &Catalog, evs: &[Ev], seq: u64) -> Option<RecordBatch> {
    let payload = ndjson(evs);
    let frame = DataFrame { seq, table: "auth_events", encoding: Encoding::Ndjson, payload: payload.as_bytes() };
    let id = Identity { sensor_id: "s0", tenant: "t", default_host: None, trust_rows: true };
    let d = decode_frame(catalog.get("auth_events").unwrap(), &frame, &id, 100_000).unwrap();
    assert_eq!(d.rejected, 0);
    d.batch
}

type Alerts = BTreeSet<(String, Option<i64>, String)>;

async fn continuous(evs: &[Ev], splits: &[usize]) -> Alerts {
    let catalog = Arc::new(Catalog::builtin());
    let compiler = Compiler::new(Arc::clone(&catalog)).unwrap();
    let rules: Vec<RuleDef> = RULES
        .iter()
        .map(|(id, sql, _)| RuleDef {
            lateness: Some(std::time::Duration::from_secs(LATENESS_S as u64)),
            ..RuleDef::new(*id, *sql)
        })
        .collect();
    let pack = Pack { name: "p".into(), version: 1, description: String::new(), author: String::new(), rules };
    let mut by_table = compiler.compile_pack(&pack).await.unwrap();
    // Event times are seconds after the epoch and so is `now`: no skew bound for the oracle.
    let table =
        TableRules::new(&compiler, "auth_events", by_table.remove("auth_events").unwrap()).with_clock_skew(None, None);
    let now = chrono::DateTime::<Utc>::UNIX_EPOCH;
    let mut out = Alerts::new();
    let mut collect_alerts = |eval: vedette_pipelines::compile::Evaluation| {
        assert!(eval.errors.is_empty(), "{:?}", eval.errors);
        table.commit(eval.window_updates);
        for a in eval.alerts {
            let row = serde_json::Value::Object(a.row).to_string();
            out.insert((a.rule_id, a.window_start.map(|w| w.timestamp_micros()), row));
        }
    };
    let mut rest = evs;
    let mut seq = 0;
    let mut splits = splits.iter().cycle();
    while !rest.is_empty() {
        let n = (*splits.next().unwrap()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        seq += 1;
        if let Some(b) = decode(&catalog, chunk, seq) {
            collect_alerts(table.evaluate(&b, now).await);
        }
    }
    collect_alerts(table.tick(now, true).await);
    assert!(table.late_rows().iter().all(|(_, n)| *n == 0), "no event is late within the bound");
    out
}

async fn batch(evs: &[Ev]) -> Alerts {
    let catalog = Catalog::builtin();
    let all = decode(&catalog, evs, 1).unwrap();
    let ctx = SessionContext::new();
    ctx.register_udf(vedette_pipelines::window::tumble_udf());
    for udf in vedette_pipelines::window::hop_udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_table("auth_events", Arc::new(MemTable::try_new(all.schema(), vec![vec![all]]).unwrap())).unwrap();
    let mut out = Alerts::new();
    for (id, _, sql) in RULES {
        let windowed = sql.contains("AS w,");
        for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
            let schema = b.schema();
            for i in 0..b.num_rows() {
                let mut row = serde_json::Map::new();
                let mut window = None;
                for (c, f) in schema.fields().iter().enumerate() {
                    if windowed && c == 0 {
                        window = vedette_pipelines::values::cell_micros(b.column(0).as_ref(), i);
                    } else {
                        row.insert(f.name().clone(), cell_to_json(b.column(c).as_ref(), i));
                    }
                }
                out.insert((id.to_string(), window, serde_json::Value::Object(row).to_string()));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn continuous_evaluation_equals_one_batch_query(
        evs in events(),
        swaps in prop::collection::vec(0usize..120, 0..60),
        splits in prop::collection::vec(1usize..40, 1..8),
    ) {
        let evs = shuffle_within_lateness(evs, &swaps);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (c, b) = rt.block_on(async { (continuous(&evs, &splits).await, batch(&evs).await) });
        prop_assert_eq!(c, b);
    }
}

#[tokio::test]
async fn oracle_sees_alerts_of_every_rule() {
    // Three failures of u1 on s0 within one minute, spread over several batches and slightly
    // out of order, plus a password spray from one address.
    let ev = |ts_s, sensor, user, ip, failure| Ev { ts_s, sensor, user, ip, failure };
    let evs = vec![
        ev(5, 0, 1, 0, true),
        ev(3, 1, 2, 0, true),
        ev(20, 0, 1, 0, true),
        ev(15, 0, 1, 1, false),
        ev(40, 0, 1, 0, true),
        ev(14, 1, 3, 0, false),
        ev(200, 1, 3, 2, false),
    ];
    let c = continuous(&evs, &[2, 1, 3]).await;
    let b = batch(&evs).await;
    assert_eq!(c, b);
    let rules: BTreeSet<&str> = c.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(rules, ["brute", "hopping", "session", "session_spray", "spray", "stateless"].into_iter().collect());
}
