//! QUIC ingest: the listener actor and the per-connection session protocol.

mod alerts;
mod enroll;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;
use vedette_schemas::tables::Catalog;

use crate::batcher::BatcherMsg;
use crate::metrics::Metrics;
use crate::sessions::{Acker, Sessions};
use crate::supervisor::Slot;

/// Protocol limits announced in WELCOME.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame (type byte + body).
    pub max_frame_bytes: u32,
    /// Largest rows per data frame.
    pub max_frame_rows: u32,
    /// Heartbeat interval asked of sensors.
    pub heartbeat: Duration,
    /// How long a new connection may take to send HELLO.
    pub hello_timeout: Duration,
}

/// Where a table's admitted frames go, and its in-flight budget.
#[derive(Clone)]
pub struct TableRoute {
    /// The table's batcher.
    pub batcher: Slot<BatcherMsg>,
    /// Permits = frames that may be in flight for the table.
    pub inflight: Arc<Semaphore>,
}

/// Everything sessions share.
pub struct IngestContext {
    /// Known tables.
    pub catalog: Arc<Catalog>,
    /// Routes by table.
    pub routes: HashMap<String, TableRoute>,
    /// Completes frames.
    pub acker: Arc<Acker>,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// Registered sensors and revocations.
    pub registry: Arc<crate::registry::Registry>,
    /// Commands waiting for sensors.
    pub commands: Arc<crate::fleet::commands::Commands>,
    /// When sensors were last heard from.
    pub liveness: Arc<crate::fleet::liveness::Liveness>,
    /// Live taps on sensors' telemetry.
    pub taps: Arc<crate::fleet::taps::Taps>,
    /// Where forwarded alerts from edges are committed (every sink's spool).
    pub router: crate::sinks::Router,
    /// This engine's applied rule set, sent to edges (RULES) now and after every apply.
    pub rule_sets: Option<tokio::sync::watch::Receiver<Arc<vedette_schemas::fleet::RuleSet>>>,
    /// Signs enrollments and renewals; `None`: this engine has no CA key (both are off).
    pub issuer: Option<Arc<dyn crate::fleet::CertIssuer>>,
    /// Limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Metrics,
    /// False once shutdown began: new connections are refused, data streams stop reading.
    pub accepting: AtomicBool,
}

/// The listener actor: accepts connections on an endpoint and runs one session task each.
pub struct IngestListener {
    /// The QUIC endpoint (already bound, with the server config).
    pub endpoint: quinn::Endpoint,
    /// Shared context.
    pub ctx: Arc<IngestContext>,
}

/// Listener state: the accept loop and its sessions.
pub struct ListenerState {
    accept: tokio::task::JoinHandle<()>,
}

impl Actor for IngestListener {
    type Msg = ();
    type State = ListenerState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<ListenerState, ActorProcessingErr> {
        let endpoint = self.endpoint.clone();
        let ctx = Arc::clone(&self.ctx);
        let accept = tokio::spawn(async move {
            let mut sessions = JoinSet::new();
            loop {
                tokio::select! {
                    incoming = endpoint.accept() => {
                        let Some(incoming) = incoming else { break };
                        if !ctx.accepting.load(Ordering::Acquire) {
                            incoming.refuse();
                            continue;
                        }
                        sessions.spawn(session::run(Arc::clone(&ctx), incoming));
                    }
                    Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                        if let Err(e) = done { debug!(error = %e, "Session task ended abnormally."); }
                    }
                }
            }
            sessions.shutdown().await;
        });
        Ok(ListenerState { accept })
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _msg: (),
        _state: &mut ListenerState,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<()>, state: &mut ListenerState) -> Result<(), ActorProcessingErr> {
        state.accept.abort();
        Ok(())
    }
}
