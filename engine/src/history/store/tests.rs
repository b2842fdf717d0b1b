use super::*;
use proptest::prelude::*;

fn alert(n: u64, rule: &str, sev: &str, tenant: Option<&str>, sensor: &str, at_secs: i64) -> Vec<u8> {
    let at = chrono::DateTime::from_timestamp(1_764_000_000 + at_secs, 0).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "alert_id": Uuid::from_u128(u128::from(n) + 1),
        "rule_id": rule, "rule_name": rule, "rule_version": 1, "pack": "p",
        "severity": sev, "tags": [], "description": "",
        "sensor_id": sensor, "tenant": tenant, "host": format!("h-{sensor}"),
        "table": "process_events", "ts": at, "detected_at": at, "row": {"n": n},
    }))
    .unwrap()
}

fn open(dir: &Path) -> History {
    History::open(&dir.join("h"), Retention { max_age: std::time::Duration::from_secs(1 << 40), max_bytes: 1 << 40 })
        .unwrap()
}

fn positions(v: &[Stored]) -> Vec<u64> {
    v.iter().map(|s| s.position).collect()
}

#[test]
fn duplicates_are_stored_once_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path());
    let a = alert(1, "r1", "high", Some("t1"), "s1", 0);
    let b = alert(2, "r2", "low", Some("t1"), "s1", 1);
    assert_eq!(h.append(&[&a, &b, &a]).unwrap(), 2);
    assert_eq!(h.append(&[&b]).unwrap(), 0, "a replayed batch adds nothing");
    assert_eq!(h.head(), 2);
    drop(h);
    let h = open(dir.path());
    assert_eq!(h.size().0, 2);
    assert_eq!(h.append(&[&alert(3, "r1", "high", None, "s2", 2)]).unwrap(), 1);
    assert_eq!(h.head(), 3, "positions continue after a restart");
    let got = h.get(&Uuid::from_u128(2)).unwrap().unwrap();
    assert_eq!((got.position, got.tenant()), (1, "t1".to_string()));
}

#[test]
fn a_crash_after_the_index_but_before_the_record_neither_loses_nor_misfiles() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path());
    // Simulate the first half of a cut-short batch: id, next and index entries, no record.
    let keys: Keys = serde_json::from_slice(&alert(1, "ghost", "high", Some("t1"), "s1", 0)).unwrap();
    h.ids.insert(keys.alert_id.as_bytes(), &1u64.to_be_bytes()).unwrap();
    h.meta.insert("next", &2u64.to_be_bytes()).unwrap();
    for k in keys.index_keys(1) {
        h.idx.insert(k, &[]).unwrap();
    }
    drop(h);
    let h = open(dir.path());
    // The replay of the same alert gets a fresh position; another rule's alert does not land
    // on the ghost's index entries.
    assert_eq!(h.append(&[&alert(1, "ghost", "high", Some("t1"), "s1", 0)]).unwrap(), 1);
    assert_eq!(h.append(&[&alert(9, "other", "low", Some("t1"), "s1", 0)]).unwrap(), 1);
    let ghost = Filter { rule: Some("ghost".into()), ..Filter::default() };
    assert_eq!(positions(&h.scan(&ghost, Dir::Desc, u64::MAX, 10).unwrap()), [2]);
    let other = Filter { rule: Some("other".into()), ..Filter::default() };
    assert_eq!(positions(&h.scan(&other, Dir::Desc, u64::MAX, 10).unwrap()), [3]);
}

#[test]
fn pruning_keeps_the_byte_bound_and_the_age_bound() {
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(
        &dir.path().join("h"),
        Retention { max_age: std::time::Duration::from_secs(100), max_bytes: 10_000 },
    )
    .unwrap();
    let recs: Vec<Vec<u8>> = (0..200).map(|n| alert(n, "r", "high", Some("t"), "s", n as i64)).collect();
    let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    h.append(&refs).unwrap();
    let now = (1_764_000_000 + 150) * 1_000_000;
    h.prune(now).unwrap();
    let (n, bytes) = h.size();
    assert!(bytes <= 10_000, "{bytes}");
    let left = h.scan(&Filter::default(), Dir::Asc, 0, 1000).unwrap();
    assert_eq!(left.len(), n);
    assert!(left[0].detected_at >= now - 100_000_000, "older than max_age is gone");
    assert_eq!(left.last().unwrap().position, 200, "the newest stay");
    let by_rule = h.scan(&Filter { rule: Some("r".into()), ..Filter::default() }, Dir::Asc, 0, 1000).unwrap();
    assert_eq!(positions(&by_rule), positions(&left), "index entries of pruned alerts are gone too");
    assert!(h.get(&Uuid::from_u128(1)).unwrap().is_none());
}

#[derive(Debug, Clone)]
struct Gen {
    rule: u8,
    sev: u8,
    tenant: u8,
    sensor: u8,
    at: i64,
}

fn gen_alert() -> impl Strategy<Value = Gen> {
    (0u8..4, 0u8..5, 0u8..3, 0u8..3, 0i64..1000).prop_map(|(rule, sev, tenant, sensor, at)| Gen {
        rule,
        sev,
        tenant,
        sensor,
        at,
    })
}

fn gen_filter() -> impl Strategy<Value = Filter> {
    (
        proptest::option::of(0u8..5),
        proptest::option::of(0u8..5),
        proptest::option::of(0u8..4),
        proptest::option::of(0u8..4),
        proptest::option::of(0i64..1000),
        proptest::option::of(1i64..400),
    )
        .prop_map(|(rule, sev, tenant, sensor, since, span)| Filter {
            rule: rule.map(|r| format!("r{r}")),
            min_severity: sev.map(|s| SEVS[usize::from(s)].1),
            tenant: tenant.map(|t| if t == 3 { String::new() } else { format!("t{t}") }),
            sensor: sensor.map(|s| format!("s{s}")),
            host: None,
            since: since.map(|s| (1_764_000_000 + s) * 1_000_000),
            until: since.zip(span).map(|(s, d)| (1_764_000_000 + s + d) * 1_000_000),
        })
}

const SEVS: [(&str, Severity); 5] = [
    ("info", Severity::Info),
    ("low", Severity::Low),
    ("medium", Severity::Medium),
    ("high", Severity::High),
    ("critical", Severity::Critical),
];

fn model_matches(f: &Filter, g: &Gen) -> bool {
    let tenant = if g.tenant == 2 { String::new() } else { format!("t{}", g.tenant) };
    let at = (1_764_000_000 + g.at) * 1_000_000;
    f.rule.as_ref().is_none_or(|r| *r == format!("r{}", g.rule))
        && f.min_severity.is_none_or(|m| SEVS[usize::from(g.sev)].1 >= m)
        && f.tenant.as_ref().is_none_or(|t| *t == tenant)
        && f.sensor.as_ref().is_none_or(|s| *s == format!("s{}", g.sensor))
        && f.time_matches(at)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Every filter combination, paged newest first and streamed oldest first, returns exactly
    /// what a plain scan of the model returns, in order.
    #[test]
    fn scans_equal_a_filtered_model(alerts in proptest::collection::vec(gen_alert(), 1..300),
                                    filter in gen_filter(), page in 1usize..40) {
        let dir = tempfile::tempdir().unwrap();
        let h = open(dir.path());
        let recs: Vec<Vec<u8>> = alerts.iter().enumerate().map(|(n, g)| {
            let tenant = if g.tenant == 2 { None } else { Some(format!("t{}", g.tenant)) };
            alert(n as u64, &format!("r{}", g.rule), SEVS[usize::from(g.sev)].0, tenant.as_deref(),
                  &format!("s{}", g.sensor), g.at)
        }).collect();
        for chunk in recs.chunks(37) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            h.append(&refs).unwrap();
        }
        let expected: Vec<u64> = alerts.iter().enumerate()
            .filter(|(_, g)| model_matches(&filter, g)).map(|(n, _)| n as u64 + 1).collect();
        let mut desc = Vec::new();
        let mut from = u64::MAX;
        loop {
            let got = h.scan(&filter, Dir::Desc, from, page).unwrap();
            desc.extend(positions(&got));
            if got.len() < page { break; }
            from = got.last().unwrap().position;
        }
        let mut rev = expected.clone();
        rev.reverse();
        prop_assert_eq!(desc, rev);
        let mut asc = Vec::new();
        let mut from = 0;
        loop {
            let got = h.scan(&filter, Dir::Asc, from, page).unwrap();
            asc.extend(positions(&got));
            if got.len() < page { break; }
            from = got.last().unwrap().position;
        }
        prop_assert_eq!(asc, expected);
    }
}
