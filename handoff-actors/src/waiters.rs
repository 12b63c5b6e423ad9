//! Callers waiting for something of a DAG to appear (a value in the result store, a
//! location in the location registry), woken without polling.

use std::collections::HashMap;
use std::time::Duration;

use futures::channel::oneshot;
use handoff_core::{DagId, FunctionId};

use crate::result_store::WaitError;

/// Who waits for what, by DAG and id.
pub(crate) struct Waiters<T> {
    waiting: HashMap<DagId, HashMap<FunctionId, Vec<oneshot::Sender<T>>>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            waiting: HashMap::new(),
        }
    }
}

impl<T: Clone> Waiters<T> {
    /// True when someone waits for something of `dag` (a cheap check before `notify`).
    pub(crate) fn waits_on(&self, dag: &DagId) -> bool {
        self.waiting.contains_key(dag)
    }

    /// Registers a waiter for `id` of `dag` (forgetting those that gave up).
    pub(crate) fn add(&mut self, dag: &DagId, id: &FunctionId) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let waiters = self
            .waiting
            .entry(dag.clone())
            .or_default()
            .entry(id.clone())
            .or_default();
        waiters.retain(|w| !w.is_canceled());
        waiters.push(tx);
        rx
    }

    /// Wakes whoever waits for `id` of `dag` with `value`.
    pub(crate) fn notify(&mut self, dag: &DagId, id: &FunctionId, value: &T) {
        let Some(waiting) = self.waiting.get_mut(dag) else {
            return;
        };
        for tx in waiting.remove(id).into_iter().flatten() {
            let _ = tx.send(value.clone());
        }
        if waiting.is_empty() {
            self.waiting.remove(dag);
        }
    }

    /// Drops every waiter of `dag`: they see [`WaitError::Dropped`].
    pub(crate) fn drop_dag(&mut self, dag: &DagId) {
        self.waiting.remove(dag);
    }
}

/// Awaits a waiter's wake-up for up to `timeout` (outside the actor: a panic here could
/// not reach its thread).
pub(crate) async fn wait<T>(
    rx: oneshot::Receiver<T>,
    timeout: Duration,
    dag: DagId,
    id: FunctionId,
) -> Result<T, WaitError> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(_)) => Err(WaitError::Dropped { dag, id }),
        Err(_) => Err(WaitError::Timeout { dag, id, timeout }),
    }
}
