//! Failures: retries after failed attempts, timeouts, node deaths and the suspects they
//! make, values lost with a node and recomputed, and stopping the execution (a failure,
//! a cancel, the deadline).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use handoff_core::{CallError, FunctionId, NodeId};

use crate::error::ExecuteError;
use crate::events::{EventKind, now_micros};

use super::DagRun;
use super::state::JobEntry;

/// The most re-runs of one function, after attempts that could not run where they were
/// sent, that do not count against `max_retries`.
const MAX_FREE_RERUNS: u32 = 16;

impl DagRun {
    /// Starts the next suspect waiting, if any (the one in flight has ended).
    pub(super) fn next_suspect(&mut self, ctx: &mut Context<Self>) {
        self.suspect_running = None;
        let Some(transport) = self.settings.transport.clone() else {
            return;
        };
        while let Some((index, hold, node)) = self.suspects_waiting.pop_front() {
            if !self.running() || self.lost.contains(&node) {
                self.release(hold, ctx);
                if self.running() {
                    self.fns[index as usize].unschedule();
                    self.schedule(vec![index], ctx);
                }
                continue;
            }
            self.start_remote(index, hold, node, &transport, ctx);
            return;
        }
    }

    /// A failed attempt: retried after the backoff while attempts remain, else the
    /// execution fails.
    pub(super) fn on_failed_attempt(
        &mut self,
        index: u32,
        attempt: u32,
        error: CallError,
        newly_ready: &mut Vec<u32>,
        ctx: &mut Context<Self>,
    ) {
        let i = index as usize;
        // A node died while running it. The first death is counted against every
        // function that was there (nothing tells them apart yet); after that, the
        // function is a suspect: it runs alone among suspects and reports when it starts,
        // and a death counts only if it was running.
        if let CallError::NodeLost { node, running, .. } = &error
            && (self.fns[i].deaths == 0 || *running)
        {
            self.fns[i].deaths += 1;
            let blame = self.fns[i].blame_mut();
            if !blame.death_nodes.contains(node) {
                blame.death_nodes.push(node.clone());
            }
            if self.fns[i].deaths >= self.settings.max_node_deaths {
                let err = ExecuteError::CrashLoop {
                    function: self.id_of(index),
                    deaths: self.fns[i].deaths,
                    nodes: self.fns[i].blame_mut().death_nodes.clone(),
                };
                self.fail(err, ctx);
                return;
            }
        }
        // An attempt that could not run where it was sent is not the function's failure:
        // it runs again without counting (up to a bound, so an unusable cluster still ends).
        if matches!(
            error,
            CallError::Unavailable { .. } | CallError::NodeLost { .. }
        ) && self.fns[i].free_reruns < MAX_FREE_RERUNS
        {
            self.fns[i].free_reruns += 1;
        }
        let counted = attempt.saturating_sub(self.fns[i].free_reruns);
        let f = self.shared.dag.function(i);
        let allowed = f
            .max_retries_override()
            .unwrap_or(self.settings.max_retries);
        tracing::debug!(dag = %self.shared.dag.id(), function = %f.id(), attempt, %error, "attempt failed");
        if counted > allowed || error.is_permanent() {
            let err = ExecuteError::FunctionFailed {
                function: f.id().clone(),
                attempts: counted,
                last_error: error,
            };
            self.fail(err, ctx);
            return;
        }
        if self.fns[i].pending > 0 {
            // A dependency is being recomputed: it runs again once that is done.
            self.fns[i].unschedule();
            return;
        }
        let backoff = f.backoff_override().unwrap_or(self.settings.backoff);
        let random = self.random();
        let delay = backoff.delay(attempt, random);
        if self.observed() {
            let function = self.id_of(index);
            let kind = EventKind::Retried {
                function,
                next_attempt: attempt + 1,
                backoff: delay,
            };
            self.emit(now_micros(), kind);
        }
        if delay.is_zero() {
            newly_ready.push(index);
        } else {
            ctx.run_later(delay, move |act, ctx| {
                if act.running() {
                    act.schedule(vec![index], ctx);
                }
            });
        }
    }

    /// An attempt ran past its timeout: it fails, its slot or reservation is given back
    /// at once, and its thread is told to stop (whatever it later returns is ignored).
    pub(super) fn on_timeout(&mut self, job: u64, after: Duration, ctx: &mut Context<Self>) {
        let Some(entry) = self.jobs.remove(&job) else {
            return;
        };
        if let Some(&(index, _)) = entry.calls.first()
            && self.suspect_running == Some(index)
        {
            self.next_suspect(ctx);
        }
        entry.token.store(true, Ordering::Relaxed);
        self.abandon(&entry);
        self.release(entry.hold, ctx);
        let Some(&(index, attempt)) = entry.calls.first() else {
            return;
        };
        self.fns[index as usize].attempts = attempt;
        let error = CallError::TimedOut {
            code: self.shared.dag.function(index as usize).code().clone(),
            after,
        };
        if let Some(recorder) = &mut self.recorder {
            let node = &entry.node;
            let times = (entry.launched, now_micros());
            recorder.attempt(index, attempt, node, times, Err(&error));
        }
        if self.observed() {
            let function = self.id_of(index);
            let node = self.settings.node.clone();
            let kind = EventKind::Failed {
                function,
                attempt,
                node,
                error: error.clone(),
            };
            self.emit(now_micros(), kind);
        }
        let mut newly_ready = Vec::new();
        self.on_failed_attempt(index, attempt, error, &mut newly_ready, ctx);
        if self.running() {
            self.schedule(newly_ready, ctx);
        }
        self.maybe_finish(ctx);
    }

    /// A node left the cluster: the values that lived only there and are still needed
    /// (by an unfinished function, or by the caller) are recomputed, with whatever of their
    /// inputs is gone too (recursively). Attempts running there fail on their own (the
    /// transport reports them) and run again elsewhere.
    pub(super) fn on_node_lost(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        if !self.running() || self.lost.contains(&node) {
            return;
        }
        self.lost.push(node.clone());
        // It stays among the nodes told to forget the execution when it ends: a node cut
        // off or frozen may come back holding values of attempts that ran on.
        let touched = self.remote_nodes.contains(&node);
        if !touched {
            return;
        }
        if self.observed() {
            self.emit(now_micros(), EventKind::NodeLost { node: node.clone() });
        }
        self.recompute_lost(node, ctx);
    }

    /// Resets the functions whose values were lost with `node` and are still needed (and
    /// their lost inputs, recursively), and schedules those that can run now.
    pub(super) fn recompute_lost(&mut self, node: NodeId, ctx: &mut Context<Self>) {
        let dag = self.shared.dag.clone();
        let n = dag.len();
        let done = |act: &Self, i: usize| act.fns[i].node.is_some();
        let gone = |act: &Self, i: usize| {
            act.fns[i].value.is_none()
                && act.fns[i]
                    .node
                    .as_ref()
                    .is_some_and(|h| act.lost.contains(h) || *h == act.settings.node)
        };
        let needed = |act: &Self, i: usize| {
            act.settings.keep[i] || dag.dependents(i).iter().any(|&s| !done(act, s as usize))
        };
        let mut reset = vec![false; n];
        let mut stack: Vec<usize> = (0..n)
            .filter(|&i| {
                !dag.function(i).is_inline()
                    && self.fns[i].node.as_ref() == Some(&node)
                    && self.fns[i].value.is_none()
                    && needed(self, i)
            })
            .collect();
        while let Some(i) = stack.pop() {
            if reset[i] {
                continue;
            }
            reset[i] = true;
            for &p in dag.deps(i) {
                let p = p as usize;
                if done(self, p) && !reset[p] && gone(self, p) {
                    stack.push(p);
                }
            }
        }
        let again: Vec<usize> = (0..n).filter(|&i| reset[i]).collect();
        if again.is_empty() {
            return;
        }
        tracing::info!(dag = %dag.id(), %node, count = again.len(), "recomputing values lost with a node");
        for &i in &again {
            let held = self.fns[i]
                .reset_for_recompute()
                .unwrap_or_else(|| node.clone());
            self.remaining += 1;
            if self.observed() {
                let function = dag.function(i).id().clone();
                let kind = EventKind::Recomputing {
                    function,
                    node: held,
                };
                self.emit(now_micros(), kind);
            }
        }
        for x in 0..n {
            if !done(self, x) && !dag.function(x).is_inline() {
                self.fns[x].pending = dag
                    .deps(x)
                    .iter()
                    .filter(|&&d| !done(self, d as usize))
                    .count() as u32;
            }
        }
        let ready: Vec<u32> = again
            .into_iter()
            .filter(|&i| self.fns[i].pending == 0 && !self.fns[i].scheduled)
            .map(|i| i as u32)
            .collect();
        self.schedule(ready, ctx);
    }

    pub(super) fn fail(&mut self, error: ExecuteError, ctx: &mut Context<Self>) {
        if !self.running() {
            return;
        }
        tracing::warn!(dag = %self.shared.dag.id(), %error, "execution failed; stopping the rest of the DAG");
        self.failure = Some(error);
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.ready.clear();
        // Nobody waits for what still runs (the failure is told at once).
        for entry in self.jobs.values() {
            self.abandon(entry);
        }
        self.maybe_finish(ctx);
    }

    /// Counts a job on this node whose calls nobody waits for any more, while its thread
    /// has not returned (see `Abandoned`).
    pub(super) fn abandon(&self, entry: &JobEntry) {
        if let Some(life) = &entry.life {
            self.shared.abandoned.abandon(life);
        }
    }

    /// Cancels the execution: nothing new starts, running attempts are told to stop and
    /// their slots and reservations are given back at once.
    pub(super) fn cancel(&mut self, ctx: &mut Context<Self>) {
        self.stop_now(None, ctx);
    }

    /// The deadline passed: the execution stops as a cancel does, and fails naming the
    /// regular functions that had not finished.
    pub(super) fn on_deadline(&mut self, deadline: Duration, ctx: &mut Context<Self>) {
        if !self.running() || self.finishing {
            return;
        }
        let dag = self.shared.dag.clone();
        let unfinished: Vec<FunctionId> = (0..dag.len())
            .filter(|&i| !dag.function(i).is_inline() && self.fns[i].node.is_none())
            .map(|i| dag.function(i).id().clone())
            .collect();
        tracing::warn!(dag = %dag.id(), ?deadline, unfinished = unfinished.len(), "the execution's deadline passed; stopping it");
        let error = ExecuteError::DeadlineExceeded {
            dag: dag.id().clone(),
            deadline,
            unfinished,
        };
        self.stop_now(Some(error), ctx);
    }

    /// Stops the execution at once: nothing new starts, running attempts are told to
    /// stop and their slots and reservations are given back. The outcome is `failure`
    /// when given, else `Cancelled`.
    pub(super) fn stop_now(&mut self, failure: Option<ExecuteError>, ctx: &mut Context<Self>) {
        if !self.running() || self.finishing {
            return;
        }
        self.cancelled = true;
        if let Some(failure) = failure {
            self.failure = Some(failure);
        }
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.ready.clear();
        let observed = self.observed();
        let jobs: Vec<JobEntry> = self.jobs.drain().map(|(_, e)| e).collect();
        for entry in jobs {
            entry.token.store(true, Ordering::Relaxed);
            self.abandon(&entry);
            if let Some(recorder) = &mut self.recorder {
                let now = now_micros();
                for &(index, attempt) in &entry.calls {
                    let node = &entry.node;
                    recorder.cancelled(index, attempt, node, entry.launched, now);
                }
            }
            if observed {
                for &(index, attempt) in &entry.calls {
                    let function = self.id_of(index);
                    self.emit(now_micros(), EventKind::Cancelled { function, attempt });
                }
            }
            // Reservations go back with the withdrawal below; slots need nothing.
        }
        self.maybe_finish(ctx);
    }
}
