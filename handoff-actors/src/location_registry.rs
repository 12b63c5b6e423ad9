//! The data-location registry actor: which node holds each value of each DAG.

use std::collections::HashMap;

use actix::prelude::*;
use handoff_core::{DagId, FunctionId, NodeId};

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

/// Forgets every location of a DAG; replies how many were forgotten.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ForgetDag {
    /// The DAG.
    pub dag: DagId,
}

/// Maps `(dag, value)` to the node holding the value.
#[derive(Default)]
pub struct LocationRegistry {
    locations: HashMap<DagId, HashMap<FunctionId, NodeId>>,
}

impl Actor for LocationRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for LocationRegistry {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        tracing::warn!("location registry restarting; locations kept");
    }
}

impl Handler<RegisterLocation> for LocationRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterLocation, _ctx: &mut Self::Context) {
        self.locations
            .entry(msg.dag)
            .or_default()
            .insert(msg.id, msg.node);
    }
}

impl Handler<RegisterLocations> for LocationRegistry {
    type Result = ();

    fn handle(&mut self, msg: RegisterLocations, _ctx: &mut Self::Context) {
        self.locations
            .entry(msg.dag)
            .or_default()
            .extend(msg.locations);
    }
}

impl Handler<LookupLocation> for LocationRegistry {
    type Result = Option<NodeId>;

    fn handle(&mut self, msg: LookupLocation, _ctx: &mut Self::Context) -> Self::Result {
        self.locations.get(&msg.dag)?.get(&msg.id).cloned()
    }
}

impl Handler<ForgetDag> for LocationRegistry {
    type Result = usize;

    fn handle(&mut self, msg: ForgetDag, _ctx: &mut Self::Context) -> usize {
        self.locations.remove(&msg.dag).map_or(0, |l| l.len())
    }
}
