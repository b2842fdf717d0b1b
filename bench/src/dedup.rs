//! The dedup ledger at scale: fill it with N alert ids, then commit alert batches through the
//! engine's real commit path (one transaction: dedup ledger + a sink's spool + a flush per
//! batch), a share of them repeats of ids already in the ledger. Prints alerts/s, RSS and disk.

use std::sync::Arc;
use std::time::Instant;

use vedette_actors::commit::{StateStore, commit};
use vedette_actors::dedup::DedupLedger;
use vedette_actors::ledger::SeqLedger;
use vedette_actors::sinks::open_sink;

/// `vedette-bench dedup`.
pub async fn run(entries: u64, alerts: usize, per_commit: usize, repeat_every: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = vedette_engine::engine::state_config(&dir.path().join("state")).open()?;
    let ttl = std::time::Duration::from_secs(24 * 3600);
    let dedup = DedupLedger::open(&db, ttl, entries + alerts as u64, None)?;
    let now = chrono::Utc::now().timestamp_micros();

    let started = Instant::now();
    let chunk = 10_000u64;
    for first in (0..entries).step_by(chunk as usize) {
        let ids: Vec<uuid::Uuid> = (first..(first + chunk).min(entries)).map(|i| id(i as u128)).collect();
        let (_, recorded) = dedup
            .tree()
            .transaction(|t| dedup.record::<()>(t, &ids, now))
            .map_err(|e| anyhow::anyhow!("filling the ledger: {e:?}"))?;
        dedup.apply(recorded);
    }
    db.flush_async().await?;
    let fill = started.elapsed().as_secs_f64();
    println!(
        "dedup: ledger filled with {} ids in {fill:.1}s ({:.0} ids/s); RSS {} MiB",
        dedup.len(),
        entries as f64 / fill,
        super::rss_kb() / 1024
    );

    // A restart reads the ledger back.
    drop(dedup);
    let started = Instant::now();
    let dedup = DedupLedger::open(&db, ttl, entries + alerts as u64, None)?;
    println!(
        "dedup: reopened (as at engine start) with {} ids in {:.2}s; RSS {} MiB",
        dedup.len(),
        started.elapsed().as_secs_f64(),
        super::rss_kb() / 1024
    );

    let text = "[[sinks]]\nname = \"bench\"\ntype = \"file\"\npath = \"out.jsonl\"\nspool = { max_bytes = \"8GiB\" }\n";
    let sink = open_sink(&db, vedette_config::Config::from_toml_str(text)?.sinks.remove(0))?;
    let store = StateStore {
        db: db.clone(),
        ledger: Arc::new(SeqLedger::open(db.clone())?),
        windows: db.open_tree("windows")?,
        dedup: Some(dedup),
    };
    let template = serde_json::to_vec(&vedette_pipelines::formats::sample_alert())?;
    let mut next_new = entries as u128;
    let (mut spooled, mut duplicates) = (0usize, 0usize);
    let mut step = 0u64;
    let started = Instant::now();
    let mut done = 0;
    while done < alerts {
        let n = per_commit.min(alerts - done);
        let ids: Vec<uuid::Uuid> = (0..n)
            .map(|k| {
                if repeat_every > 0 && (done + k) % repeat_every == 0 {
                    // A repeat of an id spread over the whole ledger (cold keys, not a cache hit).
                    step = step.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    id(u128::from(step % entries.max(1)))
                } else {
                    next_new += 1;
                    id(next_new)
                }
            })
            .collect();
        let records = vec![template.clone(); n];
        let c = commit(&store, std::slice::from_ref(&sink), &ids, &records, None, &[], &[]).await?;
        spooled += c.spooled;
        duplicates += c.repeated.len();
        done += n;
    }
    let took = started.elapsed().as_secs_f64();
    let disk = crate::history::dir_bytes(&dir.path().join("state"));
    println!(
        "dedup: {alerts} alerts in commits of {per_commit} (1 in {repeat_every} a repeat) through a {entries}-id ledger: \
         {:.0} alerts/s, {:.0} commits/s; {spooled} spooled, {duplicates} dropped as repeats",
        alerts as f64 / took,
        (alerts / per_commit.max(1)) as f64 / took
    );
    println!(
        "dedup: RSS {} MiB now, peak {}; state on disk {:.0} MiB ({:.0} B per ledger id incl. the spooled alerts)",
        super::rss_kb() / 1024,
        super::peak_rss(),
        disk as f64 / (1 << 20) as f64,
        disk as f64 / (entries as f64 + spooled as f64)
    );
    Ok(())
}

fn id(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}
