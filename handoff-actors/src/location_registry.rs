//! The data-location registry actor: which node holds each value of each DAG.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use handoff_core::{DagId, FunctionId, NodeId};

use crate::result_store::WaitError;
use crate::supervision::{CountRestarts, guarded};
#[cfg(feature = "fault-injection")]
use crate::supervision::{Crash, Panicked};
use crate::waiters::{Waiters, wait};

/// The actor's name in logs and in [`Panicked`](crate::Panicked).
const ACTOR: &str = "location registry";

/// Where one DAG's values are, by function id, under a fast hash: every finished function
/// is an insert here (a validated DAG indexes its ids with the same hash).
type ById<T> = HashMap<FunctionId, T, foldhash::fast::RandomState>;

/// Records where a value lives.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RegisterLocation {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
    /// The node that holds it.
    pub node: NodeId,
}

/// Records where many values of one DAG live.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RegisterLocations {
    /// The DAG.
    pub dag: DagId,
    /// The values and their nodes.
    pub locations: Vec<(FunctionId, NodeId)>,
}

/// Looks up where a value lives.
#[derive(Debug, Message)]
#[rtype(result = "Option<NodeId>")]
pub struct LookupLocation {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
}

/// Looks up where a value lives, waiting up to `timeout` for its location to be
/// registered.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeId, WaitError>")]
pub struct WaitLocation {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
    /// How long to wait.
    pub timeout: Duration,
}

/// Forgets every location of a DAG; replies how many were forgotten.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ForgetDag {
    /// The DAG.
    pub dag: DagId,
}

/// Maps `(dag, value)` to the node holding the value.
///
/// A panic in one of its handlers stops it, and its supervisor restarts it with the
/// locations kept.
#[derive(Default)]
pub struct LocationRegistry {
    locations: HashMap<DagId, ById<NodeId>>,
    waiting: Waiters<NodeId>,
    restarts: u32,
}

impl LocationRegistry {
    /// Wakes whoever waits for these locations.
    fn notify(&mut self, dag: &DagId, located: &[(FunctionId, NodeId)]) {
        for (id, node) in located {
            self.waiting.notify(dag, id, node);
        }
    }
}

impl Actor for LocationRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for LocationRegistry {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts = self.restarts.saturating_add(1);
        tracing::warn!(
            restarts = self.restarts,
            "location registry restarting; locations kept"
        );
    }
}

impl Handler<RegisterLocation> for LocationRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterLocation, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || {
            if self.waiting.waits_on(&msg.dag) {
                self.notify(&msg.dag, &[(msg.id.clone(), msg.node.clone())]);
            }
            self.locations
                .entry(msg.dag)
                .or_default()
                .insert(msg.id, msg.node);
        });
    }
}

impl Handler<RegisterLocations> for LocationRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterLocations, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || {
            if self.waiting.waits_on(&msg.dag) {
                self.notify(&msg.dag, &msg.locations);
            }
            self.locations
                .entry(msg.dag)
                .or_default()
                .extend(msg.locations);
        });
    }
}

impl Handler<LookupLocation> for LocationRegistry {
    type Result = Option<NodeId>;

    fn handle(&mut self, msg: LookupLocation, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            self.locations.get(&msg.dag)?.get(&msg.id).cloned()
        })
        .ok()
        .flatten()
    }
}

impl Handler<WaitLocation> for LocationRegistry {
    type Result = ResponseFuture<Result<NodeId, WaitError>>;

    fn handle(&mut self, msg: WaitLocation, ctx: &mut Self::Context) -> Self::Result {
        let WaitLocation { dag, id, timeout } = msg;
        let found = guarded(ACTOR, ctx, || {
            if let Some(node) = self.locations.get(&dag).and_then(|l| l.get(&id)) {
                return Ok(node.clone());
            }
            Err(self.waiting.add(&dag, &id))
        });
        match found {
            Ok(Ok(node)) => Box::pin(async move { Ok(node) }),
            Ok(Err(rx)) => Box::pin(wait(rx, timeout, dag, id)),
            Err(_) => Box::pin(async move { Err(WaitError::StoreRestarted { dag, id }) }),
        }
    }
}

impl Handler<ForgetDag> for LocationRegistry {
    type Result = usize;

    fn handle(&mut self, msg: ForgetDag, ctx: &mut Self::Context) -> usize {
        guarded(ACTOR, ctx, || {
            self.waiting.drop_dag(&msg.dag);
            self.locations.remove(&msg.dag).map_or(0, |l| l.len())
        })
        .unwrap_or(0)
    }
}

impl Handler<CountRestarts> for LocationRegistry {
    type Result = u32;

    fn handle(&mut self, _msg: CountRestarts, _ctx: &mut Self::Context) -> u32 {
        self.restarts
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for LocationRegistry {
    type Result = Result<(), Panicked>;

    fn handle(&mut self, _msg: Crash, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            panic!("fault injection: `Crash` sent to the {ACTOR}")
        })
    }
}
