//! The events of an execution: every step, as `tracing` events and, for a caller that
//! asks, as a bounded stream.
//!
//! A consumer that falls behind never slows the execution down: when its buffer is
//! full, events are dropped and counted, and the next event that fits is preceded by
//! an [`EventKind::Lagged`] saying how many were lost.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handoff_core::{CallError, DagId, FunctionId, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One step of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in microseconds since the Unix epoch.
    pub at_micros: u64,
    /// The execution's DAG.
    pub dag: DagId,
    /// What happened.
    pub kind: EventKind,
}

/// What happened. New kinds may be added in later versions: match with a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventKind {
    /// All of the function's dependencies have finished.
    Ready {
        /// The function.
        function: FunctionId,
    },
    /// A reservation for the function's cost was granted on `node`.
    Reserved {
        /// The function.
        function: FunctionId,
        /// Where.
        node: NodeId,
    },
    /// An attempt started running.
    Started {
        /// The function.
        function: FunctionId,
        /// The attempt, from 1.
        attempt: u32,
        /// Where.
        node: NodeId,
    },
    /// An attempt succeeded.
    Finished {
        /// The function.
        function: FunctionId,
        /// The attempt, from 1.
        attempt: u32,
        /// Where.
        node: NodeId,
    },
    /// An attempt failed (an error, a panic, a timeout).
    Failed {
        /// The function.
        function: FunctionId,
        /// The attempt, from 1.
        attempt: u32,
        /// Where.
        node: NodeId,
        /// Why.
        error: CallError,
    },
    /// The function will be tried again after `backoff`.
    Retried {
        /// The function.
        function: FunctionId,
        /// The attempt that will run next.
        next_attempt: u32,
        /// The wait before it.
        backoff: Duration,
    },
    /// A running attempt was told to stop because the execution was cancelled.
    Cancelled {
        /// The function.
        function: FunctionId,
        /// The attempt.
        attempt: u32,
    },
    /// The function's value was stored on `node`.
    Stored {
        /// The function.
        function: FunctionId,
        /// Where.
        node: NodeId,
    },
    /// The function's value was freed (its last consumer finished).
    Freed {
        /// The function.
        function: FunctionId,
    },
    /// A node that ran or held part of the execution left the cluster (connection lost,
    /// or no announcement within the time-to-live).
    NodeLost {
        /// The node.
        node: NodeId,
    },
    /// A finished function's value lived only on a lost node and is still needed: the
    /// function runs again.
    Recomputing {
        /// The function.
        function: FunctionId,
        /// The node its value was lost with.
        node: NodeId,
    },
    /// The execution ended: `ok` is false when it failed or was cancelled.
    Ended {
        /// Whether every function finished.
        ok: bool,
    },
    /// The consumer fell behind and `missed` events were dropped before this one.
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl EventKind {
    /// The function the event is about, if any.
    pub fn function(&self) -> Option<&FunctionId> {
        match self {
            EventKind::Ready { function }
            | EventKind::Reserved { function, .. }
            | EventKind::Started { function, .. }
            | EventKind::Finished { function, .. }
            | EventKind::Failed { function, .. }
            | EventKind::Retried { function, .. }
            | EventKind::Cancelled { function, .. }
            | EventKind::Stored { function, .. }
            | EventKind::Freed { function }
            | EventKind::Recomputing { function, .. } => Some(function),
            EventKind::Ended { .. } | EventKind::Lagged { .. } | EventKind::NodeLost { .. } => None,
        }
    }
}

impl EventKind {
    /// The event's name, as in `tracing` output: `ready`, `started`, `freed`, ….
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Ready { .. } => "ready",
            EventKind::Reserved { .. } => "reserved",
            EventKind::Started { .. } => "started",
            EventKind::Finished { .. } => "finished",
            EventKind::Failed { .. } => "failed",
            EventKind::Retried { .. } => "retried",
            EventKind::Cancelled { .. } => "cancelled",
            EventKind::Stored { .. } => "stored",
            EventKind::Freed { .. } => "freed",
            EventKind::Ended { .. } => "ended",
            EventKind::Lagged { .. } => "lagged",
            EventKind::NodeLost { .. } => "node_lost",
            EventKind::Recomputing { .. } => "recomputing",
        }
    }

    /// The attempt the event is about, if any.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            EventKind::Started { attempt, .. }
            | EventKind::Finished { attempt, .. }
            | EventKind::Failed { attempt, .. }
            | EventKind::Cancelled { attempt, .. } => Some(*attempt),
            EventKind::Retried { next_attempt, .. } => Some(*next_attempt),
            _ => None,
        }
    }

    /// The node the event happened on, if any.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            EventKind::Reserved { node, .. }
            | EventKind::Started { node, .. }
            | EventKind::Finished { node, .. }
            | EventKind::Failed { node, .. }
            | EventKind::Stored { node, .. }
            | EventKind::NodeLost { node }
            | EventKind::Recomputing { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The events of one execution, in the order the coordinator saw them. Ends when the
/// execution has ended.
#[derive(Debug)]
pub struct EventStream(mpsc::Receiver<Event>);

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.0.poll_recv(cx)
    }
}

/// Where an execution's events go, if someone listens.
///
/// The channel has two slots more than the buffer asked for, kept for the end: a
/// [`EventKind::Lagged`] with what was lost since the consumer last had room, and the
/// final [`EventKind::Ended`]. So even a consumer that reads nothing until the end
/// learns how many events it missed, and that the execution ended.
pub(crate) struct EventSink {
    tx: mpsc::Sender<Event>,
    missed: u64,
}

/// Slots kept free for the closing `Lagged` and `Ended`.
const RESERVED: usize = 2;

/// The most events an execution buffers for its consumer (2^24): a larger
/// [`ExecuteOptions::events`](crate::ExecuteOptions::events) is capped to it. (The buffer
/// grows as events arrive; the bound only keeps a stalled consumer from holding the
/// node's memory.)
pub const MAX_EVENT_BUFFER: usize = 1 << 24;

impl EventSink {
    /// A sink and its stream, buffering up to `capacity` events.
    pub(crate) fn new(capacity: usize) -> (Self, EventStream) {
        let (tx, rx) = mpsc::channel(capacity.clamp(1, MAX_EVENT_BUFFER) + RESERVED);
        (EventSink { tx, missed: 0 }, EventStream(rx))
    }

    /// Sends an event without ever waiting; counts it as missed when the buffer is full.
    pub(crate) fn send(&mut self, event: Event) {
        if self.missed > 0 {
            // The lag notice and the event both need room, beyond the reserved slots.
            if self.tx.capacity() < RESERVED + 2 {
                self.missed += 1;
                return;
            }
            let lagged = Event {
                at_micros: event.at_micros,
                dag: event.dag.clone(),
                kind: EventKind::Lagged {
                    missed: self.missed,
                },
            };
            if self.tx.try_send(lagged).is_err() {
                self.missed += 1;
                return;
            }
            self.missed = 0;
        }
        if self.tx.capacity() <= RESERVED || self.tx.try_send(event).is_err() {
            self.missed += 1;
        }
    }

    /// Sends the last event, preceded by what was missed, into the reserved slots.
    pub(crate) fn close(mut self, last: Event) {
        if self.missed > 0 {
            let lagged = Event {
                at_micros: last.at_micros,
                dag: last.dag.clone(),
                kind: EventKind::Lagged {
                    missed: self.missed,
                },
            };
            let _ = self.tx.try_send(lagged);
            self.missed = 0;
        }
        let _ = self.tx.try_send(last);
    }
}
