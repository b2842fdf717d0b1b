//! The enrollment service: same QUIC port, ALPN `vedette-enroll/1`, no client certificate.
//! One bidirectional stream: the sensor sends ENROLL (token + CSR), the engine answers
//! CERTIFICATE and closes with code 0, or ERROR `enrollment_refused` and closes with code 11.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;
use vedette_schemas::frame::{Control, FrameType, close_code};

use super::IngestContext;
use super::session::{ReadError, error_msg, read_frame, tell};

/// Largest ENROLL frame (a CSR is about 1 KiB).
const MAX_ENROLL_BYTES: u32 = 64 * 1024;

/// Serves one enrollment connection.
pub async fn serve(ctx: Arc<IngestContext>, conn: quinn::Connection, remote: SocketAddr) {
    let refuse = |reason: &str| {
        ctx.metrics.ingest_refused.with_label_values(&["enrollment"]).inc();
        info!(%remote, %reason, "Enrollment refused.");
    };
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout(ctx.limits.hello_timeout, conn.accept_bi()).await else {
        refuse("no request stream in time");
        conn.close(close_code::HELLO_TIMEOUT.into(), b"no ENROLL received in time");
        return;
    };
    let request = match tokio::time::timeout(ctx.limits.hello_timeout, read_frame(&mut recv, MAX_ENROLL_BYTES)).await {
        Ok(Ok(Some((FrameType::Enroll, body)))) => Control::decode(FrameType::Enroll, &body),
        Ok(Ok(Some((ty, _)))) => Err(vedette_schemas::SchemaError::MalformedFrame {
            reason: format!("expected ENROLL on the enrollment ALPN, got {ty:?}"),
        }),
        Ok(Err(ReadError::Schema(e) | ReadError::TooLarge(e, _))) => Err(e),
        Ok(Ok(None) | Err(ReadError::Stream(_))) | Err(_) => {
            refuse("no ENROLL received");
            conn.close(close_code::HELLO_TIMEOUT.into(), b"no ENROLL received in time");
            return;
        }
    };
    let request = match request {
        Ok(Control::Enroll(r)) => r,
        Ok(_) => unreachable!("ENROLL frames decode to ENROLL"),
        Err(e) => {
            refuse(&e.to_string());
            tell(&mut send, error_msg("malformed_message", e.to_string(), None)).await;
            conn.close(close_code::PROTOCOL_VIOLATION.into(), b"malformed ENROLL");
            return;
        }
    };
    let outcome = match &ctx.issuer {
        None => Err("enrollment is off: this engine has no CA key (set `fleet.ca_key`)".to_string()),
        Some(issuer) => issuer.enroll(&request, &remote.to_string()).await,
    };
    match outcome {
        Ok(issued) => {
            info!(%remote, sensor = %issued.sensor_id, tenant = %issued.tenant, "Sensor enrolled.");
            tell(&mut send, Control::Certificate(issued)).await;
            conn.close(close_code::NORMAL.into(), b"enrolled");
        }
        Err(reason) => {
            refuse(&reason);
            tell(&mut send, error_msg("enrollment_refused", &reason, None)).await;
            conn.close(close_code::ENROLLMENT_REFUSED.into(), reason.as_bytes());
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
}
