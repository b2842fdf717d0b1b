//! A supervisor that restarts failed children within a restart budget, then escalates.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// Where the current incarnation of a supervised actor can be found.
pub struct Slot<M: ractor::Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M: ractor::Message> Default for Slot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> Slot<M> {
    /// The current actor, if running.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().expect("slot lock is never poisoned").clone()
    }

    fn set(&self, r: Option<ActorRef<M>>) {
        *self.0.write().expect("slot lock is never poisoned") = r;
    }

    /// Waits until an actor is in the slot (after a restart), up to `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Option<ActorRef<M>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.get() {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to (re)start one child.
pub trait ChildSpec: Send + Sync + 'static {
    /// Name used in logs and metrics.
    fn name(&self) -> &str;
    /// Spawns a fresh incarnation linked to `supervisor`.
    fn start(&self, supervisor: ActorCell) -> StartFuture;
    /// Clears the slot (the child is gone).
    fn vacate(&self);
}

/// A typed child: `make` builds the handler and its arguments for every incarnation.
pub struct Child<A: Actor> {
    name: String,
    make: Arc<dyn Fn() -> (A, A::Arguments) + Send + Sync>,
    slot: Slot<A::Msg>,
}

impl<A: Actor> Child<A> {
    /// Describes a child; its current incarnation will be in `slot`.
    pub fn new(
        name: impl Into<String>,
        slot: Slot<A::Msg>,
        make: impl Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    ) -> Self {
        Self { name: name.into(), make: Arc::new(make), slot }
    }
}

impl<A: Actor> ChildSpec for Child<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, supervisor: ActorCell) -> StartFuture {
        let (handler, args) = (self.make)();
        let slot = self.slot.clone();
        Box::pin(async move {
            let (r, _) = A::spawn_linked(None, handler, args, supervisor).await?;
            let cell = r.get_cell();
            slot.set(Some(r));
            Ok(cell)
        })
    }

    fn vacate(&self) {
        self.slot.set(None);
    }
}

/// Restart budget: at most `max_restarts` within `window` per child.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Restarts allowed in the window.
    pub max_restarts: usize,
    /// Sliding window.
    pub window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self { max_restarts: 5, window: Duration::from_secs(60) }
    }
}

/// Supervisor messages.
pub enum SupervisorMsg {
    /// Start and supervise a child; replies once it runs.
    Add(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    /// Stop the child of this name for good (no restart); replies whether there was one.
    Remove(String, RpcReplyPort<bool>),
    /// Stop every child (in reverse start order) and stop restarting them.
    StopChildren(RpcReplyPort<()>),
}

/// The supervisor actor.
pub struct Supervisor {
    /// Name in logs.
    pub name: String,
    /// Budget per child.
    pub budget: Budget,
    /// Metrics (restarts).
    pub metrics: Metrics,
}

/// Supervisor state.
pub struct SupervisorState {
    children: HashMap<ActorId, (Arc<dyn ChildSpec>, ActorCell)>,
    order: Vec<ActorId>,
    restarts: HashMap<String, VecDeque<Instant>>,
    stopping: bool,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, _args: ()) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState { children: HashMap::new(), order: Vec::new(), restarts: HashMap::new(), stopping: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Add(spec, reply) => {
                let result = spec.start(myself.get_cell()).await.map_err(|e| e.to_string());
                if let Ok(cell) = &result {
                    state.order.push(cell.get_id());
                    state.children.insert(cell.get_id(), (spec, cell.clone()));
                }
                let _ = reply.send(result.map(|_| ()));
            }
            SupervisorMsg::Remove(name, reply) => {
                let id = state.children.iter().find(|(_, (spec, _))| spec.name() == name).map(|(id, _)| *id);
                let found = id.is_some();
                if let Some((spec, cell)) = id.and_then(|id| state.children.remove(&id)) {
                    // Out of `children` first: its termination is not a failure to restart.
                    state.order.retain(|i| *i != cell.get_id());
                    let _ = cell.stop_and_wait(Some("removed".into()), Some(Duration::from_secs(30))).await;
                    spec.vacate();
                    info!(supervisor = %self.name, child = %name, "Child removed.");
                }
                let _ = reply.send(found);
            }
            SupervisorMsg::StopChildren(reply) => {
                state.stopping = true;
                for id in state.order.iter().rev() {
                    if let Some((spec, cell)) = state.children.remove(id) {
                        let _ = cell.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(30))).await;
                        spec.vacate();
                    }
                }
                state.order.clear();
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("terminated: {}", reason.unwrap_or_else(|| "no reason".into())))
            }
            _ => return Ok(()),
        };
        let Some((spec, _)) = state.children.remove(&cell.get_id()) else { return Ok(()) };
        spec.vacate();
        state.order.retain(|id| *id != cell.get_id());
        if state.stopping {
            return Ok(());
        }
        let name = spec.name().to_string();
        let history = state.restarts.entry(name.clone()).or_default();
        let now = Instant::now();
        history.retain(|t| now.duration_since(*t) < self.budget.window);
        if history.len() >= self.budget.max_restarts {
            error!(supervisor = %self.name, child = %name, %why, "Restart budget exhausted, escalating.");
            return Err(format!(
                "child `{name}` {why}; restart budget of {} per {:?} exhausted",
                self.budget.max_restarts, self.budget.window
            )
            .into());
        }
        history.push_back(now);
        warn!(supervisor = %self.name, child = %name, %why, "Child stopped unexpectedly, restarting.");
        self.metrics.actor_restarts.with_label_values(&[&name]).inc();
        let new = spec.start(myself.get_cell()).await.map_err(|e| format!("restarting `{name}`: {e}"))?;
        info!(supervisor = %self.name, child = %name, "Child restarted.");
        state.order.push(new.get_id());
        state.children.insert(new.get_id(), (spec, new));
        Ok(())
    }
}

/// Adds a child to a running supervisor and waits until it runs.
pub async fn add_child(sup: &ActorRef<SupervisorMsg>, spec: Arc<dyn ChildSpec>) -> crate::Result<()> {
    let name = spec.name().to_string();
    let spawn_err = |reason: String| crate::ActorError::Spawn { name: name.clone(), reason };
    match sup.call(|r| SupervisorMsg::Add(spec, r), None).await {
        Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(()),
        Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(spawn_err(e)),
        Ok(_) => Err(spawn_err("supervisor did not answer".into())),
        Err(e) => Err(spawn_err(e.to_string())),
    }
}

/// Stops child `name` of a running supervisor for good; `Ok(false)`: no such child.
pub async fn remove_child(sup: &ActorRef<SupervisorMsg>, name: &str) -> crate::Result<bool> {
    let fail = |reason: String| crate::ActorError::Spawn { name: name.to_string(), reason };
    match sup.call(|r| SupervisorMsg::Remove(name.to_string(), r), None).await {
        Ok(ractor::rpc::CallResult::Success(found)) => Ok(found),
        Ok(_) => Err(fail("supervisor did not answer".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Crashy;

    impl Actor for Crashy {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _m: ActorRef<()>, _a: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(&self, _m: ActorRef<()>, _msg: (), _s: &mut ()) -> Result<(), ActorProcessingErr> {
            Err("boom".into())
        }
    }

    async fn crash_current(slot: &Slot<()>) {
        let current = slot.wait(Duration::from_secs(5)).await.expect("child running");
        current.cast(()).expect("send");
        // Wait until the supervisor noticed (the slot is vacated or replaced).
        for _ in 0..500 {
            if slot.get().map(|r| r.get_id()) != Some(current.get_id()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("supervisor did not react");
    }

    #[tokio::test]
    async fn failed_child_is_restarted_within_budget_then_supervisor_escalates() {
        let metrics = Metrics::new();
        let sup = Supervisor {
            name: "test".into(),
            budget: Budget { max_restarts: 2, window: Duration::from_secs(60) },
            metrics: metrics.clone(),
        };
        let (sup_ref, sup_join) = Actor::spawn(None, sup, ()).await.unwrap();
        let slot = Slot::<()>::default();
        add_child(&sup_ref, Arc::new(Child::new("crashy", slot.clone(), || (Crashy, ())))).await.unwrap();
        let first = slot.get().unwrap().get_id();
        crash_current(&slot).await;
        crash_current(&slot).await;
        let third = slot.wait(Duration::from_secs(5)).await.unwrap().get_id();
        assert_ne!(first, third, "restarted incarnations are new actors");
        assert_eq!(metrics.actor_restarts.with_label_values(&["crashy"]).get(), 2);
        assert!(!sup_join.is_finished(), "within budget the supervisor keeps running");
        crash_current(&slot).await;
        tokio::time::timeout(Duration::from_secs(5), sup_join)
            .await
            .expect("supervisor escalates by stopping")
            .unwrap();
        assert_eq!(metrics.actor_restarts.with_label_values(&["crashy"]).get(), 2);
    }

    #[tokio::test]
    async fn a_removed_child_stops_and_is_not_restarted() {
        let metrics = Metrics::new();
        let sup = Supervisor { name: "test".into(), budget: Budget::default(), metrics: metrics.clone() };
        let (sup_ref, sup_join) = Actor::spawn(None, sup, ()).await.unwrap();
        let (a, b) = (Slot::<()>::default(), Slot::<()>::default());
        add_child(&sup_ref, Arc::new(Child::new("a", a.clone(), || (Crashy, ())))).await.unwrap();
        add_child(&sup_ref, Arc::new(Child::new("b", b.clone(), || (Crashy, ())))).await.unwrap();
        let first = a.get().unwrap();
        assert!(remove_child(&sup_ref, "a").await.unwrap());
        assert!(a.get().is_none(), "the slot is vacated");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.get().is_none(), "not restarted");
        assert!(matches!(first.get_status(), ractor::ActorStatus::Stopped));
        assert_eq!(metrics.actor_restarts.with_label_values(&["a"]).get(), 0);
        assert!(!remove_child(&sup_ref, "a").await.unwrap(), "gone: nothing to remove");
        assert!(b.get().is_some(), "the other child runs on");
        crash_current(&b).await;
        assert!(b.wait(Duration::from_secs(5)).await.is_some(), "and is still supervised");
        assert!(!sup_join.is_finished());
    }
}
