//! Reservations: the shapes of functions whose calls may share one, the window of
//! requests each shape keeps at the resource manager, the leases the run holds and
//! reuses, and the grants it gets.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use handoff_core::{CodeName, NodeId, Rank, Resources, Target};

use crate::error::ExecuteError;
use crate::events::{EventKind, now_micros};
use crate::executor::Hold;
use crate::resource_manager::{Cancel, Grant, Release, Request, Reserve, ResourceManager};

use super::DagRun;
use super::dispatch::MAX_BATCH;

/// How long a reservation keeps being reused by the next waiting calls of its shape
/// before it goes back to the resource manager (which may then grant it to a more urgent
/// or a starving request, or to this execution again).
const LEASE_BUDGET: Duration = Duration::from_millis(2);

/// Functions whose calls may run on one another's reservation: the same cost and code,
/// and the same pinned node if any (collocated functions and functions with a timeout
/// never share).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ShapeKey {
    /// Shared by the requests of the shape (no copy per request).
    cost: Arc<Resources>,
    code: CodeName,
    /// The types its code must have ([`handoff_core::Function::signature`]).
    signature: Option<Arc<str>>,
    pinned: Option<NodeId>,
}

/// How many of a shape's waiting calls have a request at the resource manager before any
/// grant has said how many reservations of the shape the nodes hold at once.
const FIRST_WINDOW: u32 = 16;

/// `FnState::asked` states: no request, a request in the outbox, a request at the manager.
pub(super) const UNASKED: u8 = 0;
const QUEUED: u8 = 1;
const SENT: u8 = 2;

/// `FnState::shape` marker: not computed yet.
pub(super) const SHAPE_UNSET: u32 = u32::MAX;
/// `FnState::shape` marker: never shares a reservation.
pub(super) const SHAPE_NONE: u32 = u32::MAX - 1;

/// A reservation the run holds, and what may reuse it.
pub(super) struct Lease {
    /// Its shape (`SHAPE_NONE`: not reused).
    pub(super) shape: u32,
    pub(super) since: Instant,
    /// How many reservations of its shape fit at once where it may run.
    pub(super) parallel: u32,
}

/// A function's cost, if it has one (a cost of nothing is none).
pub(super) fn cost_of(f: &handoff_core::Function) -> Option<&Resources> {
    f.cost().filter(|c| !c.is_empty())
}

impl DagRun {
    /// The reservation request of function `index` (already waiting, see
    /// [`Self::await_reservation`]).
    pub(super) fn request_for(&mut self, index: u32) -> Request {
        let i = index as usize;
        let shape = self.known_shape(index);
        let f = self.shared.dag.function(i);
        let cost = match shape {
            SHAPE_NONE => Arc::new(cost_of(f).cloned().unwrap_or_default()),
            shape => Arc::clone(&self.shape_keys[shape as usize].cost),
        };
        Request {
            index,
            rank: self.settings.ranks[i],
            function: f.id().clone(),
            code: f.code().clone(),
            signature: f.signature().map(Arc::from),
            cost,
            target: self.settings.targets[i].clone(),
            locality: self.locality(i),
            avoid: self.fns[i].failed_on().cloned(),
        }
    }

    /// Function `index` waits for a reservation: among the calls of its shape that one
    /// held may take. Its shape id.
    pub(super) fn await_reservation(&mut self, index: u32) -> u32 {
        let shape = self.shape_id(index as usize);
        if shape != SHAPE_NONE {
            let rank = self.settings.ranks[index as usize];
            self.awaiting[shape as usize].insert((Reverse(rank), index));
        }
        shape
    }

    /// Makes sure the most urgent waiting calls of `shape` have a request at the resource
    /// manager: as many as reservations of the shape the nodes hold at once (its window).
    /// The rest need none: a granted reservation runs its call and a share of the calls
    /// still waiting, and is reused for the next ones. So the manager queues a few
    /// requests per shape instead of one per waiting call, and few are withdrawn. The
    /// most urgent waiting call always has one, so the shape's place in the manager's
    /// queue is what it would be with a request per call. New requests go to `outbox`.
    pub(super) fn top_up(&mut self, shape: u32) {
        let s = shape as usize;
        let parallel = self.shape_parallel[s];
        let window = if parallel == 0 {
            FIRST_WINDOW
        } else {
            parallel
        } as usize;
        let missing: Vec<u32> = self.awaiting[s]
            .iter()
            .take(window)
            .map(|&(_, index)| index)
            .filter(|&index| self.fns[index as usize].asked == UNASKED)
            .collect();
        for index in missing {
            self.fns[index as usize].asked = QUEUED;
            self.outstanding[s] += 1;
            let request = self.request_for(index);
            self.outbox.push(request);
        }
    }

    /// Function `index` no longer waits: its request, if it has one, is not outstanding
    /// (one still in the outbox is not sent). Whether the manager has one to withdraw.
    pub(super) fn unask(&mut self, shape: u32, index: u32) -> bool {
        let asked = &mut self.fns[index as usize].asked;
        if *asked == UNASKED {
            return false;
        }
        let sent = *asked == SENT;
        *asked = UNASKED;
        self.outstanding[shape as usize] -= 1;
        sent
    }

    /// The outbox's requests still wanted (their calls still wait), now sent.
    pub(super) fn take_outbox(&mut self) -> Vec<Request> {
        let mut requests = std::mem::take(&mut self.outbox);
        let fns = &mut self.fns;
        requests.retain(|r| {
            // A call that stopped waiting has none; one that waits again has it once.
            let state = &mut fns[r.index as usize].asked;
            let wanted = *state == QUEUED;
            if wanted {
                *state = SENT;
            }
            wanted
        });
        requests
    }

    /// Function `index`'s shape id if computed and shared, else `SHAPE_NONE`.
    pub(super) fn known_shape(&self, index: u32) -> u32 {
        match self.fns[index as usize].shape {
            SHAPE_UNSET => SHAPE_NONE,
            shape => shape,
        }
    }

    /// Sends reservation requests to the resource manager, in one message.
    pub(super) fn send_requests(&mut self, mut requests: Vec<Request>, ctx: &mut Context<Self>) {
        if requests.is_empty() {
            return;
        }
        requests.sort_by_key(|r| Reverse(r.rank));
        let msg = Reserve {
            requester: self.settings.requester,
            requests,
            strategy: self.settings.strategy.clone(),
            notify: Arc::clone(&self.grant_sink),
        };
        self.send_to_manager(msg, ctx);
    }

    /// Function `i`'s shape id, or `SHAPE_NONE` when its calls never share a reservation.
    pub(super) fn shape_id(&mut self, i: usize) -> u32 {
        if self.fns[i].shape != SHAPE_UNSET {
            return self.fns[i].shape;
        }
        let f = self.shared.dag.function(i);
        let pinned = match &self.settings.targets[i] {
            Target::Any => Some(None),
            Target::Pinned(node) => Some(Some(node.clone())),
            Target::Group { .. } => None,
        };
        let id = match pinned {
            Some(pinned) if self.timeout_of(i as u32).is_none() => {
                // Neighbours mostly share a shape: compared in place, no allocation.
                let cost = cost_of(f);
                if let Some(&last) = self.last_shape.as_ref()
                    && let Some(key) = self.shape_keys.get(last as usize)
                    && key.code == *f.code()
                    && key.pinned == pinned
                    && cost.map_or(key.cost.is_empty(), |c| *c == *key.cost)
                {
                    self.fns[i].shape = last;
                    return last;
                }
                let key = ShapeKey {
                    cost: Arc::new(cost.cloned().unwrap_or_default()),
                    code: f.code().clone(),
                    signature: f.signature().map(Arc::from),
                    pinned,
                };
                let next = self.shape_index.len() as u32;
                let id = *self.shape_index.entry(key.clone()).or_insert(next);
                if id == next {
                    self.awaiting.push(BTreeSet::new());
                    self.shape_pace.push(Duration::ZERO);
                    self.outstanding.push(0);
                    self.shape_parallel.push(0);
                    self.shape_keys.push(key);
                }
                self.last_shape = Some(id);
                id
            }
            _ => SHAPE_NONE,
        };
        self.fns[i].shape = id;
        id
    }

    /// Function `index` got its own reservation: it no longer waits. False when it was
    /// not waiting (it already ran on another reservation of its shape).
    pub(super) fn take_granted(&mut self, index: u32) -> bool {
        match self.known_shape(index) {
            SHAPE_NONE => true,
            shape => {
                self.unask(shape, index);
                let rank = self.settings.ranks[index as usize];
                self.awaiting[shape as usize].remove(&(Reverse(rank), index))
            }
        }
    }

    /// Takes up to `n` waiting calls of `shape` to run on a reservation held on `node`,
    /// most urgent first (their requests are withdrawn). A call whose last attempt failed
    /// on `node` is left to wait for another node, when there are others.
    pub(super) fn take_waiting(&mut self, shape: u32, node: &NodeId, n: usize) -> Vec<u32> {
        let mut taken = Vec::new();
        if shape == SHAPE_NONE || n == 0 {
            return taken;
        }
        let set = &mut self.awaiting[shape as usize];
        if self.settings.transport.is_none() {
            while taken.len() < n {
                let Some((_, index)) = set.pop_first() else {
                    break;
                };
                taken.push(index);
            }
        } else {
            let fns = &self.fns;
            let picked: Vec<(Reverse<Rank>, u32)> = set
                .iter()
                .filter(|(_, index)| fns[*index as usize].failed_on() != Some(node))
                .take(n)
                .copied()
                .collect();
            for entry in picked {
                set.remove(&entry);
                taken.push(entry.1);
            }
        }
        for &index in &taken {
            if self.unask(shape, index) {
                self.cancels.push(index);
            }
        }
        self.top_up(shape);
        taken
    }

    /// How many waiting calls of `shape` one reservation takes at once: its share when
    /// `parallel` reservations of the shape run together (a batch runs back to back).
    pub(super) fn share(&self, shape: u32, parallel: u32, extra: usize) -> usize {
        if shape == SHAPE_NONE {
            return 0;
        }
        let pace = self.shape_pace[shape as usize];
        let in_budget = if pace.is_zero() {
            MAX_BATCH
        } else {
            (crate::executor::JOB_BUDGET.as_nanos() / pace.as_nanos()).max(1) as usize
        };
        (self.awaiting[shape as usize].len() + extra)
            .div_ceil(parallel.max(1) as usize)
            .min(MAX_BATCH)
            .min(in_budget)
    }

    /// Emits `Reserved` for calls that run on a reservation on `node`.
    pub(super) fn emit_reserved(&mut self, batch: &[u32], node: &NodeId) {
        if self.observed() {
            let now = now_micros();
            for &index in batch {
                let attempt = self.fns[index as usize].next_attempt();
                if std::mem::replace(&mut self.fns[index as usize].announced, attempt) == attempt {
                    continue;
                }
                let function = self.id_of(index);
                let node = node.clone();
                self.emit(now, EventKind::Reserved { function, node });
            }
        }
    }

    /// A job that held reservation `hold` on `node` ended: the reservation runs the next
    /// waiting calls of its shape while it is young, else it goes back.
    pub(super) fn reuse_or_release(&mut self, hold: Hold, node: &NodeId, ctx: &mut Context<Self>) {
        if let Hold::Reservation(grant) = hold
            && self.running()
            && let Some(lease) = self.leases.get(&grant)
            && lease.shape != SHAPE_NONE
            && lease.since.elapsed() < LEASE_BUDGET
        {
            let (shape, parallel) = (lease.shape, lease.parallel);
            let n = if *node == self.settings.node {
                self.share(shape, parallel, 0).max(1)
            } else {
                1
            };
            let batch = self.take_waiting(shape, node, n);
            if !batch.is_empty() {
                self.emit_reserved(&batch, node);
                self.launch(batch, hold, node.clone(), ctx);
                return;
            }
        }
        self.release(hold, ctx);
    }

    /// Sends the withdrawals of waiting calls that ran on reservations already held, then
    /// the requests made meanwhile (a call's withdrawal never overtakes its new request).
    pub(super) fn flush_cancels(&mut self, ctx: &mut Context<Self>) {
        if !self.cancels.is_empty() {
            let msg = Cancel {
                requester: self.settings.requester,
                indices: std::mem::take(&mut self.cancels),
            };
            self.send_to_manager(msg, ctx);
        }
        let requests = self.take_outbox();
        self.send_requests(requests, ctx);
    }

    /// How many bytes of function `i`'s inputs each node holds (known only for values
    /// made on other nodes; the biggest first).
    pub(super) fn locality(&self, i: usize) -> Vec<(NodeId, u64)> {
        if self.settings.transport.is_none() {
            return Vec::new();
        }
        let mut held: Vec<(NodeId, u64)> = Vec::new();
        for &d in self.shared.dag.deps(i) {
            let d = d as usize;
            let (Some(node), size) = (&self.fns[d].node, self.fns[d].size) else {
                continue;
            };
            if size == 0 {
                continue;
            }
            match held.iter_mut().find(|(n, _)| n == node) {
                Some((_, total)) => *total += size,
                None => held.push((node.clone(), size)),
            }
        }
        held.sort_by_key(|h| std::cmp::Reverse(h.1));
        held
    }

    pub(super) fn send_to_manager<M>(&mut self, msg: M, ctx: &mut Context<Self>)
    where
        M: Message<Result = ()> + Send + 'static,
        ResourceManager: Handler<M>,
    {
        let fut = self.manager.send(msg);
        self.awaited(fut, ctx);
    }

    pub(super) fn release(&mut self, hold: Hold, ctx: &mut Context<Self>) {
        match hold {
            Hold::Slot => self.slots += 1,
            Hold::Reservation(grant) => {
                self.leases.remove(&grant);
                if let Some(deferred) = &mut self.deferred {
                    deferred.releases.push(grant);
                    return;
                }
                let msg = Release {
                    grants: vec![grant],
                };
                self.send_to_manager(msg, ctx);
            }
        }
    }

    pub(super) fn on_reserved(&mut self, grants: Vec<Grant>, ctx: &mut Context<Self>) {
        let mut give_back = Vec::new();
        // First every granted call stops waiting, so that no batch below takes a call
        // whose own grant is in this message.
        let mut usable = Vec::with_capacity(grants.len());
        for grant in grants {
            match grant.outcome {
                Ok((id, node)) if self.running() => {
                    let shape = self.known_shape(grant.index);
                    if shape != SHAPE_NONE {
                        self.shape_parallel[shape as usize] = grant.parallel.max(1);
                    }
                    if self.take_granted(grant.index) {
                        usable.push((grant.index, id, node, grant.parallel));
                    } else {
                        // It already ran on a reservation of its shape.
                        give_back.push(id);
                    }
                }
                Ok((id, _)) => give_back.push(id),
                Err(mut error) => {
                    // The nodes it names, by the names they announced.
                    if let Some(transport) = &self.settings.transport {
                        error.name_nodes(|node| transport.node_name(node));
                    }
                    self.fail(ExecuteError::Allocation(error), ctx)
                }
            }
        }
        for (index, id, node, parallel) in usable {
            if !self.running() {
                give_back.push(id);
                continue;
            }
            let shape = self.known_shape(index);
            self.leases.insert(
                id,
                Lease {
                    shape,
                    since: Instant::now(),
                    parallel,
                },
            );
            // Here, the reservation runs a batch: this call and its share of the calls
            // of its shape still waiting, back to back.
            let mut batch = vec![index];
            if node == self.settings.node {
                let more = self.share(shape, parallel, 1).saturating_sub(1);
                batch.extend(self.take_waiting(shape, &node, more));
            }
            self.emit_reserved(&batch, &node);
            self.launch(batch, Hold::Reservation(id), node, ctx);
            if shape != SHAPE_NONE && self.running() {
                self.top_up(shape);
            }
        }
        if let Some(deferred) = &mut self.deferred {
            deferred.releases.append(&mut give_back);
            return;
        }
        self.flush_cancels(ctx);
        if !give_back.is_empty() {
            let msg = Release { grants: give_back };
            self.send_to_manager(msg, ctx);
        }
    }
}
