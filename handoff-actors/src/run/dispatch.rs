//! Dispatching: routing ready functions to the slots or to reservations, and starting
//! their jobs here (once the values they take are here) or their attempts on other nodes.

use std::cmp::Reverse;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use actix::prelude::*;
use handoff_core::{CallError, NodeId, Target};
use tokio::sync::mpsc;

use crate::events::{EventKind, now_micros};
use crate::executor::{Call, Hold, Job, JobLife, JobReport, Outcome};
use crate::remote::{RemoteArgument, RemoteCall, RemoteResult, SharedTransport};

use super::DagRun;
use super::inbox::RunEvent;
use super::reserve::{SHAPE_NONE, cost_of};
use super::state::JobEntry;

/// The most calls one job takes from the ready queue at once (a job hands back those it
/// has not started once it has run for a while: see [`crate::executor::JOB_BUDGET`]).
pub(super) const MAX_BATCH: usize = 1024;

impl DagRun {
    pub(super) fn call_for(&self, index: u32) -> Call {
        let i = index as usize;
        let deps = self
            .shared
            .dag
            .deps(i)
            .iter()
            .map(|&d| {
                self.fns[d as usize]
                    .value
                    .clone()
                    .expect("a call is built here only once its dependencies' values are here")
            })
            .collect();
        Call {
            index,
            attempt: self.fns[i].next_attempt(),
            deps,
        }
    }

    /// Routes newly ready functions: costed ones to the resource manager, the rest to
    /// the slot queue.
    pub(super) fn schedule(&mut self, ready: Vec<u32>, ctx: &mut Context<Self>) {
        let mut requests = Vec::new();
        // The shared shapes that got waiting calls.
        let mut touched: Vec<u32> = Vec::new();
        let observed = self.observed();
        let now = if observed || self.recorder.is_some() {
            now_micros()
        } else {
            0
        };
        for index in ready {
            self.fns[index as usize].scheduled = true;
            if let Some(recorder) = &mut self.recorder {
                recorder.queued(index, now);
            }
            if observed {
                let function = self.id_of(index);
                self.emit(now, EventKind::Ready { function });
            }
            let i = index as usize;
            let rank = self.settings.ranks[i];
            let f = self.shared.dag.function(i);
            let target = &self.settings.targets[i];
            let cost = cost_of(f);
            // Without a cost, a function runs in one of this execution's slots here,
            // unless its placement or its code's whereabouts say otherwise.
            let slot = cost.is_none()
                && self.shared.codes[i].is_some()
                && (self.settings.transport.is_none() || matches!(target, Target::Any));
            if slot {
                self.ready.push((rank, Reverse(index)));
            } else {
                match self.await_reservation(index) {
                    SHAPE_NONE => requests.push(self.request_for(index)),
                    shape => {
                        if touched.last() != Some(&shape) && !touched.contains(&shape) {
                            touched.push(shape);
                        }
                    }
                }
            }
        }
        for shape in touched {
            self.top_up(shape);
        }
        // Within a chunk of run events, sent once at its end (with its withdrawals).
        if self.deferred.is_none() {
            requests.append(&mut self.take_outbox());
        }
        self.send_requests(requests, ctx);
        self.dispatch_ready(ctx);
    }

    pub(super) fn dispatch_ready(&mut self, ctx: &mut Context<Self>) {
        while self.slots > 0 && !self.ready.is_empty() {
            let share = self.ready.len().div_ceil(self.slots).min(MAX_BATCH);
            let mut batch = Vec::with_capacity(share);
            while batch.len() < share {
                let Some(&(_, Reverse(index))) = self.ready.peek() else {
                    break;
                };
                // A function with a timeout runs in a job of its own.
                if self.timeout_of(index).is_some() {
                    if batch.is_empty() {
                        self.ready.pop();
                        batch.push(index);
                    }
                    break;
                }
                self.ready.pop();
                batch.push(index);
            }
            self.slots -= 1;
            let node = self.settings.node.clone();
            self.launch(batch, Hold::Slot, node, ctx);
        }
    }

    /// Starts a batch of functions on `node` (a batch of one on another node): here once
    /// every value they take is here, fetching those held elsewhere first.
    pub(super) fn launch(
        &mut self,
        mut batch: Vec<u32>,
        hold: Hold,
        node: NodeId,
        ctx: &mut Context<Self>,
    ) {
        // A dependency lost with a node and being recomputed: the function waits for it
        // (it is scheduled again when its last dependency finishes). Only after a node
        // loss can a scheduled function have a pending dependency.
        if !self.lost.is_empty() {
            let fns = &mut self.fns;
            batch.retain(|&i| {
                let f = &mut fns[i as usize];
                let ready = f.pending == 0;
                if !ready {
                    f.unschedule();
                }
                ready
            });
        }
        if batch.is_empty() {
            self.release(hold, ctx);
            return;
        }
        if node != self.settings.node
            && let Some(transport) = self.settings.transport.clone()
        {
            for index in batch {
                // Functions suspected of killing nodes run one at a time, so that the next
                // node death is blamed on the one running.
                if self.fns[index as usize].deaths > 0 && self.suspect_running.is_some() {
                    self.suspects_waiting.push_back((index, hold, node.clone()));
                    continue;
                }
                self.start_remote(index, hold, node.clone(), &transport, ctx);
            }
            return;
        }
        // Values are held elsewhere only with a transport.
        let mut missing: Vec<u32> = match self.settings.transport {
            None => Vec::new(),
            Some(_) => batch
                .iter()
                .flat_map(|&i| self.shared.dag.deps(i as usize))
                .copied()
                .filter(|&d| self.fns[d as usize].value.is_none())
                .collect(),
        };
        if missing.is_empty() {
            let calls = batch.into_iter().map(|i| self.call_for(i)).collect();
            self.start_job(calls, hold, node, ctx);
            return;
        }
        missing.sort_unstable();
        missing.dedup();
        self.fetch_then_launch(batch, missing, hold, node, ctx);
    }

    /// Fetches the values `batch` needs from the nodes that hold them, then launches it;
    /// a value that cannot be fetched fails the attempts that needed it.
    pub(super) fn fetch_then_launch(
        &mut self,
        batch: Vec<u32>,
        missing: Vec<u32>,
        hold: Hold,
        node: NodeId,
        ctx: &mut Context<Self>,
    ) {
        let Some(transport) = self.settings.transport.clone() else {
            // Values are held elsewhere only when there is a transport.
            self.fail(self.stopped_error(), ctx);
            self.release(hold, ctx);
            return;
        };
        let dag = self.wire.clone();
        let fetches: Vec<_> = missing
            .iter()
            .map(|&d| {
                let holder = self.fns[d as usize]
                    .node
                    .clone()
                    .unwrap_or_else(|| self.settings.node.clone());
                transport.fetch(dag.clone(), self.id_of(d), holder)
            })
            .collect();
        self.pending_io += 1;
        let fetched = futures::future::join_all(fetches);
        ctx.spawn(fetched.into_actor(self).map(move |fetched, act, ctx| {
            act.pending_io -= 1;
            let mut failure = None;
            for (d, outcome) in missing.into_iter().zip(fetched) {
                match outcome {
                    Ok(value) => {
                        act.fns[d as usize].value.get_or_insert(value);
                    }
                    Err(error) => failure = Some(error),
                }
            }
            if !act.running() {
                act.release(hold, ctx);
            } else if let Some(error) = failure {
                act.release(hold, ctx);
                let mut newly_ready = Vec::new();
                for index in batch {
                    let attempt = act.fns[index as usize].next_attempt();
                    act.fns[index as usize].attempts = attempt;
                    let code = act.shared.dag.function(index as usize).code().clone();
                    let error = CallError::Unavailable {
                        code,
                        node: act.settings.node.clone(),
                        reason: error.to_string(),
                    };
                    if let Some(recorder) = &mut act.recorder {
                        let (now, node) = (now_micros(), &act.settings.node);
                        recorder.attempt(index, attempt, node, (now, now), Err(&error));
                    }
                    act.on_failed_attempt(index, attempt, error, &mut newly_ready, ctx);
                }
                if act.running() {
                    act.schedule(newly_ready, ctx);
                }
            } else {
                act.launch(batch, hold, node, ctx);
            }
            act.maybe_finish(ctx);
        }));
    }

    /// Sends one attempt to another node; its outcome comes back on the run's channel
    /// like a local job's.
    pub(super) fn start_remote(
        &mut self,
        index: u32,
        hold: Hold,
        node: NodeId,
        transport: &SharedTransport,
        ctx: &mut Context<Self>,
    ) {
        let i = index as usize;
        let id = self.next_job;
        self.next_job += 1;
        let attempt = self.fns[i].next_attempt();
        let timeout = self.timeout_of(index);
        let dag = &self.shared.dag;
        let arguments = dag
            .deps(i)
            .iter()
            .map(|&d| {
                let d = d as usize;
                let function = dag.function(d).id().clone();
                match &self.fns[d].value {
                    Some(value) if self.fns[d].small => RemoteArgument::Value {
                        function,
                        node: self.fns[d]
                            .node
                            .clone()
                            .unwrap_or_else(|| self.settings.node.clone()),
                        value: value.clone(),
                    },
                    _ => RemoteArgument::Held {
                        function,
                        node: self.fns[d]
                            .node
                            .clone()
                            .unwrap_or_else(|| self.settings.node.clone()),
                    },
                }
            })
            .collect();
        // Told to forget the execution at its end, or when it is cancelled with this
        // attempt still running there (which stops it).
        if !self.remote_nodes.contains(&node) {
            self.remote_nodes.push(node.clone());
        }
        let report_start = self.fns[i].deaths > 0;
        if report_start {
            self.suspect_running = Some(index);
        }
        if !self.wire_open {
            self.wire_open = true;
            transport.open(&self.wire);
        }
        let call = RemoteCall {
            report_start,
            dag: self.wire.clone(),
            node: node.clone(),
            function: dag.function(i).clone(),
            inline: handoff_core::inline_args(dag, i)
                .into_iter()
                .map(|a| dag.function(a).clone())
                .collect(),
            arguments,
            attempt,
            timeout,
        };
        let token = Arc::new(AtomicBool::new(false));
        self.jobs.insert(
            id,
            JobEntry {
                hold,
                token,
                life: None,
                calls: vec![(index, attempt)],
                launched: self.launch_instant(),
                node: node.clone(),
                since: matches!(hold, Hold::Reservation(_)).then(Instant::now),
            },
        );
        let timestamps = self.shared.timestamps;
        let started_micros = if timestamps { now_micros() } else { 0 };
        let events = self.shared.events.clone();
        let report = move |result: RemoteResult| {
            let finished_micros = if timestamps { now_micros() } else { 0 };
            let (result, size) = match result {
                Ok(done) => (Ok(done.value), done.size),
                Err(error) => (Err(error), 0),
            };
            let report = JobReport {
                job: id,
                outcomes: vec![Outcome {
                    index,
                    attempt,
                    started_micros,
                    finished_micros,
                    result,
                    size,
                }],
                unrun: Vec::new(),
                returned: Vec::new(),
                node,
            };
            match events.try_send(RunEvent::Finished(report)) {
                Ok(()) => {}
                // A burst of outcomes filled the run's channel: this one waits for room.
                Err(mpsc::error::TrySendError::Full(event)) => {
                    let wait = async move {
                        let _ = events.send(event).await;
                    };
                    // Outside a runtime only when the network layer is torn down.
                    match tokio::runtime::Handle::try_current() {
                        Ok(runtime) => drop(runtime.spawn(wait)),
                        Err(_) => futures::executor::block_on(wait),
                    }
                }
                // The run has ended (cancelled or timed out); nothing waits.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        };
        transport.execute_then(call, Box::new(report));
        if let Some(after) = timeout {
            ctx.run_later(after, move |act, ctx| act.on_timeout(id, after, ctx));
        }
    }

    pub(super) fn start_job(
        &mut self,
        calls: Vec<Call>,
        hold: Hold,
        node: NodeId,
        ctx: &mut Context<Self>,
    ) {
        if let Some(reason) = self.shared.abandoned.full() {
            // Every thread the node may give calls is held by calls nobody waits for:
            // this one fails (and is retried) instead of waiting for a thread.
            tracing::warn!(dag = %self.shared.dag.id(), "{reason}");
            self.release(hold, ctx);
            let mut newly_ready = Vec::new();
            for call in calls {
                let i = call.index as usize;
                let error = CallError::Unavailable {
                    code: self.shared.dag.function(i).code().clone(),
                    node: node.clone(),
                    reason: reason.clone(),
                };
                self.fns[i].attempts = call.attempt;
                if !self.running() {
                    break;
                }
                self.on_failed_attempt(call.index, call.attempt, error, &mut newly_ready, ctx);
            }
            if self.running() {
                self.schedule(newly_ready, ctx);
            }
            self.maybe_finish(ctx);
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        let token = Arc::new(AtomicBool::new(false));
        let life = JobLife::new();
        if let [call] = calls.as_slice()
            && let Some(timeout) = self.timeout_of(call.index)
        {
            ctx.run_later(timeout, move |act, ctx| act.on_timeout(id, timeout, ctx));
        }
        self.jobs.insert(
            id,
            JobEntry {
                hold,
                token: Arc::clone(&token),
                life: Some(Arc::clone(&life)),
                calls: calls.iter().map(|c| (c.index, c.attempt)).collect(),
                launched: self.launch_instant(),
                node: node.clone(),
                since: matches!(hold, Hold::Reservation(_)).then(Instant::now),
            },
        );
        let free_calls = match hold {
            Hold::Slot => crate::executor::FREE_CALLS,
            Hold::Reservation(_) => 1,
        };
        self.shared.spawn(Job {
            id,
            calls,
            node,
            token,
            life,
            free_calls,
        });
    }

    /// Now, when a report is being recorded (the start of attempts that never report it).
    pub(super) fn launch_instant(&self) -> u64 {
        if self.recorder.is_some() {
            now_micros()
        } else {
            0
        }
    }
}
