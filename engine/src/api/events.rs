//! `GET /api/v1/events/stream?sensor=ID[&table=T]`: a sensor's raw telemetry as it arrives
//! (Server-Sent Events, one `event: row` per row, the row as JSON with `_table`). For trying a
//! sensor or a rule live; nothing is stored or replayed. An unknown, deregistered or other
//! tenant's sensor is a 404.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};

use super::alerts::tokio_stream;
use super::error::ApiResult;
use super::schema::{AuthErrors, ErrorBody};
use super::sensors::visible;
use super::{ApiState, CallerExt};
use crate::history::query::{ParamError, check_known};

/// Parameters of the raw event stream.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EventStreamParams {
    /// Sensor id (required).
    pub sensor: String,
    /// Only this table.
    pub table: Option<String>,
}

/// The stream.
#[utoipa::path(get, path = "/api/v1/events/stream", tag = "fleet", operation_id = "stream_sensor_events",
    description = "Server-Sent Events: `event: row` with one telemetry row (JSON, `_table` names its table) as the \
        sensor sends it; `event: lagged` with `{\"skipped\": N}` when this client fell behind and N frames were \
        skipped; `event: end` when the sensor is deregistered. Nothing is replayed.",
    params(EventStreamParams),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad or missing parameter (named in `param`)", body = ErrorBody),
        (status = 404, description = "No such sensor (or another tenant's)", body = ErrorBody), AuthErrors),
    security(("bearer" = [])))]
pub async fn stream(
    State(s): State<ApiState>,
    caller: CallerExt,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    check_known(&params, &["sensor", "table"])?;
    let sensor = params.get("sensor").ok_or_else(|| ParamError::new("sensor", "required: the sensor id"))?;
    visible(&s, &caller.0, sensor)?;
    let table = params.get("table").cloned();
    let rx = s.taps.subscribe(sensor);
    let (tx, out) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(forward(rx, tx, table, s.stream_stall));
    let sse = Sse::new(tokio_stream(out)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(sse.into_response())
}

/// Copies frames to one client until it goes away, stalls, or the sensor is deregistered.
async fn forward(
    mut rx: broadcast::Receiver<vedette_actors::fleet::taps::TapFrame>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    table: Option<String>,
    stall: Duration,
) {
    let send = |e: Event| {
        let tx = tx.clone();
        async move { matches!(tokio::time::timeout(stall, tx.send(Ok(e))).await, Ok(Ok(()))) }
    };
    loop {
        let next = tokio::select! {
            r = rx.recv() => r,
            // The client went away while the sensor was quiet.
            () = tx.closed() => return,
        };
        match next {
            Ok(frame) => {
                if table.as_deref().is_some_and(|t| t != &*frame.table) {
                    continue;
                }
                for line in frame.lines.lines() {
                    if !send(Event::default().event("row").data(line)).await {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                if !send(Event::default().event("lagged").data(format!("{{\"skipped\":{n}}}"))).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = send(Event::default().event("end").data("{\"reason\":\"the sensor was deregistered\"}")).await;
                return;
            }
        }
    }
}
