//! Bad input on the wire gets a clear error and never affects other streams or sensors.

use serde_json::json;
use vedette_schemas::frame::{self, Control, Encoding};
use vedette_tests::{RawClient, TestEngine, ndjson_frame, shadow_cat};

fn is_error(code: &'static str) -> impl FnMut(&Control) -> bool {
    move |m| matches!(m, Control::Error(e) if e.code == code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_reset_only_their_stream() {
    let t = TestEngine::start().await;
    let mut bad = RawClient::connect(&t.sensor("bad", "default"), 0).await.unwrap();
    let mut good = RawClient::connect(&t.sensor("good", "default"), 0).await.unwrap();

    let mut s = bad.data_stream().await;
    // A plausible length, then a type byte that does not exist.
    s.write_all(&[0, 0, 0, 9, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    let Control::Error(e) = bad.until(is_error("malformed_frame")).await else { unreachable!() };
    assert!(e.message.contains("unknown frame type 0x7f"), "{}", e.message);

    // The same connection still works on a new stream, and so does the other sensor.
    let mut s2 = bad.data_stream().await;
    s2.write_all(&ndjson_frame(1, "process_events", &[shadow_cat(1)])).await.unwrap();
    bad.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    let mut g = good.data_stream().await;
    g.write_all(&ndjson_frame(1, "process_events", &[shadow_cat(2)])).await.unwrap();
    good.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    assert_eq!(t.alerts().await.len(), 2);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn oversized_frame_is_refused_before_it_is_read() {
    let t = TestEngine::start_with(|c| c.ingest.max_frame_bytes = 4096).await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    assert_eq!(c.session.welcome.max_frame_bytes, 4096);
    let mut s = c.data_stream().await;
    let rows: Vec<_> = (0..200).map(shadow_cat).collect();
    let _ = s.write_all(&ndjson_frame(1, "process_events", &rows)).await;
    let Control::Error(e) = c.until(is_error("frame_too_large")).await else { unreachable!() };
    assert!(e.message.contains("exceeds the maximum of 4096 bytes"), "{}", e.message);
    assert_eq!(e.seq, Some(1), "the oversized data frame is named, and consumed");
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1 && a.through == 1)).await;
    // Split into frames that fit (new sequence numbers): accepted on a new stream of the same
    // connection, and `through` follows.
    let mut s2 = c.data_stream().await;
    s2.write_all(&ndjson_frame(2, "process_events", &rows[..5])).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 2 && a.through == 2)).await;
    assert_eq!(t.alerts().await.len(), 5);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn unknown_table_is_an_error_that_consumes_the_frame() {
    let t = TestEngine::start().await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let mut s = c.data_stream().await;
    s.write_all(&ndjson_frame(1, "proccess_events", &[shadow_cat(1)])).await.unwrap();
    let Control::Error(e) = c.until(is_error("unknown_table")).await else { unreachable!() };
    assert_eq!(e.seq, Some(1));
    assert!(e.message.contains("`proccess_events`") && e.message.contains("process_events"), "{}", e.message);
    // The frame is consumed (acked) so the sensor does not resend it forever.
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1 && a.through == 1)).await;
    s.write_all(&ndjson_frame(2, "process_events", &[shadow_cat(2)])).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 2)).await;
    assert_eq!(t.alerts().await.len(), 1);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn bad_rows_are_reported_with_reasons_and_good_rows_flow() {
    let t = TestEngine::start().await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let mut s = c.data_stream().await;
    let rows = vec![
        shadow_cat(1),
        json!({"ts": 5, "pid": "not-a-number", "exe": "/usr/bin/cat", "cmdline": "cat /etc/shadow"}),
        json!({"exe": "/usr/bin/cat", "cmdline": "cat /etc/shadow"}),
        shadow_cat(4),
    ];
    s.write_all(&ndjson_frame(1, "process_events", &rows)).await.unwrap();
    let Control::RowErrors(r) = c.until(|m| matches!(m, Control::RowErrors(_))).await else { unreachable!() };
    assert_eq!((r.accepted, r.rejected), (2, 2));
    assert_eq!(
        r.errors.iter().map(|e| (e.row, e.column.clone().unwrap())).collect::<Vec<_>>(),
        [(1, "pid".into()), (2, "ts".into())]
    );
    assert!(r.errors[0].reason.contains("expected int64"));
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    assert_eq!(t.alerts().await.len(), 2);
    assert_eq!(t.engine.metrics().ingest_rows_rejected.with_label_values(&["process_events"]).get(), 2);
    t.engine.shutdown().await;
}

#[tokio::test]
async fn arrow_ipc_frames_are_accepted_and_bad_arrow_is_an_error() {
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let t = TestEngine::start().await;
    let mut c = RawClient::connect(&t.sensor("s", "default"), 0).await.unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("exe", DataType::Utf8, false),
        Field::new("cmdline", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["start", "start"])),
            Arc::new(StringArray::from(vec!["/usr/bin/cat", "/usr/bin/ls"])),
            Arc::new(StringArray::from(vec!["cat /etc/shadow", "ls"])),
        ],
    )
    .unwrap();
    let mut ipc = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    let mut f = Vec::new();
    frame::encode_data(&mut f, Encoding::Arrow, 1, "process_events", &ipc);
    frame::encode_data(&mut f, Encoding::Arrow, 2, "process_events", b"definitely not arrow");
    let mut s = c.data_stream().await;
    s.write_all(&f).await.unwrap();
    let Control::Error(e) = c.until(is_error("bad_payload")).await else { unreachable!() };
    assert_eq!(e.seq, Some(2));
    c.until(|m| matches!(m, Control::Ack(a) if a.through == 2)).await;
    let alerts = t.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["row"]["cmdline"], "cat /etc/shadow");
    t.engine.shutdown().await;
}

#[tokio::test]
async fn a_control_frame_on_a_data_stream_changes_no_sequence_state() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s", "default");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    let mut s = c.data_stream().await;
    // HEARTBEAT {"ts": 0}: its first eight body bytes are not a sequence number.
    s.write_all(&Control::Heartbeat(frame::Heartbeat { ts: 0 }).to_frame()).await.unwrap();
    let Control::Error(e) = c.until(is_error("malformed_frame")).await else { unreachable!() };
    assert_eq!(e.seq, None, "{e:?}");
    // The stream goes on (the framing is intact) and numbering is untouched.
    s.write_all(&ndjson_frame(1, "process_events", &[shadow_cat(1)])).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1 && a.through == 1)).await;
    drop(c);
    let again = RawClient::connect(&cfg, 0).await.unwrap();
    assert_eq!((again.session.welcome.acked_through, again.session.welcome.highest_seq), (1, 1));
    t.engine.shutdown().await;
}

#[tokio::test]
async fn sequence_numbers_far_ahead_are_refused_and_replays_are_applied_once() {
    let t = TestEngine::start().await;
    let cfg = t.sensor("s", "default");
    let mut c = RawClient::connect(&cfg, 0).await.unwrap();
    let mut s = c.data_stream().await;
    let far = vedette_schemas::seq::SEQ_WINDOW + 2;
    s.write_all(&ndjson_frame(far, "process_events", &[shadow_cat(9)])).await.unwrap();
    let Control::Error(e) = c.until(is_error("seq_out_of_window")).await else { unreachable!() };
    assert_eq!(e.seq, Some(far));
    s.write_all(&ndjson_frame(u64::MAX, "process_events", &[shadow_cat(10)])).await.unwrap();
    c.until(is_error("seq_out_of_window")).await;
    // The same frame twice: applied once, acknowledged twice.
    let f = ndjson_frame(1, "process_events", &[shadow_cat(1)]);
    s.write_all(&f).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    s.write_all(&f).await.unwrap();
    c.until(|m| matches!(m, Control::Ack(a) if a.seq == 1)).await;
    drop(c);
    let again = RawClient::connect(&cfg, 0).await.unwrap();
    assert_eq!(again.session.welcome.highest_seq, 1, "refused numbers left no trace");
    assert_eq!(t.alerts().await.len(), 1);
    t.engine.shutdown().await;
}
