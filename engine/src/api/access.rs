//! The access layer: runs before every handler. Looks the route up in [`super::ROUTES`],
//! establishes the caller from its bearer token, checks role and scope, applies the token's
//! rate limit, and records mutating calls (allowed or refused) in the audit log.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use vedette_config::OpenStatus;

use super::error::ApiError;
use super::{Access, ApiState, RouteSpec, route_spec};
use crate::auth::audit::AuditEntry;
use crate::auth::{Caller, Role};

/// The peer address of a connection (plain or TLS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::listener::TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::listener::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The middleware.
pub async fn layer(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let template = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    let Some(spec) = route_spec(&method, &template) else {
        // Fail closed: a route without an access rule is a bug, never an open door.
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("route {method} {template} has no access rule"),
        )
        .into_response();
    };
    let peer = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0.0);
    let target = req.uri().path().to_string();
    let presented = bearer(&req);
    let (caller, decision) = decide(&s, spec, peer, presented.as_deref());
    let response = match decision {
        Ok(()) => {
            if let Some(c) = &caller {
                req.extensions_mut().insert(c.clone());
            }
            next.run(req).await
        }
        Err(e) => e.to_response(),
    };
    s.metrics.api_requests.with_label_values(&[spec.path, response.status().as_str()]).inc();
    if spec.mutating {
        audit(&s, spec, &target, caller, response.status());
    }
    response
}

/// Why a request was refused before its handler.
enum Refused {
    Unauthenticated(String),
    Forbidden(String),
    Limited(std::time::Duration),
}

impl Refused {
    fn to_response(&self) -> Response {
        match self {
            Self::Unauthenticated(m) => {
                let mut r = ApiError::new(StatusCode::UNAUTHORIZED, m.clone()).into_response();
                r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                r
            }
            Self::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m.clone()).into_response(),
            Self::Limited(wait) => ApiError::too_many(*wait).into_response(),
        }
    }
}

fn bearer(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// The caller (when a valid token was presented) and whether the request may proceed.
fn decide(
    s: &ApiState,
    spec: &RouteSpec,
    peer: Option<SocketAddr>,
    token: Option<&str>,
) -> (Option<Caller>, Result<(), Refused>) {
    let (role, fleet) = match spec.access {
        Access::Open => return (None, Ok(())),
        Access::Status => {
            let open = match s.config.open_status {
                OpenStatus::Always => true,
                OpenStatus::Never => false,
                OpenStatus::Loopback => peer.is_some_and(|p| p.ip().is_loopback()),
            };
            if open && token.is_none() {
                return (None, Ok(()));
            }
            (Role::Viewer, false)
        }
        Access::Tenant(r) => (r, false),
        Access::Fleet(r) => (r, true),
    };
    let Some(token) = token else {
        return (None, Err(Refused::Unauthenticated(crate::auth::store::Refusal::Missing.to_string())));
    };
    let caller = match s.tokens.verify(token, chrono::Utc::now()) {
        Ok(c) => c,
        Err(e) => return (None, Err(Refused::Unauthenticated(e.to_string()))),
    };
    let verdict = authorize(s, spec, &caller, role, fleet);
    (Some(caller), verdict)
}

fn authorize(s: &ApiState, spec: &RouteSpec, caller: &Caller, role: Role, fleet: bool) -> Result<(), Refused> {
    if caller.role < role {
        return Err(Refused::Forbidden(format!(
            "{} {} needs role `{}`; this token has `{}`",
            spec.method,
            spec.path,
            role.as_str(),
            caller.role.as_str()
        )));
    }
    if fleet && !caller.fleet_wide() {
        return Err(Refused::Forbidden(format!(
            "{} {} changes what every tenant shares and needs a fleet-wide token (tenant `*`); this token is \
             scoped to tenant `{}`",
            spec.method, spec.path, caller.tenant
        )));
    }
    s.limiter.check(&caller.token_id, Instant::now()).map_err(Refused::Limited)
}

fn audit(s: &ApiState, spec: &RouteSpec, target: &str, caller: Option<Caller>, status: StatusCode) {
    let outcome = if status.is_success() {
        "ok"
    } else if matches!(status.as_u16(), 401 | 403 | 404 | 429) {
        "refused"
    } else {
        "failed"
    };
    let (token_id, token_name, tenant) = match caller {
        Some(c) => (c.token_id, c.name, c.tenant),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let entry = AuditEntry {
        seq: 0,
        at: chrono::Utc::now(),
        token_id,
        token_name,
        tenant,
        method: spec.method.into(),
        route: spec.path.into(),
        target: target.into(),
        status: status.as_u16(),
        outcome: outcome.into(),
    };
    if let Err(e) = s.audit.record(entry) {
        tracing::error!(error = %e, "Writing the audit log failed.");
    }
}
