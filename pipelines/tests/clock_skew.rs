//! Sensor clocks are bounded against the engine's: an event stamped far in the future does not
//! close windows (it is counted for its sensor), and a sensor far behind holds the watermark
//! back by at most the bound. Each tenant's windows close on its own sensors' time.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, Utc};
use vedette_pipelines::compile::{Compiler, TableRules};
use vedette_pipelines::rule::{Pack, RuleDef};
use vedette_schemas::decode::{Identity, decode_frame};
use vedette_schemas::frame::{DataFrame, Encoding};
use vedette_schemas::tables::Catalog;

const BRUTE: &str = "SELECT user, count(*) AS n FROM auth_events WHERE outcome = 'failure' \
                     GROUP BY tumble(ts, INTERVAL '1 minute'), user HAVING count(*) >= 2";

async fn table(skew: Option<Duration>) -> (Arc<Catalog>, TableRules) {
    // The same bound ahead and behind.
    let catalog = Arc::new(Catalog::builtin());
    let compiler = Compiler::new(Arc::clone(&catalog)).unwrap();
    let rule = RuleDef { lateness: Some(Duration::from_secs(5)), ..RuleDef::new("brute", BRUTE) };
    let pack =
        Pack { name: "p".into(), version: 1, description: String::new(), author: String::new(), rules: vec![rule] };
    let mut by_table = compiler.compile_pack(&pack).await.unwrap();
    let t =
        TableRules::new(&compiler, "auth_events", by_table.remove("auth_events").unwrap()).with_clock_skew(skew, skew);
    (catalog, t)
}

fn batch(catalog: &Catalog, sensor: &str, rows: &[(i64, &str)]) -> RecordBatch {
    batch_of(catalog, "t", sensor, rows)
}

fn batch_of(catalog: &Catalog, tenant: &str, sensor: &str, rows: &[(i64, &str)]) -> RecordBatch {
    let payload: String = rows
        .iter()
        .map(|(ts, user)| format!("{{\"ts\":{ts},\"user\":\"{user}\",\"outcome\":\"failure\"}}\n"))
        .collect();
    let frame = DataFrame { seq: 1, table: "auth_events", encoding: Encoding::Ndjson, payload: payload.as_bytes() };
    let id = Identity { sensor_id: sensor, tenant, default_host: None, trust_rows: true };
    decode_frame(catalog.get("auth_events").unwrap(), &frame, &id, 1000).unwrap().batch.unwrap()
}

async fn alerts(t: &TableRules, b: &RecordBatch, now: DateTime<Utc>) -> usize {
    let eval = t.evaluate(b, now).await;
    assert!(eval.errors.is_empty(), "{:?}", eval.errors);
    let n = eval.alerts.len();
    t.commit(eval.window_updates);
    n
}

fn minute(now: DateTime<Utc>) -> i64 {
    now.timestamp_micros().div_euclid(60_000_000) * 60_000_000
}

#[tokio::test]
async fn an_event_far_in_the_future_closes_nothing_and_is_counted_for_its_sensor() {
    let now = Utc::now();
    let w = minute(now);
    for (skew, closes) in [(Some(Duration::from_secs(60)), false), (None, true)] {
        let (catalog, t) = table(skew).await;
        assert_eq!(alerts(&t, &batch(&catalog, "s1", &[(w + 1, "root"), (w + 2, "root")]), now).await, 0);
        // Five minutes ahead: beyond a one-minute bound.
        let ahead = w + 5 * 60_000_000;
        let n = alerts(&t, &batch(&catalog, "s1", &[(ahead, "bob")]), now).await;
        assert_eq!(n == 1, closes, "skew bound {skew:?}");
        let skewed = t.skewed_rows();
        if skew.is_some() {
            assert_eq!(skewed, vec![("brute".to_string(), [("s1".to_string(), 1)].into())]);
        } else {
            assert!(skewed.is_empty());
        }
    }
}

#[tokio::test]
async fn a_sensor_a_day_behind_holds_windows_back_by_at_most_the_bound() {
    let day = 86_400_000_000;
    let t0 = Utc::now();
    let t1 = t0 + chrono::Duration::minutes(3);
    let (us0, us1) = (t0.timestamp_micros(), t1.timestamp_micros());
    for (skew, want) in [(Some(Duration::from_secs(60)), 1), (None, 0)] {
        let (catalog, t) = table(skew).await;
        // The laggard is active, its clock a day behind; a healthy sensor sees a brute force.
        let mut n = alerts(&t, &batch(&catalog, "late", &[(us0 - day, "x")]), t0).await;
        n += alerts(&t, &batch(&catalog, "ok", &[(us0 - 2, "root"), (us0 - 1, "root")]), t0).await;
        // Three minutes later both still send.
        n += alerts(&t, &batch(&catalog, "late", &[(us1 - day, "x")]), t1).await;
        n += alerts(&t, &batch(&catalog, "ok", &[(us1, "y")]), t1).await;
        assert_eq!(n, want, "skew bound {skew:?}: the healthy sensor's window closes despite the laggard");
    }
}

#[tokio::test]
async fn a_sensor_a_day_behind_does_not_delay_another_tenants_windows() {
    let day = 86_400_000_000;
    let t0 = Utc::now();
    let t1 = t0 + chrono::Duration::minutes(3);
    let (us0, us1) = (t0.timestamp_micros(), t1.timestamp_micros());
    // Even with no skew bound at all.
    let (catalog, t) = table(None).await;
    let mut n = alerts(&t, &batch_of(&catalog, "slow", "late", &[(us0 - day, "x"), (us0 - day + 1, "x")]), t0).await;
    n += alerts(&t, &batch_of(&catalog, "acme", "ok", &[(us0 - 2, "root"), (us0 - 1, "root")]), t0).await;
    n += alerts(&t, &batch_of(&catalog, "slow", "late", &[(us1 - day, "z")]), t1).await;
    n += alerts(&t, &batch_of(&catalog, "acme", "ok", &[(us1, "y")]), t1).await;
    // acme's brute force closed on acme's time; the laggard's own windows close on its time.
    assert_eq!(n, 2, "acme's window and the laggard's own (a day ago, passed by its later event)");
    // The laggard's rows are not late for acme, nor acme's for the laggard.
    assert!(t.late_rows().iter().all(|(_, l)| *l == 0), "{:?}", t.late_rows());
}
