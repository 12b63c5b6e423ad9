//! The result store actor: the values of each DAG held on this node.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use handoff_core::{DagId, FunctionId, Value};

use crate::supervision::{CountRestarts, guarded};
#[cfg(feature = "fault-injection")]
use crate::supervision::{Crash, Panicked};
use crate::waiters::{Waiters, wait};

/// The actor's name in logs and in [`Panicked`](crate::Panicked).
const ACTOR: &str = "result store";

/// One DAG's values by function id, under a fast hash: every finished function is an
/// insert here (a validated DAG indexes its ids with the same hash).
type ById<T> = HashMap<FunctionId, T, foldhash::fast::RandomState>;

/// Why a value could not be had in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The value did not arrive within the timeout.
    #[error("`{id}` of DAG `{dag}` was not available within {timeout:?}")]
    Timeout {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
        /// How long we waited.
        timeout: Duration,
    },
    /// The DAG's values were dropped while waiting.
    #[error("the values of DAG `{dag}` were dropped while waiting for `{id}`")]
    Dropped {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
    },
    /// The actor answering (the result store, or the location registry) panicked while
    /// handling the wait and restarted; what it held is kept, so asking again may succeed.
    #[error("the node's store restarted while waiting for `{id}` of DAG `{dag}`")]
    StoreRestarted {
        /// The DAG.
        dag: DagId,
        /// The value.
        id: FunctionId,
    },
}

/// Stores one value.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StoreValue {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
    /// The value.
    pub value: Value,
}

/// Stores many values of one DAG.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StoreValues {
    /// The DAG.
    pub dag: DagId,
    /// The values.
    pub values: Vec<(FunctionId, Value)>,
}

/// Gets a value held here, if any.
#[derive(Debug, Message)]
#[rtype(result = "Option<Value>")]
pub struct GetLocal {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
}

/// Gets a value held here for the user: by its DAG's own id, or, when nothing is held
/// under that id, under the one id an execution of that DAG coordinated elsewhere goes
/// by here (`dag~owner~token`; none when several executions of it are held).
#[derive(Debug, Message)]
#[rtype(result = "Option<Value>")]
pub struct FindLocal {
    /// The DAG's own id.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
}

/// True when `key` is the id an execution of `dag` coordinated on another node goes by:
/// `dag~owner~` and 32 hexadecimal digits.
fn is_execution_of(key: &DagId, dag: &DagId) -> bool {
    let Some(rest) = key
        .as_str()
        .strip_prefix(dag.as_str())
        .and_then(|rest| rest.strip_prefix('~'))
    else {
        return false;
    };
    match rest.split_once('~') {
        Some((owner, token)) => {
            !owner.is_empty()
                && !owner.contains('~')
                && token.len() == 32
                && token.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// Gets a value held here, waiting for it up to `timeout`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Value, WaitError>")]
pub struct WaitFor {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
    /// How long to wait.
    pub timeout: Duration,
}

/// Drops every value of a DAG; replies how many were dropped.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct DropDag {
    /// The DAG.
    pub dag: DagId,
}

/// Counts the values held, over all DAGs.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountValues;

/// Holds values by DAG, and the callers waiting for values not stored yet.
///
/// A panic in one of its handlers stops it, and its supervisor restarts it with the
/// values (and the callers waiting) kept.
#[derive(Default)]
pub struct ResultStore {
    values: HashMap<DagId, ById<Value>>,
    /// The MessagePack form of values served to other nodes, kept while the value is.
    encoded: HashMap<(DagId, FunctionId), Bytes>,
    waiting: Waiters<Value>,
    restarts: u32,
}

impl ResultStore {
    /// Forgets the encoded forms of a DAG's values (all of them with `ids: None`).
    fn forget_encoded(&mut self, dag: &DagId, ids: Option<&[FunctionId]>) {
        if self.encoded.is_empty() {
            return;
        }
        match ids {
            None => self.encoded.retain(|(d, _), _| d != dag),
            Some(ids) => {
                for id in ids {
                    self.encoded.remove(&(dag.clone(), id.clone()));
                }
            }
        }
    }

    fn store(&mut self, dag: &DagId, id: FunctionId, value: Value) {
        self.forget_encoded(dag, Some(std::slice::from_ref(&id)));
        self.waiting.notify(dag, &id, &value);
        self.values
            .entry(dag.clone())
            .or_default()
            .insert(id, value);
    }
}

impl Actor for ResultStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for ResultStore {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts = self.restarts.saturating_add(1);
        tracing::warn!(
            restarts = self.restarts,
            "result store restarting; stored values kept"
        );
    }
}

impl Handler<StoreValue> for ResultStore {
    type Result = ();

    fn handle(&mut self, msg: StoreValue, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || self.store(&msg.dag, msg.id, msg.value));
    }
}

impl Handler<StoreValues> for ResultStore {
    type Result = ();

    fn handle(&mut self, msg: StoreValues, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || {
            let has_waiters = self.waiting.waits_on(&msg.dag);
            if has_waiters || !self.encoded.is_empty() {
                for (id, value) in msg.values {
                    self.store(&msg.dag, id, value);
                }
            } else {
                self.values.entry(msg.dag).or_default().extend(msg.values);
            }
        });
    }
}

impl Handler<GetLocal> for ResultStore {
    type Result = Option<Value>;

    fn handle(&mut self, msg: GetLocal, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            self.values.get(&msg.dag)?.get(&msg.id).cloned()
        })
        .ok()
        .flatten()
    }
}

impl Handler<FindLocal> for ResultStore {
    type Result = Option<Value>;

    fn handle(&mut self, msg: FindLocal, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            if let Some(values) = self.values.get(&msg.dag) {
                return values.get(&msg.id).cloned();
            }
            let mut executions = self
                .values
                .iter()
                .filter(|(key, _)| is_execution_of(key, &msg.dag));
            match (executions.next(), executions.next()) {
                (Some((_, values)), None) => values.get(&msg.id).cloned(),
                _ => None,
            }
        })
        .ok()
        .flatten()
    }
}

impl Handler<WaitFor> for ResultStore {
    type Result = ResponseFuture<Result<Value, WaitError>>;

    fn handle(&mut self, msg: WaitFor, ctx: &mut Self::Context) -> Self::Result {
        let WaitFor { dag, id, timeout } = msg;
        let found = guarded(ACTOR, ctx, || {
            if let Some(value) = self.values.get(&dag).and_then(|v| v.get(&id)) {
                return Ok(value.clone());
            }
            Err(self.waiting.add(&dag, &id))
        });
        match found {
            Ok(Ok(value)) => Box::pin(async move { Ok(value) }),
            Ok(Err(rx)) => Box::pin(wait(rx, timeout, dag, id)),
            Err(_) => Box::pin(async move { Err(WaitError::StoreRestarted { dag, id }) }),
        }
    }
}

impl Handler<DropDag> for ResultStore {
    type Result = usize;

    fn handle(&mut self, msg: DropDag, ctx: &mut Self::Context) -> usize {
        guarded(ACTOR, ctx, || {
            self.waiting.drop_dag(&msg.dag);
            self.forget_encoded(&msg.dag, None);
            self.values.remove(&msg.dag).map_or(0, |v| v.len())
        })
        .unwrap_or(0)
    }
}

/// Frees some values of a DAG (their last consumer has finished); replies how many
/// were held.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct FreeValues {
    /// The DAG.
    pub dag: DagId,
    /// The values to free.
    pub ids: Vec<FunctionId>,
}

impl Handler<FreeValues> for ResultStore {
    type Result = usize;

    fn handle(&mut self, msg: FreeValues, ctx: &mut Self::Context) -> usize {
        guarded(ACTOR, ctx, || {
            self.forget_encoded(&msg.dag, Some(&msg.ids));
            let Some(values) = self.values.get_mut(&msg.dag) else {
                return 0;
            };
            let freed = msg
                .ids
                .iter()
                .filter(|id| values.remove(*id).is_some())
                .count();
            if values.is_empty() {
                self.values.remove(&msg.dag);
            }
            freed
        })
        .unwrap_or(0)
    }
}

/// Gets a value held here with its MessagePack form, when [`CacheEncoded`] kept it.
#[derive(Debug, Message)]
#[rtype(result = "Option<(Value, Option<Bytes>)>")]
pub struct GetEncoded {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
}

impl Handler<GetEncoded> for ResultStore {
    type Result = Option<(Value, Option<Bytes>)>;

    fn handle(&mut self, msg: GetEncoded, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            let value = self.values.get(&msg.dag)?.get(&msg.id)?.clone();
            let encoded = self.encoded.get(&(msg.dag, msg.id)).cloned();
            Some((value, encoded))
        })
        .ok()
        .flatten()
    }
}

/// Keeps the MessagePack form of a value held here (for serving it to other nodes in
/// chunks without encoding it again); dropped with the value.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CacheEncoded {
    /// The DAG.
    pub dag: DagId,
    /// The value's id.
    pub id: FunctionId,
    /// Its MessagePack form.
    pub bytes: Bytes,
}

impl Handler<CacheEncoded> for ResultStore {
    type Result = ();

    fn handle(&mut self, msg: CacheEncoded, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || {
            let held = self
                .values
                .get(&msg.dag)
                .is_some_and(|v| v.contains_key(&msg.id));
            if held {
                self.encoded.insert((msg.dag, msg.id), msg.bytes);
            }
        });
    }
}

/// Stores values other nodes' functions produced here (of one DAG), each with its
/// MessagePack form when there is one: one message for what [`StoreValue`] and
/// [`CacheEncoded`] do, for a batch of results.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct StoreRan {
    pub(crate) dag: DagId,
    pub(crate) values: Vec<(FunctionId, Value, Option<Bytes>)>,
}

impl Handler<StoreRan> for ResultStore {
    type Result = ();

    fn handle(&mut self, msg: StoreRan, ctx: &mut Self::Context) {
        let _ = guarded(ACTOR, ctx, || {
            let StoreRan { dag, values } = msg;
            for (id, value, encoded) in values {
                match encoded {
                    None => self.store(&dag, id, value),
                    Some(bytes) => {
                        self.store(&dag, id.clone(), value);
                        self.encoded.insert((dag.clone(), id), bytes);
                    }
                }
            }
        });
    }
}

impl Handler<CountValues> for ResultStore {
    type Result = usize;

    fn handle(&mut self, _msg: CountValues, ctx: &mut Self::Context) -> usize {
        guarded(ACTOR, ctx, || self.values.values().map(HashMap::len).sum()).unwrap_or(0)
    }
}

impl Handler<CountRestarts> for ResultStore {
    type Result = u32;

    fn handle(&mut self, _msg: CountRestarts, _ctx: &mut Self::Context) -> u32 {
        self.restarts
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for ResultStore {
    type Result = Result<(), Panicked>;

    fn handle(&mut self, _msg: Crash, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            panic!("fault injection: `Crash` sent to the {ACTOR}")
        })
    }
}
