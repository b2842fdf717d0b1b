//! `GET /api/v1/alerts/stream`: the live alert stream (Server-Sent Events). Each event's `id`
//! is the alert's position in the history, so a client that reconnects with `Last-Event-ID`
//! (or `?after=`) gets everything it missed, across engine restarts within retention, then live
//! alerts.
//!
//! Each client reads the history itself (nothing is buffered per client but a small queue),
//! so a slow client costs no memory; one that reads nothing for `history.stream_stall_timeout`
//! is cut off with a final `cutoff` event saying where to resume.
//!
//! Triage changes of the client's tenant's alerts come as `event: triage` (no `id`: they are
//! not replayed on resume), so that every console shows an acknowledgement the moment another
//! analyst makes it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::alerts::{scoped_filter, tokio_stream};
use super::error::{ApiError, ApiResult};
use super::schema::{AlertFilterParams, AuthErrors, ErrorBody, StreamParams};
use super::{ApiState, CallerExt};
use crate::history::query::{FILTER_PARAMS, Filter, ParamError, check_known};
use crate::history::triage::TriageNotice;
use crate::history::{Dir, History};

/// Events queued per client (one slot is kept for the cut-off notice).
const QUEUE: usize = 32;
/// Alerts read from the history per step.
const STEP: usize = 64;
/// Most ids in one `triage` event; a larger change says only how many (the client reloads).
const TRIAGE_IDS: usize = 1000;

/// History reads of all stream clients at once: a burst of alerts wakes every client together,
/// and each blocking read on its own thread (with its own allocator arena) would make memory
/// grow with the number of clients.
static READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The stream.
#[utoipa::path(get, path = "/api/v1/alerts/stream", tag = "alerts",
    description = "Server-Sent Events: `event: alert` with `id` = position and the alert JSON as `data`; \
        `event: triage` when alerts of the caller's tenant change state: `{\"state\", \"by\", \"at\", \"note\", \
        \"ids\": [...]}` (`\"ids\": null` with `\"count\"` for more than 1000 alerts, `{\"lagged\": N}` after N \
        missed changes: read the list again); `event: cutoff` when the client read nothing for too long \
        (reconnect with Last-Event-ID). Without Last-Event-ID or `after`, only new alerts are sent.",
    params(AlertFilterParams, StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (a position)")),
    responses((status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad or unknown parameter (named in `param`)", body = ErrorBody), AuthErrors), security(("bearer" = [])))]
pub async fn stream(
    State(s): State<ApiState>,
    caller: CallerExt,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let mut allowed: Vec<&str> = FILTER_PARAMS.to_vec();
    allowed.push("after");
    check_known(&params, &allowed)?;
    let filter = scoped_filter(&caller.0, &params)?;
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(position("Last-Event-ID", v.to_str().unwrap_or("?"))?),
        None => params.get("after").map(|a| position("after", a)).transpose()?,
    };
    // A position beyond the head (a history that was wiped) resumes from the head.
    let start = resume.map_or_else(|| s.history.head(), |r| r.min(s.history.head()));
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(QUEUE);
    let clients = s.metrics.api_stream_clients.clone();
    clients.inc();
    let notices = s.history.triage().subscribe();
    tokio::spawn(async move {
        feed(Arc::clone(&s.history), filter, start, tx, s.stream_stall, notices).await;
        clients.dec();
    });
    let sse = Sse::new(tokio_stream(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(sse.into_response())
}

fn position(name: &str, v: &str) -> Result<u64, ApiError> {
    v.trim()
        .parse()
        .map_err(|_| ApiError::from(ParamError::new(name, format!("`{v}` is not an event id (a position)"))))
}

/// Sends `event`, keeping a slot for the cut-off notice; `false`: stop (the client is gone,
/// or read nothing for `stall` and was told to resume after `after`).
async fn send(tx: &mpsc::Sender<Result<Event, Infallible>>, event: Event, after: u64, stall: Duration) -> bool {
    match tokio::time::timeout(stall, tx.reserve_many(2)).await {
        Ok(Ok(mut permits)) => {
            permits.next().expect("two permits").send(Ok(event));
            true
        }
        Ok(Err(_)) => false, // client gone
        Err(_) => {
            let _ = tx.try_send(Ok(cutoff(after, "the client read nothing for too long")));
            false
        }
    }
}

/// The `triage` event of `notice` for a client reading with `filter`: only its tenant's
/// alerts (`None`: none of them changed).
fn triage_event(notice: &TriageNotice, filter: &Filter) -> Option<Event> {
    let ids: Vec<&uuid::Uuid> = notice
        .alerts
        .iter()
        .filter(|(_, tenant)| filter.tenant.as_deref().is_none_or(|t| t == tenant))
        .map(|(id, _)| id)
        .collect();
    if ids.is_empty() {
        return None;
    }
    let mut data = serde_json::json!({"state": notice.state, "by": notice.by, "at": notice.at, "note": notice.note});
    if ids.len() <= TRIAGE_IDS {
        data["ids"] = serde_json::json!(ids);
    } else {
        data["ids"] = serde_json::Value::Null;
        data["count"] = ids.len().into();
    }
    Some(Event::default().event("triage").data(data.to_string()))
}

/// The event for what a triage subscription received; `None`: nothing for this client, or
/// the changes ended (the history is gone).
fn notice_event(
    received: Result<Arc<TriageNotice>, tokio::sync::broadcast::error::RecvError>,
    filter: &Filter,
) -> Option<Event> {
    use tokio::sync::broadcast::error::RecvError;
    match received {
        Ok(notice) => triage_event(&notice, filter),
        Err(RecvError::Lagged(n)) => {
            Some(Event::default().event("triage").data(serde_json::json!({"lagged": n}).to_string()))
        }
        Err(RecvError::Closed) => None,
    }
}

/// Feeds one client from `after` on until it goes away or stalls.
async fn feed(
    history: Arc<History>,
    filter: Filter,
    mut after: u64,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    stall: Duration,
    mut notices: tokio::sync::broadcast::Receiver<Arc<TriageNotice>>,
) {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut head = history.subscribe();
    loop {
        // Triage changes that came while alerts were being sent.
        loop {
            let received = match notices.try_recv() {
                Ok(n) => Ok(n),
                Err(TryRecvError::Lagged(n)) => Err(tokio::sync::broadcast::error::RecvError::Lagged(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            };
            if let Some(event) = notice_event(received, &filter)
                && !send(&tx, event, after, stall).await
            {
                return;
            }
        }
        let seen_head = *head.borrow_and_update();
        let (h, f) = (Arc::clone(&history), filter.clone());
        let Ok(permit) = READS.acquire().await else { return };
        let read = tokio::task::spawn_blocking(move || h.scan(&f, Dir::Asc, after, STEP)).await;
        drop(permit);
        let batch = match read {
            Ok(Ok(b)) => b,
            _ => {
                let _ = tx.try_send(Ok(cutoff(after, "the history could not be read")));
                return;
            }
        };
        let full = batch.len() == STEP;
        for stored in batch {
            let event = Event::default()
                .id(stored.position.to_string())
                .event("alert")
                .data(String::from_utf8_lossy(&stored.json));
            if !send(&tx, event, after, stall).await {
                return;
            }
            after = stored.position;
        }
        if full {
            continue;
        }
        // Everything matching up to the head seen before the scan was sent.
        after = after.max(seen_head);
        tokio::select! {
            r = head.changed() => if r.is_err() { return },
            () = tx.closed() => return,
            received = notices.recv() => {
                if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                if let Some(event) = notice_event(received, &filter)
                    && !send(&tx, event, after, stall).await
                {
                    return;
                }
            }
        }
    }
}

fn cutoff(after: u64, reason: &str) -> Event {
    Event::default()
        .id(after.to_string())
        .event("cutoff")
        .data(serde_json::json!({"reason": reason, "resume_after": after}).to_string())
}
