//! The end of an execution: collecting the results held elsewhere, the reply (and what
//! it frees), and the result the caller gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use handoff_core::{DagId, FunctionId, NodeId, Results};

use crate::error::ExecuteError;
use crate::events::{Event, EventKind, now_micros};
use crate::location_registry::{ForgetDag, LocationRegistry};
use crate::report::ExecutionReport;
use crate::resource_manager::{Release, Withdraw};
use crate::result_store::{DropDag, ResultStore};

use super::DagRun;

/// How many more times results held elsewhere are collected after a failed fetch, and the
/// pause before each (times the round).
const COLLECT_ROUNDS: u32 = 3;
const COLLECT_PAUSE: Duration = Duration::from_millis(200);

/// What `execute` returns: the DAG id, every result and where each function ran.
///
/// The node's result store keeps a copy of the DAG's values while this result lives;
/// dropping it (and every clone) frees them there, unless [`keep_values`](Self::keep_values)
/// was called. The values in [`results`](Self::results) stay valid either way.
#[derive(Debug, Clone)]
pub struct ExecutionResult {
    /// The DAG's id.
    pub dag_id: DagId,
    /// Every regular function's result (those kept, with `free_intermediates`), and its node.
    pub results: Results,
    guard: Option<Arc<ValuesGuard>>,
    report: Option<Arc<ExecutionReport>>,
}

impl ExecutionResult {
    /// Where each regular function ran.
    pub fn allocations(&self) -> std::collections::BTreeMap<FunctionId, NodeId> {
        self.results.allocations()
    }

    /// What the execution did, function by function, when
    /// [`ExecuteOptions::report`](crate::ExecuteOptions::report) was set.
    pub fn report(&self) -> Option<&ExecutionReport> {
        self.report.as_deref()
    }

    /// Keeps the DAG's values in the node's result store after this result is dropped,
    /// until `NodeHandle::drop_dag` frees them.
    pub fn keep_values(&mut self) {
        if let Some(guard) = self.guard.take() {
            guard.armed.store(false, Ordering::Relaxed);
        }
    }
}

/// Frees a DAG's values on the node when dropped, if still armed.
#[derive(Debug)]
pub(crate) struct ValuesGuard {
    dag: DagId,
    store: Addr<ResultStore>,
    locations: Addr<LocationRegistry>,
    armed: AtomicBool,
}

impl Drop for ValuesGuard {
    fn drop(&mut self) {
        if self.armed.load(Ordering::Relaxed) {
            free_dag(&self.store, &self.locations, &self.dag);
        }
    }
}

/// Sends `msg` without waiting: into the mailbox if there is room, else from a task
/// (or, outside any runtime, a short-lived thread) that waits for room.
pub(crate) fn send_detached<A, M>(addr: &Addr<A>, msg: M)
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    match addr.try_send(msg) {
        Ok(()) => {}
        Err(SendError::Closed(_)) => {}
        Err(SendError::Full(msg)) => {
            let addr = addr.clone();
            let send = async move {
                let _ = addr.send(msg).await;
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(send);
                }
                Err(_) => {
                    std::thread::spawn(move || futures::executor::block_on(send));
                }
            }
        }
    }
}

/// Frees every value and location of a DAG on the node.
pub(crate) fn free_dag(store: &Addr<ResultStore>, locations: &Addr<LocationRegistry>, dag: &DagId) {
    send_detached(store, DropDag { dag: dag.clone() });
    send_detached(locations, ForgetDag { dag: dag.clone() });
}

impl DagRun {
    /// Runs a message send to another actor of the node alongside the run; the run does
    /// not reply before it completes, and fails if that actor has stopped.
    pub(super) fn awaited<T: 'static>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, MailboxError>> + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.pending_io += 1;
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.pending_io -= 1;
            if res.is_err() {
                act.fail(act.stopped_error(), ctx);
            }
            act.maybe_finish(ctx);
        }));
    }

    pub(super) fn stopped_error(&self) -> ExecuteError {
        ExecuteError::NodeStopped {
            node: self.settings.node.clone(),
            dag: self.dag().id().clone(),
        }
    }

    /// Fetches the results the caller keeps that are held on other nodes only; true when
    /// there were any (the run finishes once they are here).
    pub(super) fn collect_results(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(transport) = self.settings.transport.clone() else {
            return false;
        };
        let dag = self.shared.dag.clone();
        let wanted: Vec<usize> = (0..dag.len())
            .filter(|&i| {
                self.settings.keep[i]
                    && !dag.function(i).is_inline()
                    && self.fns[i].value.is_none()
                    && self.fns[i].node.is_some()
            })
            .collect();
        if wanted.is_empty() {
            return false;
        }
        let fetches: Vec<_> = wanted
            .iter()
            .filter_map(|&i| {
                let holder = self.fns[i].node.clone()?;
                Some(transport.fetch(self.wire.clone(), dag.function(i).id().clone(), holder))
            })
            .collect();
        self.pending_io += 1;
        let fetched = futures::future::join_all(fetches);
        ctx.spawn(fetched.into_actor(self).map(move |fetched, act, ctx| {
            act.pending_io -= 1;
            let mut lost_meanwhile = Vec::new();
            let mut failed = None;
            for (i, outcome) in wanted.into_iter().zip(fetched) {
                match outcome {
                    Ok(value) => act.fns[i].value = Some(value),
                    // Its node left while the results were collected: recomputed.
                    Err(error) if act.lost.contains(&error.node) => {
                        lost_meanwhile.push(error.node);
                    }
                    Err(error) => failed = Some(error),
                }
            }
            if act.running() {
                if !lost_meanwhile.is_empty() {
                    for node in lost_meanwhile {
                        act.recompute_lost(node, ctx);
                    }
                    act.collected = false;
                }
                if let Some(error) = failed {
                    // The node may be leaving (its departure not seen yet): collect again
                    // a few times before giving up.
                    act.collect_rounds += 1;
                    if act.collect_rounds > COLLECT_ROUNDS {
                        act.fail(ExecuteError::ResultUnavailable(error), ctx);
                    } else {
                        let pause = COLLECT_PAUSE * act.collect_rounds;
                        act.pending_io += 1;
                        ctx.run_later(pause, |act, ctx| {
                            act.pending_io -= 1;
                            act.collected = false;
                            act.maybe_finish(ctx);
                        });
                    }
                }
            }
            act.maybe_finish(ctx);
        }));
        true
    }

    /// Replies with the failure now, if not done yet, and frees the values of the DAG
    /// (the attempts still running store nothing more).
    pub(super) fn reply_failure(&mut self) {
        let Some(error) = self.failure.clone() else {
            return;
        };
        let Some(reply) = self.reply.take() else {
            return;
        };
        tracing::debug!(dag = %self.shared.dag.id(), running = self.jobs.len(), "failure told before its running attempts returned");
        free_dag(&self.store, &self.locations, self.shared.dag.id());
        let _ = reply.send(Err(error));
    }

    /// Sends what the chunk of run events being handled deferred: its results to the
    /// store (and their locations), then the values freed meanwhile, then the
    /// reservations given back.
    pub(super) fn flush_deferred(&mut self, ctx: &mut Context<Self>) {
        let Some(deferred) = self.deferred.take() else {
            return;
        };
        for (node, values) in deferred.stores {
            self.store_values(values, &node, ctx);
        }
        self.flush_frees(ctx);
        self.flush_cancels(ctx);
        if !deferred.releases.is_empty() {
            let msg = Release {
                grants: deferred.releases,
            };
            self.send_to_manager(msg, ctx);
        }
    }

    pub(super) fn maybe_finish(&mut self, ctx: &mut Context<Self>) {
        // Within a chunk of run events: checked at its end, once its results are stored.
        if self.deferred.is_some() {
            return;
        }
        let done = !self.running() || self.remaining == 0;
        if self.finishing || !done || self.pending_io > 0 {
            return;
        }
        if !self.jobs.is_empty() {
            // A failure is told at once; the run lives on until the attempts still running
            // return (their code may not look at its cancellation), keeping their
            // reservations until then and reporting their ends in the events.
            self.reply_failure();
            return;
        }
        if self.running() && !self.collected {
            self.collected = true;
            if self.collect_results(ctx) {
                return;
            }
        }
        self.finishing = true;
        if let Some(transport) = &self.settings.transport
            && !self.remote_nodes.is_empty()
            && !(self.settings.keep_values && self.failure.is_none() && !self.cancelled)
        {
            // The caller has every result it keeps (fetched here); the other nodes drop
            // theirs now.
            let nodes = std::mem::take(&mut self.remote_nodes);
            transport.forget(self.wire.clone(), nodes);
        }
        // Give back anything still held (granted after a failure, or queued), then reply.
        let withdraw = self.manager.send(Withdraw {
            requester: self.settings.requester,
        });
        ctx.wait(withdraw.into_actor(self).map(|_, act, ctx| {
            let dag_id = act.shared.dag.id().clone();
            let results = Results::new(
                act.shared.dag.clone(),
                act.fns.iter_mut().map(|f| f.value.take()).collect(),
                act.fns.iter_mut().map(|f| f.node.take()).collect(),
            );
            let mut outcome = if let Some(error) = act.failure.take() {
                if act.reply.is_some() {
                    free_dag(&act.store, &act.locations, &dag_id);
                }
                Err(error)
            } else if act.cancelled {
                free_dag(&act.store, &act.locations, &dag_id);
                Err(ExecuteError::Cancelled {
                    dag: dag_id,
                    finished: results,
                })
            } else {
                let guard = (!act.settings.keep_values).then(|| {
                    Arc::new(ValuesGuard {
                        dag: dag_id.clone(),
                        store: act.store.clone(),
                        locations: act.locations.clone(),
                        armed: AtomicBool::new(true),
                    })
                });
                Ok(ExecutionResult {
                    dag_id,
                    results,
                    guard,
                    report: None,
                })
            };
            let ok = outcome.is_ok();
            if let Some(recorder) = act.recorder.take() {
                let transport = act.settings.transport.clone();
                let name_of = |node: &NodeId| transport.as_ref().and_then(|t| t.node_name(node));
                let report = recorder.finish(&act.shared.dag, ok, now_micros(), name_of);
                if let Ok(done) = &mut outcome {
                    done.report = Some(report);
                }
            }
            if act.trace {
                tracing::debug!(dag = %act.shared.dag.id(), ok, "ended");
            }
            if let Some(sink) = act.sink.take() {
                sink.close(Event {
                    at_micros: now_micros(),
                    dag: act.shared.dag.id().clone(),
                    kind: EventKind::Ended { ok },
                });
            }
            if let Some(reply) = act.reply.take() {
                let _ = reply.send(outcome);
            }
            ctx.stop();
        }));
    }
}
