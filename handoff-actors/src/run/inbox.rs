//! The run's inbox: the events it receives on its one bounded channel, how the resource
//! manager's grants get there, and how they are handled, a chunk at a time.

use std::sync::atomic::Ordering;

use actix::prelude::*;
use handoff_core::NodeId;
use tokio::sync::mpsc;

use crate::error::ExecuteError;
use crate::executor::JobReport;
use crate::resource_manager::{Delivery, Grant, GrantSink, RequesterGone};
use crate::supervision::guarded_with;

use super::DagRun;
use super::state::Deferred;

/// Events an execution's coordinator receives on its one bounded channel (its inbox):
/// from its jobs and the transport, the resource manager (through [`GrantSink`]), its
/// handle and the node's coordinator.
pub(crate) enum RunEvent {
    /// A job ended.
    Finished(JobReport),
    /// Reservations were granted or refused.
    Reserved(Vec<Grant>),
    /// The caller asked to cancel the execution.
    Cancel,
    /// A node left the cluster.
    NodeLost(NodeId),
    /// Tests only: makes the execution's coordinator panic.
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// The resource manager hands an execution its grants in its inbox.
impl GrantSink for mpsc::Sender<RunEvent> {
    fn deliver(&self, grants: Vec<Grant>) -> Delivery {
        match self.try_send(RunEvent::Reserved(grants)) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(event)) => {
                let inbox = self.clone();
                Delivery::Later(Box::pin(async move {
                    inbox.send(event).await.map_err(|_| RequesterGone)
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
        }
    }

    fn is_closed(&self) -> bool {
        mpsc::Sender::is_closed(self)
    }
}

impl StreamHandler<Vec<RunEvent>> for DagRun {
    /// Handles the run events that were waiting, in order. The results of the finished
    /// functions among them are stored, and their reservations given back, once at the
    /// end (before any other kind of event is handled).
    fn handle(&mut self, events: Vec<RunEvent>, ctx: &mut Self::Context) {
        let span = self.shared.span.clone();
        let _entered = span.enter();
        let handled = guarded_with("execution coordinator", ctx, |ctx| {
            // A cancel whose message did not fit in the channel is seen through the flag.
            if self.running() && self.shared.cancelled.load(Ordering::Relaxed) {
                self.cancel(ctx);
            }
            for event in events {
                match event {
                    RunEvent::Finished(report) => {
                        self.deferred.get_or_insert_with(Deferred::default);
                        self.on_finished(report, ctx);
                    }
                    // Grants too: what they send the manager goes with the chunk's.
                    RunEvent::Reserved(grants) => {
                        self.deferred.get_or_insert_with(Deferred::default);
                        self.on_reserved(grants, ctx);
                    }
                    other => {
                        self.flush_deferred(ctx);
                        match other {
                            RunEvent::Finished(_) => {}
                            RunEvent::Reserved(grants) => self.on_reserved(grants, ctx),
                            RunEvent::Cancel => self.cancel(ctx),
                            RunEvent::NodeLost(node) => self.on_node_lost(node, ctx),
                            #[cfg(feature = "fault-injection")]
                            RunEvent::Crash => {
                                panic!(
                                    "fault injection: the execution's coordinator was told to crash"
                                )
                            }
                        }
                    }
                }
            }
            self.flush_deferred(ctx);
            self.maybe_finish(ctx);
        });
        if let Err(panicked) = handled {
            // The actor is stopping: `stopped` gives everything back.
            self.failure.get_or_insert(ExecuteError::Internal {
                dag: self.shared.dag.id().clone(),
                message: panicked.message,
            });
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The run holds a sender itself, so the stream ends only when the run stops.
    }
}

/// The most run events handled as one chunk.
const EVENT_CHUNK: usize = 256;

/// A bounded receiver as a stream of chunks: the events waiting when it is polled, at
/// most [`EVENT_CHUNK`].
pub(super) struct Events(pub(super) mpsc::Receiver<RunEvent>);

impl futures::Stream for Events {
    type Item = Vec<RunEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Vec<RunEvent>>> {
        let mut chunk = Vec::new();
        match self.0.poll_recv_many(cx, &mut chunk, EVENT_CHUNK) {
            std::task::Poll::Ready(0) => std::task::Poll::Ready(None),
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Some(chunk)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
