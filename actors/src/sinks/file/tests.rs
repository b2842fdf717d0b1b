use super::service::rotated;
use super::*;
use crate::sinks::delivery::{Connector, Outcome, Outgoing};

fn outgoing(seq: u64, body: &str) -> Outgoing {
    let alert: vedette_pipelines::alert::Alert = serde_json::from_value(serde_json::json!({
        "alert_id": "7a1c6b0e-2f3b-5c57-9e21-7a4bd0c3e812", "rule_id": "r", "rule_name": "n", "rule_version": 1,
        "pack": "p", "severity": "low", "tags": [], "description": "", "sensor_id": null, "tenant": null,
        "host": null, "table": "t", "ts": "2026-01-01T00:00:00Z", "detected_at": "2026-01-01T00:00:00Z", "row": {}
    }))
    .unwrap();
    Outgoing { seq, alert, body: body.as_bytes().to_vec() }
}

#[tokio::test]
async fn appends_lines_and_rotates_by_size_keeping_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/alerts.jsonl");
    let mut sink = FileSink::new(path.clone(), Some(25), 2, 7);
    for i in 0..7u64 {
        let batch = [outgoing(i + 1, &format!("line-{i:04}"))];
        assert_eq!(sink.send(&batch).await, [Outcome::Delivered]);
    }
    // 10 bytes per line, at most 25 per file: two lines per file; the oldest files are gone.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "line-0006\n");
    assert_eq!(std::fs::read_to_string(rotated(&path, 1)).unwrap(), "line-0004\nline-0005\n");
    assert_eq!(std::fs::read_to_string(rotated(&path, 2)).unwrap(), "line-0002\nline-0003\n");
    assert!(!rotated(&path, 3).exists());
}

#[tokio::test]
async fn a_write_error_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: opening fails.
    let path = dir.path().join("taken");
    std::fs::create_dir(&path).unwrap();
    let mut sink = FileSink::new(path, None, 1, 7);
    let out = sink.send(&[outgoing(1, "x")]).await;
    assert!(matches!(&out[0], Outcome::Retry(e) if e.contains("taken")), "{out:?}");
}

#[tokio::test]
async fn after_a_crash_nothing_is_written_twice_or_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let mut sink = FileSink::new(path.clone(), None, 1, 7);
    assert_eq!(sink.send(&[outgoing(1, "a"), outgoing(2, "b")]).await, [Outcome::Delivered, Outcome::Delivered]);
    drop(sink);
    // A crash after the data was synced but before its position was recorded: a torn tail.
    {
        use std::io::Write;
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"c\nd").unwrap();
    }
    // Restarted, the spool still holds 2 (its removal was not flushed) and 3, 4 (the torn
    // write): 2 is skipped, the tail is cut, 3 and 4 are written once.
    let mut sink = FileSink::new(path.clone(), None, 1, 7);
    let out = sink.send(&[outgoing(2, "b"), outgoing(3, "c"), outgoing(4, "d")]).await;
    assert_eq!(out, [Outcome::Delivered, Outcome::Delivered, Outcome::Delivered]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\nd\n");
    // A damaged position file is ignored (at worst a duplicate, never a cut).
    std::fs::write(super::service::position_path(&path), b"garbage").unwrap();
    let mut sink = FileSink::new(path.clone(), None, 1, 7);
    assert_eq!(sink.send(&[outgoing(5, "e")]).await, [Outcome::Delivered]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\nd\ne\n");
}

#[tokio::test]
async fn a_position_from_another_spool_skips_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let mut sink = FileSink::new(path.clone(), None, 1, 7);
    assert_eq!(sink.send(&[outgoing(1, "a"), outgoing(2, "b"), outgoing(3, "c")]).await, vec![Outcome::Delivered; 3]);
    drop(sink);
    // The data dir was reset: a new spool (another instance) counts its keys from 1 again.
    // Its keys 1 and 2 are new alerts, not ones the file already holds.
    let mut sink = FileSink::new(path.clone(), None, 1, 8);
    assert_eq!(sink.send(&[outgoing(1, "x"), outgoing(2, "y")]).await, vec![Outcome::Delivered; 2]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\nx\ny\n");
    // From now on the position is this spool's: a restart skips what it wrote.
    drop(sink);
    let mut sink = FileSink::new(path.clone(), None, 1, 8);
    assert_eq!(sink.send(&[outgoing(2, "y"), outgoing(3, "z")]).await, vec![Outcome::Delivered; 2]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\nx\ny\nz\n");
}

#[tokio::test]
async fn a_position_record_from_before_instance_ids_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    std::fs::write(&path, "a\nb\ntorn").unwrap();
    // len 4, last_seq 2, FNV-1a over both words: the 24-byte record older engines wrote.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in 4u64.to_be_bytes().into_iter().chain(2u64.to_be_bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut rec = 4u64.to_be_bytes().to_vec();
    rec.extend(2u64.to_be_bytes());
    rec.extend(h.to_be_bytes());
    std::fs::write(super::service::position_path(&path), rec).unwrap();
    let mut sink = FileSink::new(path.clone(), None, 1, 9);
    assert_eq!(sink.send(&[outgoing(2, "b"), outgoing(3, "c")]).await, vec![Outcome::Delivered; 2]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\nc\n");
}
