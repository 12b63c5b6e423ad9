//! What a run keeps of each function, of each job in flight, and of what it defers to
//! the end of a chunk of events.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use handoff_core::{FunctionId, NodeId, Value};

use crate::executor::{Hold, JobLife};

use super::reserve::{SHAPE_UNSET, UNASKED};

/// Where a function's attempts failed.
#[derive(Debug, Default)]
pub(super) struct Blame {
    /// The node its last attempt failed on by its own fault (its retry goes elsewhere
    /// when it can).
    pub(super) failed_on: Option<NodeId>,
    /// The nodes whose deaths it was blamed for (see `on_failed_attempt`).
    pub(super) death_nodes: Vec<NodeId>,
}

/// What a run knows of one function: its progress through the DAG, its value once made,
/// its attempts and failures, and its place in the reservation machinery.
pub(super) struct FnState {
    /// Unfinished dependencies.
    pub(super) pending: u32,
    /// Unfinished consumers of its value (for `free_intermediates`).
    pub(super) consumers: u32,
    /// Its value once finished, when it is held here (or came back inline).
    pub(super) value: Option<Value>,
    /// The node it ran on once finished (and whose store holds its value).
    pub(super) node: Option<NodeId>,
    /// Its value came back inline from another node: small, so it travels inline to the
    /// nodes that run its consumers.
    pub(super) small: bool,
    /// The encoded size of its value when made on another node (0 when unknown).
    pub(super) size: u64,
    /// Handed to the scheduling machinery (ready queue, reservation, job, fetch, backoff)
    /// and not finished: a dependency finishing must not start it twice.
    pub(super) scheduled: bool,
    /// Its attempts that could not run where they were sent (a node left, an argument
    /// could not be fetched): re-run without counting against `max_retries`.
    pub(super) free_reruns: u32,
    /// Node deaths it was blamed for (see `on_failed_attempt`).
    pub(super) deaths: u32,
    /// Where its attempts failed, when any did (boxed: most functions never fail, and
    /// this state is touched for every function).
    pub(super) blame: Option<Box<Blame>>,
    /// The number of its last attempt (0 before the first).
    pub(super) attempts: u32,
    /// Its shape id (`SHAPE_UNSET` until it first asks for a reservation).
    pub(super) shape: u32,
    /// With events: the attempt it last got a `Reserved` event for (a call handed back
    /// and taken again does not get a second one).
    pub(super) announced: u32,
    /// Whether it has a request while it waits for a reservation of a shared shape:
    /// `UNASKED`, `QUEUED` (in `outbox`) or `SENT` to the resource manager. Only the most
    /// urgent waiting calls of a shape have one (its window, see [`DagRun::top_up`]); the
    /// others run on the reservations those get.
    pub(super) asked: u8,
}

impl FnState {
    /// A function with `pending` dependencies and `consumers` dependents, not started.
    pub(super) fn new(pending: u32, consumers: u32) -> Self {
        FnState {
            pending,
            consumers,
            value: None,
            node: None,
            small: false,
            size: 0,
            scheduled: false,
            free_reruns: 0,
            deaths: 0,
            blame: None,
            attempts: 0,
            shape: SHAPE_UNSET,
            announced: 0,
            asked: UNASKED,
        }
    }

    /// The node its last attempt failed on by its own fault, if any.
    pub(super) fn failed_on(&self) -> Option<&NodeId> {
        self.blame.as_ref()?.failed_on.as_ref()
    }

    /// Where its attempts failed, made on first use.
    pub(super) fn blame_mut(&mut self) -> &mut Blame {
        self.blame.get_or_insert_with(Box::default)
    }

    /// The number its next attempt gets.
    pub(super) fn next_attempt(&self) -> u32 {
        self.attempts + 1
    }

    /// It left the scheduling machinery without finishing (it waits for a dependency, or
    /// is scheduled again): a dependency finishing may start it.
    pub(super) fn unschedule(&mut self) {
        self.scheduled = false;
    }

    /// It finished on `node` (another node than this one when `remote`), making `value`
    /// (`None` when it stays there) of `size` encoded bytes (0 when unknown).
    pub(super) fn finish(&mut self, value: Option<Value>, node: NodeId, size: u64, remote: bool) {
        self.scheduled = false;
        self.small = remote && value.is_some();
        self.size = size;
        self.value = value;
        self.node = Some(node);
    }

    /// Its value was lost with a node and is made again: where it ran and what its value
    /// was like are forgotten, and its attempts so far, which succeeded, no longer count
    /// against its retries. The node it had run on.
    pub(super) fn reset_for_recompute(&mut self) -> Option<NodeId> {
        self.free_reruns = self.attempts;
        self.small = false;
        self.size = 0;
        self.node.take()
    }
}

/// A job in flight.
pub(super) struct JobEntry {
    pub(super) hold: Hold,
    pub(super) token: Arc<AtomicBool>,
    /// Its thread's life, for a job on this node (`None` for an attempt elsewhere).
    pub(super) life: Option<Arc<JobLife>>,
    /// `(index, attempt)` of the calls handed to it.
    pub(super) calls: Vec<(u32, u32)>,
    /// When it was handed to its worker (only with a report; else 0).
    pub(super) launched: u64,
    /// Where it runs.
    pub(super) node: NodeId,
    /// When it started, for a job on a reservation (how long its calls take sizes the
    /// next batches of their shape).
    pub(super) since: Option<Instant>,
}

/// A finished function's id and its value, when it is held here.
pub(super) type Made = (FunctionId, Option<Value>);

/// What the handling of a chunk of run events sends to the node's actors at its end.
#[derive(Default)]
pub(super) struct Deferred {
    pub(super) stores: Vec<(NodeId, Vec<Made>)>,
    pub(super) releases: Vec<crate::resource_manager::GrantId>,
}
