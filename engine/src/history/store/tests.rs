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

/// Opens the history in `dir`; a handle dropped a moment ago keeps sled's file lock until its
/// background threads let go (the engine waits for it too, see `engine::open_db`).
fn open(dir: &Path) -> History {
    let retention = Retention { max_age: std::time::Duration::from_secs(1 << 40), max_bytes: 1 << 40 };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match History::open(&dir.join("h"), retention) {
            Ok(h) => return h,
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Appends and flushes, as the history sink does.
fn store(h: &History, recs: &[&[u8]]) -> usize {
    let n = h.append(recs).unwrap();
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(h.flush()).unwrap();
    n
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
    assert_eq!(h.head(), 0, "not visible before the flush");
    assert_eq!(store(&h, &[&b]), 0, "a replayed batch adds nothing");
    assert_eq!(h.head(), 2);
    drop(h);
    let h = open(dir.path());
    assert_eq!(h.size().0, 2);
    assert_eq!(store(&h, &[&alert(3, "r1", "high", None, "s2", 2)]), 1);
    assert_eq!(h.head(), 3, "positions continue after a restart");
    let got = h.get(&Uuid::from_u128(2)).unwrap().unwrap();
    assert_eq!((got.position, got.tenant()), (1, "t1".to_string()));
}

#[test]
fn a_torn_tail_is_cut_off_and_the_replayed_batch_is_stored_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path());
    let first: Vec<Vec<u8>> = (0..5).map(|n| alert(n, "r", "high", Some("t1"), "s1", n as i64)).collect();
    store(&h, &first.iter().map(Vec::as_slice).collect::<Vec<_>>());
    drop(h);
    // The next batch reached the file only halfway (and its ids were written): a crash.
    let seg = super::segment::list(&dir.path().join("h/segments")).unwrap();
    let log = dir.path().join(format!("h/segments/{:020}.log", seg.last().unwrap()));
    let replay = alert(5, "late", "high", Some("t1"), "s1", 5);
    let mut torn = Vec::new();
    super::segment::encode(0, Uuid::from_u128(6).as_bytes(), &replay, &mut torn);
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();
    drop(f);
    let h = open(dir.path());
    assert_eq!(h.size().0, 5, "the torn record is gone, the others stay");
    assert_eq!(store(&h, &[&replay, &first[4]]), 1, "the replay is stored; an alert already stored is not");
    let late = Filter { rule: Some("late".into()), ..Filter::default() };
    assert_eq!(positions(&h.scan(&late, Dir::Desc, u64::MAX, 10).unwrap()), [6]);
    assert_eq!(h.get(&Uuid::from_u128(6)).unwrap().unwrap().position, 6);
}

#[test]
fn an_id_entry_pointing_at_a_lost_record_does_not_count_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path());
    store(&h, &[&alert(0, "r", "high", None, "s1", 0)]);
    // An id entry that outlived its record (written, then the record's file tail was lost).
    h.ids.insert(Uuid::from_u128(42).as_bytes(), &1u64.to_be_bytes()).unwrap();
    assert!(h.get(&Uuid::from_u128(42)).unwrap().is_none());
    assert_eq!(store(&h, &[&alert(41, "r", "high", None, "s1", 1)]), 1);
    assert_eq!(h.get(&Uuid::from_u128(42)).unwrap().unwrap().position, 2);
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
    for chunk in refs.chunks(10) {
        store(&h, chunk);
    }
    let now = (1_764_000_000 + 150) * 1_000_000;
    h.prune(now).unwrap();
    let (n, bytes) = h.size();
    // Whole segments (16 alerts) leave: at most one segment over the bound stays.
    assert!(bytes <= 10_000, "{bytes}");
    let left = h.scan(&Filter::default(), Dir::Asc, 0, 1000).unwrap();
    assert_eq!(left.len(), n);
    // Whole sealed segments leave, so the oldest kept alert is at most one segment (16 alerts,
    // 16 s apart here) older than the age bound.
    assert!(left[0].detected_at >= now - 100_000_000 - 16_000_000, "older than max_age is gone");
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
            triage: None,
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
            store(&h, &refs);
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

#[test]
fn triage_filters_scans_counts_per_tenant_and_leaves_with_pruned_alerts() {
    use crate::history::triage::{Triage, TriageState};
    let dir = tempfile::tempdir().unwrap();
    let h = History::open(
        &dir.path().join("h"),
        Retention { max_age: std::time::Duration::from_secs(3600), max_bytes: 1 << 40 },
    )
    .unwrap();
    // 40 alerts (a segment seals at 16 in tests), the first 16 old enough to be pruned.
    let old = chrono::Utc::now().timestamp() - 1_764_000_000 - 7200;
    let recs: Vec<Vec<u8>> = (0..40)
        .map(|n| {
            let tenant = if n % 2 == 0 { "t1" } else { "t2" };
            alert(n, "r", "high", Some(tenant), "s1", if n < 16 { old } else { old + 7200 })
        })
        .collect();
    for chunk in recs.chunks(16) {
        store(&h, &chunk.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }
    assert_eq!((h.count(None).unwrap(), h.count(Some("t1")).unwrap(), h.count(Some("t9")).unwrap()), (40, 20, 0));
    let set = |n: u128, state, tenant: &str| {
        let r = Triage { state, by: "me".into(), at: chrono::Utc::now(), note: None, tenant: tenant.into() };
        h.triage().set(&Uuid::from_u128(n + 1), &r).unwrap()
    };
    set(0, TriageState::Acknowledged, "t1"); // old: pruned below
    set(30, TriageState::Resolved, "t1");
    set(32, TriageState::Acknowledged, "t1");
    let f = |t| Filter { triage: Some(t), ..Filter::default() };
    assert_eq!(positions(&h.scan(&f(TriageState::Resolved), Dir::Desc, u64::MAX, 100).unwrap()), [31]);
    assert_eq!(positions(&h.scan(&f(TriageState::Acknowledged), Dir::Asc, 0, 100).unwrap()), [1, 33]);
    assert_eq!(h.scan(&f(TriageState::New), Dir::Desc, u64::MAX, 100).unwrap().len(), 37);
    assert_eq!(h.triage().counts(Some("t1")).acknowledged, 2);
    // Pruning takes whole sealed segments (the first, 16 alerts): its triage records go too.
    assert_eq!(h.prune(chrono::Utc::now().timestamp_micros()).unwrap(), 16);
    assert_eq!(h.count(Some("t1")).unwrap(), 12);
    assert_eq!(h.triage().counts(Some("t1")).acknowledged, 1);
    assert_eq!(h.triage().get(&Uuid::from_u128(1)).unwrap(), None);
}
