//! ALERTS frames: alerts an edge engine forwards to this one. Each line is a
//! [`Forwarded`] alert; the frame's alerts are committed like a batch's (dedup ledger, every
//! sink's spool minus the sinks the edge claimed, the edge's sequence number — one
//! transaction) and then acknowledged.

use std::sync::Arc;

use tracing::warn;
use vedette_pipelines::alert::Forwarded;
use vedette_schemas::fleet::EDGE_TENANT;
use vedette_schemas::frame::{self, Control, RowError, RowErrors};

use super::IngestContext;
use super::session::{Sensor, admit, complete_now, error_msg, reject_frame};
use crate::commit::Effects;

/// Handles one ALERTS frame body.
pub(super) async fn handle(ctx: &Arc<IngestContext>, sensor: &Arc<Sensor>, body: &[u8]) {
    let (seq, ndjson) = match frame::parse_alerts(body) {
        Ok(f) => f,
        Err(e) => return reject_frame(ctx, sensor, frame::peek_seq(body), &e).await,
    };
    if sensor.tenant != EDGE_TENANT {
        ctx.metrics.ingest_refused.with_label_values(&["not_an_edge"]).inc();
        let msg = format!(
            "only edge engines may forward alerts (a certificate of tenant `{EDGE_TENANT}`); this one is of tenant `{}`",
            sensor.tenant
        );
        if admit(ctx, sensor, seq).await {
            sensor.say(error_msg("not_an_edge", msg, Some(seq))).await;
            complete_now(ctx, sensor, seq).await;
        }
        return;
    }
    if !admit(ctx, sensor, seq).await {
        return;
    }
    let mut effects = Effects::default();
    let mut errors = Vec::new();
    let lines = ndjson.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    for (row, line) in lines.enumerate() {
        match serde_json::from_slice::<Forwarded>(line) {
            Ok(Forwarded { mut alert, claimed }) => {
                alert.edge = Some(sensor.id.to_string());
                effects.alerts.push(alert);
                effects.claimed.push(claimed);
            }
            Err(e) => {
                errors.push(RowError { row: row as u32, column: None, reason: format!("not a forwarded alert: {e}") })
            }
        }
    }
    if !errors.is_empty() {
        let (accepted, rejected) = (effects.alerts.len() as u32, errors.len() as u32);
        sensor.say(Control::RowErrors(RowErrors { seq, table: "alerts".into(), accepted, rejected, errors })).await;
    }
    let n = effects.alerts.len() as u64;
    effects.frames = vec![(Arc::clone(&sensor.id), seq)];
    let frames = effects.frames.clone();
    match ctx.router.commit_admitted(effects).await {
        Ok(c) => {
            ctx.metrics.forwarded.with_label_values(&[&sensor.id, "spooled"]).inc_by(c.spooled as u64);
            ctx.metrics.forwarded.with_label_values(&[&sensor.id, "duplicate"]).inc_by(c.repeated.len() as u64);
            sensor.activity.events(n);
            ctx.acker.ack(&frames, &c.through);
        }
        Err(e) => {
            // Not acknowledged: the edge sends the alerts again.
            warn!(edge = %sensor.id, seq, error = %e, "Storing forwarded alerts failed; the edge will resend them.");
            ctx.acker.ledger.abort(&sensor.id, seq);
            sensor.say(error_msg("alerts_not_stored", e.to_string(), None)).await;
        }
    }
}
