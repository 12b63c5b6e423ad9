//! Outcomes: what a job's report changes (values made, dependents ready, failed attempts
//! handed on), and where the values go (stored, freed once consumed).

use std::cmp::Reverse;
use std::time::Duration;

use actix::prelude::*;
use handoff_core::{CallError, FunctionId, NO_NEXT, NodeId, Value};

use crate::events::{EventKind, now_micros};
use crate::executor::{Hold, JobReport};
use crate::location_registry::RegisterLocations;
use crate::result_store::{FreeValues, StoreValues};

use super::DagRun;
use super::reserve::SHAPE_NONE;

impl DagRun {
    pub(super) fn on_finished(&mut self, report: JobReport, ctx: &mut Context<Self>) {
        // A job that timed out or was cancelled has already been settled.
        let Some(entry) = self.jobs.remove(&report.job) else {
            return;
        };
        if let Some(&(index, _)) = entry.calls.first()
            && self.suspect_running == Some(index)
        {
            self.next_suspect(ctx);
        }
        // A slot goes back now; a reservation once this job's outcomes are handled (the
        // calls they make ready may reuse it).
        let reservation = matches!(entry.hold, Hold::Reservation(_));
        if !reservation {
            self.release(entry.hold, ctx);
        }
        // Calls the job handed back for lack of time are still scheduled: back in the
        // ready queue (or waiting for a reservation) as they were.
        let mut returned = Vec::new();
        if self.running() {
            for index in report.returned {
                if reservation {
                    returned.push(index);
                } else {
                    self.ready
                        .push((self.settings.ranks[index as usize], Reverse(index)));
                }
            }
        }
        let report_ran = report.outcomes.len();
        // Calls the job handed back unstarted are ready again, ahead of the rest.
        let mut newly_ready = report.unrun;
        let mut stored = Vec::with_capacity(report.outcomes.len());
        let mut finished = Vec::new();
        let observed = self.observed();
        for outcome in report.outcomes {
            let i = outcome.index as usize;
            self.fns[i].attempts = outcome.attempt;
            if let Some(recorder) = &mut self.recorder {
                let result = outcome.result.as_ref().map(|_| outcome.size);
                let times = (outcome.started_micros, outcome.finished_micros);
                recorder.attempt(outcome.index, outcome.attempt, &report.node, times, result);
            }
            let function = self.id_of(outcome.index);
            if observed {
                let (function, node) = (function.clone(), report.node.clone());
                let attempt = outcome.attempt;
                self.emit(
                    outcome.started_micros,
                    EventKind::Started {
                        function,
                        attempt,
                        node,
                    },
                );
            }
            match outcome.result {
                // Already finished (an earlier attempt's report): nothing to do.
                Ok(_) if self.fns[i].node.is_some() => {}
                Ok(value) => {
                    let remote = report.node != self.settings.node;
                    if observed {
                        let (function, node) = (function.clone(), report.node.clone());
                        let attempt = outcome.attempt;
                        self.emit(
                            outcome.finished_micros,
                            EventKind::Finished {
                                function,
                                attempt,
                                node,
                            },
                        );
                    }
                    stored.push((function, value.clone()));
                    if self.settings.free_intermediates {
                        finished.push(outcome.index);
                    }
                    self.fns[i].finish(value, report.node.clone(), outcome.size, remote);
                    self.remaining -= 1;
                    // A function run elsewhere had no chain successor run after it.
                    let chained = if remote {
                        if !self.remote_nodes.contains(&report.node) {
                            self.remote_nodes.push(report.node.clone());
                        }
                        NO_NEXT
                    } else {
                        self.shared.chain_next[i]
                    };
                    for &d in self.shared.dag.dependents(i) {
                        let dependent = &mut self.fns[d as usize];
                        if dependent.node.is_some() {
                            continue;
                        }
                        dependent.pending = dependent.pending.saturating_sub(1);
                        if dependent.pending == 0 && d != chained && !dependent.scheduled {
                            newly_ready.push(d);
                        }
                    }
                }
                Err(error) => {
                    if observed {
                        let node = report.node.clone();
                        let (attempt, error) = (outcome.attempt, error.clone());
                        self.emit(
                            outcome.finished_micros,
                            EventKind::Failed {
                                function,
                                attempt,
                                node,
                                error,
                            },
                        );
                    }
                    // The next attempt goes elsewhere where it can: after the function's
                    // own failure, and after the node could not take it (a lost node is
                    // out of the cluster anyway).
                    if !matches!(error, CallError::NodeLost { .. }) {
                        self.fns[i].blame_mut().failed_on = Some(report.node.clone());
                    }
                    self.on_failed_attempt(
                        outcome.index,
                        outcome.attempt,
                        error,
                        &mut newly_ready,
                        ctx,
                    );
                }
            }
        }
        // After a failure nothing more is kept (the values were freed with the reply).
        if !stored.is_empty() && self.running() {
            self.store_values(stored, &report.node, ctx);
            if self.settings.free_intermediates {
                for index in finished {
                    self.consumed(index);
                }
                self.flush_frees(ctx);
            }
        }
        if self.running() {
            self.schedule(newly_ready, ctx);
        }
        if reservation {
            if let (Hold::Reservation(grant), Some(since)) = (entry.hold, entry.since)
                && let Some(lease) = self.leases.get(&grant)
                && lease.shape != SHAPE_NONE
            {
                // Only a job that ran past its budget says its calls are slow (a short
                // job's time is mostly the hand-off to its thread).
                let took = since.elapsed();
                let ran = (report_ran as u32).max(1);
                self.shape_pace[lease.shape as usize] = if took > crate::executor::JOB_BUDGET {
                    took / ran
                } else {
                    Duration::ZERO
                };
            }
            // Handed back calls wait again, first in line for the reservation when it is
            // kept; those it does not take ask for one. (Their withdrawals, sent for
            // requests already gone, change nothing.)
            let mut requests = Vec::new();
            let mut touched: Vec<u32> = Vec::new();
            for &index in &returned {
                match self.await_reservation(index) {
                    SHAPE_NONE => requests.push(self.request_for(index)),
                    shape if !touched.contains(&shape) => touched.push(shape),
                    _ => {}
                }
            }
            self.reuse_or_release(entry.hold, &entry.node, ctx);
            for shape in touched {
                self.top_up(shape);
            }
            self.send_requests(requests, ctx);
        }
        self.maybe_finish(ctx);
    }

    /// A function finished: its inputs lose a consumer, and values nobody needs any
    /// more are freed (unless kept).
    pub(super) fn consumed(&mut self, index: u32) {
        let i = index as usize;
        for k in 0..self.shared.dag.deps(i).len() {
            let d = self.shared.dag.deps(i)[k] as usize;
            // A function run again (its value was lost with a node) consumes again.
            self.fns[d].consumers = self.fns[d].consumers.saturating_sub(1);
            if self.fns[d].consumers == 0 {
                self.free(d);
            }
        }
        if self.fns[i].consumers == 0 {
            self.free(i);
        }
    }

    pub(super) fn free(&mut self, index: usize) {
        if self.settings.keep[index] || self.fns[index].value.is_none() {
            return;
        }
        self.fns[index].value = None;
        let function = self.shared.dag.function(index).id().clone();
        if self.observed() {
            self.emit(
                now_micros(),
                EventKind::Freed {
                    function: function.clone(),
                },
            );
        }
        self.to_free.push(function);
    }

    pub(super) fn flush_frees(&mut self, ctx: &mut Context<Self>) {
        // Freed after the chunk's results are stored (a free must not overtake the store).
        if self.to_free.is_empty() || self.deferred.is_some() {
            return;
        }
        let msg = FreeValues {
            dag: self.shared.dag.id().clone(),
            ids: std::mem::take(&mut self.to_free),
        };
        let fut = self.store.send(msg);
        self.awaited(fut, ctx);
    }

    /// Records where each value lives (`node`) and keeps those that are here (`Some`) in
    /// the node's result store.
    pub(super) fn store_values(
        &mut self,
        values: Vec<(FunctionId, Option<Value>)>,
        node: &NodeId,
        ctx: &mut Context<Self>,
    ) {
        if let Some(deferred) = &mut self.deferred {
            match deferred.stores.iter_mut().find(|(n, _)| n == node) {
                Some((_, group)) => group.extend(values),
                None => deferred.stores.push((node.clone(), values)),
            }
            return;
        }
        let dag = self.shared.dag.id().clone();
        if self.observed() {
            for (id, _) in &values {
                let kind = EventKind::Stored {
                    function: id.clone(),
                    node: node.clone(),
                };
                self.emit(now_micros(), kind);
            }
        }
        let locations = values
            .iter()
            .map(|(id, _)| (id.clone(), node.clone()))
            .collect();
        let values = values
            .into_iter()
            .filter_map(|(id, value)| Some((id, value?)))
            .collect();
        let store = self.store.send(StoreValues {
            dag: dag.clone(),
            values,
        });
        let register = self.locations.send(RegisterLocations { dag, locations });
        self.awaited(async move { store.await.and(register.await) }, ctx);
    }
}
