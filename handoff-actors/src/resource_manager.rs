//! The resource manager actor: owns the node's [`ResourceTracker`], picks nodes with the
//! execution's allocator, reserves all-or-nothing, and queues requests that do not fit
//! yet until capacity is released.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::channel::oneshot;
use futures::future::BoxFuture;
pub use handoff_core::ExecutableNode;
use handoff_core::{
    AllocationError, AllocationStrategy, CodeName, FunctionId, NodeId, NodeView, Rank,
    ResourceTracker, Resources, Target, candidates, choose_node, explain_departures,
};

use crate::error::NodeError;
use crate::supervision::{CountRestarts, UserCodePanicked, catch_user_code, guarded, guarded_with};

/// Identifies one execution's requests to the resource manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RequesterId(pub(crate) u64);

/// The nodes a request may run on (with their capacity) and the indices of those whose
/// capacity holds it.
type Placeable = (Vec<(NodeId, Resources)>, Vec<usize>);

/// One function's reservation request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) index: u32,
    pub(crate) rank: Rank,
    pub(crate) function: FunctionId,
    /// Only nodes whose registry holds this code are candidates.
    pub(crate) code: CodeName,
    /// The types its code must have there, for a function built from a typed handle:
    /// only nodes whose registry has the code with these types are candidates.
    pub(crate) signature: Option<Arc<str>>,
    /// Shared by the requests of functions of one shape (no copy per request).
    pub(crate) cost: Arc<Resources>,
    pub(crate) target: Target,
    /// Bytes of the function's inputs each node holds, most first: among the nodes
    /// where it fits now, the one holding the most is preferred to the allocator's pick.
    pub(crate) locality: Vec<(NodeId, u64)>,
    /// The node its last attempt failed on, avoided when another can take it now.
    pub(crate) avoid: Option<NodeId>,
}

/// Identifies one granted reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct GrantId(u64);

/// The answer to a request.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) index: u32,
    pub(crate) outcome: Result<(GrantId, NodeId), AllocationError>,
    /// How many reservations of this cost the nodes it may run on hold at once, all
    /// capacity free (at least 1): how many jobs can share its kind of work.
    pub(crate) parallel: u32,
}

/// Where the resource manager hands a requester's grants (an execution's inbox), without
/// knowing what it is.
pub(crate) trait GrantSink: Send + Sync {
    /// Hands `grants` over: now, once there is room, or never (the requester is gone).
    fn deliver(&self, grants: Vec<Grant>) -> Delivery;

    /// Whether the requester is gone (nothing handed over would be received).
    fn is_closed(&self) -> bool;
}

/// What became of grants handed to a [`GrantSink`].
pub(crate) enum Delivery {
    /// They were handed over.
    Delivered,
    /// No room yet: they are handed over once this completes, unless the requester goes
    /// meanwhile.
    Later(BoxFuture<'static, Result<(), RequesterGone>>),
    /// The requester is gone: they were dropped.
    Gone,
}

/// The requester of grants on their way went away before they were handed over.
#[derive(Debug)]
pub(crate) struct RequesterGone;

/// Reserve resources for these functions; grants arrive on `notify`, now or later.
pub(crate) struct Reserve {
    pub(crate) requester: RequesterId,
    pub(crate) requests: Vec<Request>,
    pub(crate) strategy: AllocationStrategy,
    pub(crate) notify: Arc<dyn GrantSink>,
}

impl Message for Reserve {
    type Result = ();
}

/// Reserve resources for one function; the grant (or refusal) arrives on `reply`, now or
/// later. Used by a node running a function another node sent it.
pub(crate) struct ReserveOne {
    pub(crate) requester: RequesterId,
    pub(crate) rank: Rank,
    pub(crate) function: FunctionId,
    pub(crate) code: CodeName,
    pub(crate) cost: Resources,
    pub(crate) target: Target,
    /// How to choose among the nodes where it fits.
    pub(crate) strategy: AllocationStrategy,
    pub(crate) reply: oneshot::Sender<Result<(GrantId, NodeId), AllocationError>>,
}

impl Message for ReserveOne {
    type Result = ();
}

/// Give reservations back; queued requests that now fit are granted.
pub(crate) struct Release {
    pub(crate) grants: Vec<GrantId>,
}

impl Message for Release {
    type Result = ();
}

/// Forget every queued request of an execution and give back what it still holds.
pub(crate) struct Withdraw {
    pub(crate) requester: RequesterId,
}

impl Message for Withdraw {
    type Result = ();
}

/// Forget these queued requests of an execution: they ran on a reservation it already
/// held. A request already granted is not affected (its grant is on its way).
pub(crate) struct Cancel {
    pub(crate) requester: RequesterId,
    pub(crate) indices: Vec<u32>,
}

impl Message for Cancel {
    type Result = ();
}

/// Registers (or updates) a node's capacity. Current reservations are kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NodeError>")]
pub struct RegisterNode {
    /// The node.
    pub node: NodeId,
    /// Its capacity.
    pub capabilities: Resources,
}

/// Asks whether a node could reserve `cost` right now.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct ResourcesAvailable {
    /// The node.
    pub node: NodeId,
    /// The cost.
    pub cost: Resources,
}

/// Asks for a node's capacity and what it has free: `(capacity, available)`.
#[derive(Debug, Message)]
#[rtype(result = "Option<(Resources, Resources)>")]
pub struct NodeResources {
    /// The node.
    pub node: NodeId,
}

/// Asks for the capacity of every node that can run functions, local node first.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(NodeId, Resources)>")]
pub struct Capacities;

/// Makes another node of the cluster a place functions can be sent to: registers (or
/// updates) its capacity and the code names in its registry.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), NodeError>")]
pub struct RegisterPeer {
    /// The node.
    pub node: NodeId,
    /// Its capacity.
    pub capabilities: Resources,
    /// The code names in its registry.
    pub code_names: Vec<CodeName>,
    /// The signatures of its typed codes ([`handoff_core::Code::signature`]), by name.
    pub signatures: Vec<(CodeName, Arc<str>)>,
}

/// Stops sending functions to a node (it left the cluster). Its registration, and the
/// reservations in progress on it, are kept until they are released.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ForgetPeer {
    /// The node.
    pub node: NodeId,
}

/// Asks for every node functions can be sent to, local node first, with the code names
/// each can run.
#[derive(Debug, Message)]
#[rtype(result = "Vec<ExecutableNode>")]
pub struct ClusterView;

/// Asks for the capacity of every registered node, local node first.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(NodeId, Resources)>")]
pub struct RegisteredNodes;

/// Asks for the nodes that left the cluster and may come back (within their grace
/// period), with their capacity, the latest first.
pub(crate) struct Departures;

impl Message for Departures {
    type Result = Vec<(NodeId, Resources)>;
}

impl Handler<Departures> for ResourceManager {
    type Result = Vec<(NodeId, Resources)>;

    fn handle(&mut self, _msg: Departures, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || self.departures()).unwrap_or_default()
    }
}

/// Where a waiter's grant goes.
enum Notify {
    /// An execution's grant sink.
    Run(Arc<dyn GrantSink>),
    /// A single reservation's reply.
    Once(oneshot::Sender<Result<(GrantId, NodeId), AllocationError>>),
}

impl Notify {
    fn is_closed(&self) -> bool {
        match self {
            Notify::Run(sender) => sender.is_closed(),
            Notify::Once(sender) => sender.is_canceled(),
        }
    }
}

struct Waiter {
    requester: RequesterId,
    request: Request,
    strategy: AllocationStrategy,
    notify: Notify,
}

/// Where a queued request may run, as far as telling requests apart for a queue goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Place {
    Any,
    Pinned(NodeId),
    Group(u32),
}

impl Place {
    fn of(target: &Target) -> Self {
        match target {
            Target::Any => Place::Any,
            Target::Pinned(node) => Place::Pinned(node.clone()),
            Target::Group { root, .. } => Place::Group(*root),
        }
    }
}

/// Requests that fit the same nodes whenever they fit at all: one execution's (or one
/// single reservation's), same cost, same code, same placement. A queue whose first
/// request does not fit is passed over whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    requester: RequesterId,
    cost: Arc<Resources>,
    code: CodeName,
    signature: Option<Arc<str>>,
    place: Place,
}

impl Shape {
    /// Whether `request` of `requester` has this shape (no allocation).
    fn matches(&self, requester: RequesterId, request: &Request) -> bool {
        self.requester == requester
            && self.code == request.code
            && self.signature == request.signature
            && *self.cost == *request.cost
            && self.place == Place::of(&request.target)
    }

    fn of(requester: RequesterId, request: &Request) -> Self {
        Shape {
            requester,
            cost: request.cost.clone(),
            code: request.code.clone(),
            signature: request.signature.clone(),
            place: Place::of(&request.target),
        }
    }
}

/// The order of queued requests: most urgent first, then oldest first.
type Key = (Reverse<Rank>, u64);

/// Hashing for the manager's per-request tables (ids, not attacker-chosen strings).
type Fast = foldhash::fast::RandomState;

/// Names a [`Shape`] while it has a queue.
type ShapeId = u64;

/// One shape's queued requests, in order.
struct Queue {
    shape: Shape,
    waiters: BTreeMap<Key, Waiter>,
    /// When its first request was found not to fit (`None`: not yet tried since it
    /// became first).
    blocked_at: Option<Instant>,
}

/// The most departures remembered (oldest forgotten first).
const MAX_DEPARTED: usize = 1024;

/// Once a request has waited this long at the head of its queue without fitting, it
/// reserves a node: no less urgent request is granted there until it is (see
/// docs/semantics.md, "Waiting for capacity").
pub(crate) const RESERVE_AFTER: Duration = Duration::from_millis(1);

/// Owns the resource tracker of the node.
pub struct ResourceManager {
    tracker: Box<dyn ResourceTracker>,
    local: NodeId,
    /// Nodes functions can be sent to, with the code names each can run: the local node,
    /// and the peers the network layer adds.
    executable: HashMap<NodeId, Arc<HashSet<CodeName>>>,
    /// The signatures of each such node's typed codes, by name.
    signatures: HashMap<NodeId, Arc<HashMap<CodeName, Arc<str>>>>,
    /// Queued requests by shape.
    queues: HashMap<ShapeId, Queue, Fast>,
    /// The id of each shape with a queue.
    shape_ids: HashMap<Shape, ShapeId, Fast>,
    next_shape: ShapeId,
    /// The first request of each queue, most urgent first: a release tries these only.
    heads: BTreeMap<Key, ShapeId>,
    /// Where each queued request of an execution is (for [`Cancel`]).
    queued: HashMap<(RequesterId, u32), (ShapeId, Key), Fast>,
    next_waiter: u64,
    /// Nodes reserved for requests that waited too long, by the request's key.
    reservations: BTreeMap<Key, NodeId>,
    groups: HashMap<(RequesterId, u32), NodeId>,
    restarts: u32,
    /// Reservations granted and not yet released.
    held: HashMap<GrantId, (RequesterId, NodeId, Arc<Resources>)>,
    next_grant: u64,
    /// Peers that left, by departure number: requests that must run there wait for them
    /// to come back for `grace`, then fail.
    departed: HashMap<NodeId, u64>,
    departures: u64,
    grace: std::time::Duration,
    /// The tracker's last panic while giving capacity back: what it was giving back may
    /// still count as held. Named in the refusals of requests that can never be granted.
    release_panic: Option<UserCodePanicked>,
}

impl ResourceManager {
    pub(crate) fn new(
        tracker: Box<dyn ResourceTracker>,
        local: NodeId,
        code_names: Vec<CodeName>,
        signatures: Vec<(CodeName, Arc<str>)>,
        grace: std::time::Duration,
    ) -> Self {
        let local_codes = Arc::new(code_names.into_iter().collect());
        let local_signatures = Arc::new(signatures.into_iter().collect());
        ResourceManager {
            tracker,
            executable: HashMap::from([(local.clone(), local_codes)]),
            signatures: HashMap::from([(local.clone(), local_signatures)]),
            local,
            queues: HashMap::default(),
            shape_ids: HashMap::default(),
            next_shape: 0,
            heads: BTreeMap::new(),
            queued: HashMap::default(),
            next_waiter: 0,
            reservations: BTreeMap::new(),
            groups: HashMap::new(),
            held: HashMap::new(),
            restarts: 0,
            next_grant: 0,
            departed: HashMap::new(),
            departures: 0,
            grace,
            release_panic: None,
        }
    }

    /// The node a request must run on, if its placement (or its group's) says so.
    fn required_node(&self, requester: RequesterId, target: &Target) -> Option<NodeId> {
        match target {
            Target::Any => None,
            Target::Pinned(node) => Some(node.clone()),
            Target::Group { root, pinned, .. } => self
                .groups
                .get(&(requester, *root))
                .cloned()
                .or_else(|| pinned.clone()),
        }
    }

    /// The grace period for `node` is over: requests that must run there fail.
    fn give_up_on(&mut self, node: &NodeId, ctx: &mut Context<Self>) {
        // Every request of a queue has the same placement: its first one tells.
        let shapes: Vec<ShapeId> = self
            .queues
            .iter()
            .filter(|(_, queue)| {
                !matches!(queue.shape.place, Place::Any)
                    && queue.waiters.values().next().is_some_and(|w| {
                        self.required_node(w.requester, &w.request.target).as_ref() == Some(node)
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        for shape in shapes {
            let Some(queue) = self.remove_queue(shape) else {
                continue;
            };
            for (key, waiter) in queue.waiters {
                self.forget_queued(&waiter, key);
                let grant = Grant {
                    index: waiter.request.index,
                    outcome: Err(AllocationError::NodeDown {
                        function: waiter.request.function.clone(),
                        node: node.clone(),
                        grace: self.grace,
                    }),
                    parallel: 0,
                };
                self.deliver(waiter.requester, waiter.notify, vec![grant], ctx);
            }
        }
    }

    /// Registered nodes, local first, then by id.
    fn ordered(&self, only_executable: bool) -> Vec<(NodeId, Resources)> {
        let mut nodes = self.tracker.nodes();
        nodes.sort_by_key(|n| (n != &self.local, n.clone()));
        nodes
            .into_iter()
            .filter(|n| !only_executable || self.executable.contains_key(n))
            .filter_map(|n| self.tracker.capabilities(&n).map(|c| (n, c)))
            .collect()
    }

    /// Tries to reserve for one request (queued under `key`, or about to be when it is
    /// new): `None` when it must wait. Nodes reserved for more urgent requests that
    /// waited too long are not used.
    ///
    /// The tracker and the allocator are user code: if either panics, the request is
    /// refused with [`AllocationError::NeverGranted`] naming the panic, and the manager
    /// goes on (it records a grant only once the tracker's `request` has returned).
    fn try_grant(
        &mut self,
        requester: RequesterId,
        request: &Request,
        strategy: &AllocationStrategy,
        key: Key,
    ) -> Option<Grant> {
        catch_user_code("resource tracker or allocator", || {
            self.place(requester, request, strategy, key)
        })
        .unwrap_or_else(|panicked| {
            Some(Grant {
                index: request.index,
                outcome: Err(AllocationError::NeverGranted {
                    function: request.function.clone(),
                    reason: panicked.to_string(),
                }),
                parallel: 0,
            })
        })
    }

    /// [`Self::try_grant`], with the tracker's and the allocator's panics uncaught.
    fn place(
        &mut self,
        requester: RequesterId,
        request: &Request,
        strategy: &AllocationStrategy,
        key: Key,
    ) -> Option<Grant> {
        let allowed = self.required_node(requester, &request.target);
        if allowed
            .as_ref()
            .is_some_and(|n| self.departed.contains_key(n))
        {
            // Its node left: wait for it to come back, until the grace period ends.
            return None;
        }
        let (nodes, mut fitting) = match self.placeable(requester, request, allowed.as_ref()) {
            Ok(placeable) => placeable,
            Err(error) => {
                return Some(Grant {
                    index: request.index,
                    outcome: Err(error),
                    parallel: 0,
                });
            }
        };
        let parallel = fitting
            .iter()
            .map(|&i| request.cost.times_in(&nodes[i].1))
            .fold(0_u64, u64::saturating_add)
            .clamp(1, u64::from(u32::MAX)) as u32;
        // With nothing reserved anywhere, no release will ever retry this request: a
        // refusal now is final, not a wait.
        let idle = self.held.is_empty();
        let release_panic = &self.release_panic;
        let never = |reason: String| Grant {
            index: request.index,
            outcome: Err(AllocationError::NeverGranted {
                function: request.function.clone(),
                reason: match release_panic {
                    Some(panicked) => format!(
                        "{reason}; the {} panicked giving capacity back ({}), which may still count as held",
                        panicked.what, panicked.message
                    ),
                    None => reason,
                },
            }),
            parallel,
        };
        // Nodes kept for more urgent requests that waited too long.
        if !self.reservations.is_empty() {
            let reserved: Vec<&NodeId> = self
                .reservations
                .range(..key)
                .map(|(_, node)| node)
                .collect();
            if !reserved.is_empty() {
                fitting.retain(|&i| !reserved.contains(&&nodes[i].0));
                if fitting.is_empty() {
                    return None;
                }
            }
        }
        let available: Vec<Resources> = fitting
            .iter()
            .map(|&i| self.tracker.available(&nodes[i].0).unwrap_or_default())
            .collect();
        let views: Vec<NodeView<'_>> = fitting
            .iter()
            .zip(&available)
            .map(|(&i, available)| NodeView {
                id: &nodes[i].0,
                capacity: &nodes[i].1,
                available,
            })
            .collect();
        // The placement rule `allocate` plans with.
        let Some(choice) = choose_node(
            &request.cost,
            &views,
            &request.locality,
            request.avoid.as_ref(),
            strategy,
        ) else {
            return idle.then(|| {
                never("the allocator chose no node while every node was idle".to_owned())
            });
        };
        let node = nodes[fitting[choice]].0.clone();
        match self.tracker.request(&node, &request.cost) {
            Ok(()) => {
                if let Target::Group { root, .. } = request.target {
                    self.groups
                        .entry((requester, root))
                        .or_insert_with(|| node.clone());
                }
                let id = GrantId(self.next_grant);
                self.next_grant += 1;
                self.held
                    .insert(id, (requester, node.clone(), Arc::clone(&request.cost)));
                Some(Grant {
                    index: request.index,
                    outcome: Ok((id, node)),
                    parallel,
                })
            }
            Err(error) => idle.then(|| {
                never(format!(
                    "the tracker refused it on idle node `{node}`: {error}"
                ))
            }),
        }
    }

    /// The node to keep for a request that waited too long: of those it may run on (by
    /// code, placement and capacity), the one closest to taking it now. `None` when one
    /// has room for it already (what holds it back then is the allocator or the tracker,
    /// which a drained node would not change).
    fn node_to_reserve(&self, requester: RequesterId, request: &Request) -> Option<NodeId> {
        let allowed = self.required_node(requester, &request.target);
        let (nodes, fitting) = self.placeable(requester, request, allowed.as_ref()).ok()?;
        let (node, missing) = fitting
            .into_iter()
            .map(|i| {
                let free = self.tracker.available(&nodes[i].0).unwrap_or_default();
                (i, request.cost.missing_from(&free))
            })
            .min_by_key(|(_, missing)| *missing)?;
        (missing > 0).then(|| nodes[node].0.clone())
    }

    /// The nodes a request may ever run on, with the indices of those whose capacity
    /// holds it: by code, placement and capacity, and for the first member of a
    /// collocation group to be placed, by what the whole group needs (so its other
    /// members fit there too). An error when there is none.
    fn placeable(
        &self,
        requester: RequesterId,
        request: &Request,
        allowed: Option<&NodeId>,
    ) -> Result<Placeable, AllocationError> {
        let mut nodes = self.with_code(&request.code, request.signature.as_deref());
        let fitting = candidates(&request.function, &[&request.cost], &nodes, allowed)
            .map_err(|error| self.explain(error, &request.cost, allowed))?;
        let Target::Group { root, needs, .. } = &request.target else {
            return Ok((nodes, fitting));
        };
        if self.groups.contains_key(&(requester, *root)) {
            return Ok((nodes, fitting));
        }
        nodes.retain(|(node, _)| {
            self.executable
                .get(node)
                .is_some_and(|codes| needs.codes.iter().all(|c| codes.contains(c)))
        });
        let fitting = candidates(&request.function, &[&needs.total], &nodes, allowed)
            .map_err(|error| self.explain(error, &needs.total, allowed))?;
        Ok((nodes, fitting))
    }

    /// `error`, or when it says that no live node holds `cost`, the nodes that left the
    /// cluster and could have held it (the real cause).
    fn explain(
        &self,
        error: AllocationError,
        cost: &Resources,
        allowed: Option<&NodeId>,
    ) -> AllocationError {
        explain_departures(error, cost, allowed, &self.departures())
    }

    /// The nodes that left and may come back, with their capacity, the latest first.
    fn departures(&self) -> Vec<(NodeId, Resources)> {
        let mut left: Vec<(u64, &NodeId)> = self
            .departed
            .iter()
            .map(|(node, &departure)| (departure, node))
            .collect();
        left.sort_by(|a, b| b.cmp(a));
        left.into_iter()
            .filter_map(|(_, node)| Some((node.clone(), self.tracker.capabilities(node)?)))
            .collect()
    }

    /// The nodes functions can be sent to whose registry has `code` (with the types
    /// `signature`, when given), local first, with their capacity.
    fn with_code(&self, code: &CodeName, signature: Option<&str>) -> Vec<(NodeId, Resources)> {
        let mut nodes = self.ordered(true);
        nodes.retain(|(node, _)| {
            self.executable
                .get(node)
                .is_some_and(|codes| codes.contains(code))
                && signature.is_none_or(|wanted| self.signature_matches(node, code, wanted))
        });
        nodes
    }

    /// Whether `node`'s registry has `code` with the types `wanted` (a code registered
    /// without types, e.g. a stream's stateful code, is taken as matching).
    fn signature_matches(&self, node: &NodeId, code: &CodeName, wanted: &str) -> bool {
        self.signatures
            .get(node)
            .and_then(|signed| signed.get(code))
            .is_none_or(|found| **found == *wanted)
    }

    /// Sends grants; if the execution is gone, gives its reservations back.
    fn deliver(
        &mut self,
        requester: RequesterId,
        notify: Notify,
        mut grants: Vec<Grant>,
        ctx: &mut Context<Self>,
    ) {
        let notify = match notify {
            Notify::Run(notify) => notify,
            Notify::Once(reply) => {
                if let Some(grant) = grants.pop()
                    && let Err(Ok((id, _))) = reply.send(grant.outcome)
                {
                    self.release(id);
                    self.retry_waiters(ctx);
                }
                return;
            }
        };
        match notify.deliver(grants) {
            Delivery::Delivered => {}
            Delivery::Later(delivered) => {
                // A task of its own, not one on the actor's context: a restart of the
                // manager (which drops those) must not lose the grants on their way.
                let manager = ctx.address().downgrade();
                actix::spawn(async move {
                    if delivered.await.is_err()
                        && let Some(manager) = manager.upgrade()
                    {
                        // The execution is gone: what it was granted goes back. (An
                        // error here: the manager has stopped for good.)
                        let _ = manager.send(Withdraw { requester }).await;
                    }
                });
            }
            Delivery::Gone => self.withdraw(requester, ctx),
        }
    }

    /// Gives a reservation back to the tracker. A refusal or a panic of the tracker is
    /// logged, and the reservation is forgotten all the same (whatever the tracker
    /// still counts as held stays so).
    fn release(&mut self, grant: GrantId) {
        let Some((_, node, cost)) = self.held.remove(&grant) else {
            return;
        };
        match catch_user_code("resource tracker", || self.tracker.release(&node, &cost)) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%node, %error, "release refused"),
            Err(panicked) => {
                tracing::error!(%node, %panicked, "release panicked; the capacity may still count as held");
                self.release_panic = Some(panicked);
            }
        }
    }

    /// Drops an execution's queued requests and gives back everything it holds.
    fn withdraw(&mut self, requester: RequesterId, ctx: &mut Context<Self>) {
        self.drop_queued(|r| r == requester);
        self.groups.retain(|(r, _), _| *r != requester);
        let held: Vec<GrantId> = self
            .held
            .iter()
            .filter(|(_, (r, _, _))| *r == requester)
            .map(|(id, _)| *id)
            .collect();
        if !held.is_empty() {
            for grant in held {
                self.release(grant);
            }
            self.retry_waiters(ctx);
        }
    }

    /// Drops the queued requests of the requesters `which` says.
    fn drop_queued(&mut self, which: impl Fn(RequesterId) -> bool) {
        let shapes: Vec<ShapeId> = self
            .queues
            .iter()
            .filter(|(_, queue)| which(queue.shape.requester))
            .map(|(id, _)| *id)
            .collect();
        for shape in shapes {
            if let Some(queue) = self.remove_queue(shape) {
                for (key, waiter) in queue.waiters {
                    self.forget_queued(&waiter, key);
                }
            }
        }
    }

    /// Removes a queue (and its shape's id).
    fn remove_queue(&mut self, shape: ShapeId) -> Option<Queue> {
        let queue = self.queues.remove(&shape)?;
        self.shape_ids.remove(&queue.shape);
        Some(queue)
    }

    /// The id of `shape`'s queue, made (empty) if it has none.
    fn intern(&mut self, shape: Shape) -> ShapeId {
        if let Some(&id) = self.shape_ids.get(&shape) {
            return id;
        }
        let id = self.next_shape;
        self.next_shape += 1;
        self.shape_ids.insert(shape.clone(), id);
        self.queues.insert(
            id,
            Queue {
                shape,
                waiters: BTreeMap::new(),
                blocked_at: None,
            },
        );
        id
    }

    /// Forgets the indexes of a request taken out of its queue.
    fn forget_queued(&mut self, waiter: &Waiter, key: Key) {
        self.heads.remove(&key);
        self.reservations.remove(&key);
        if matches!(waiter.notify, Notify::Run(_)) {
            self.queued
                .remove(&(waiter.requester, waiter.request.index));
        }
    }

    /// Takes the first request out of `shape`'s queue; the next becomes its head.
    fn pop_head(&mut self, shape: ShapeId) -> Option<(Key, Waiter)> {
        let queue = self.queues.get_mut(&shape)?;
        let (key, waiter) = queue.waiters.pop_first()?;
        queue.blocked_at = None;
        let next = queue.waiters.keys().next().copied();
        if next.is_none() {
            self.remove_queue(shape);
        }
        self.forget_queued(&waiter, key);
        if let Some(next) = next {
            self.heads.insert(next, shape);
        }
        Some((key, waiter))
    }

    /// Grants queued requests that fit now, most urgent first. Only the first request of
    /// each shape's queue is tried: when it does not fit, neither does the rest of its
    /// queue. So a release costs the number of shapes waiting, plus the grants it makes.
    fn retry_waiters(&mut self, ctx: &mut Context<Self>) {
        let mut granted: Vec<(RequesterId, Notify, Vec<Grant>)> = Vec::new();
        let mut cursor: Option<Key> = None;
        loop {
            let next = match cursor {
                None => self.heads.iter().next(),
                Some(after) => self
                    .heads
                    .range((Bound::Excluded(after), Bound::Unbounded))
                    .next(),
            };
            let Some((&key, shape)) = next else {
                break;
            };
            cursor = Some(key);
            let shape = *shape;
            let Some(queue) = self.queues.get(&shape) else {
                self.heads.remove(&key);
                continue;
            };
            let Some(waiter) = queue.waiters.get(&key) else {
                self.heads.remove(&key);
                continue;
            };
            if waiter.notify.is_closed() {
                self.pop_head(shape);
                continue;
            }
            let (requester, request, strategy) = (
                waiter.requester,
                waiter.request.clone(),
                waiter.strategy.clone(),
            );
            match self.try_grant(requester, &request, &strategy, key) {
                Some(grant) => {
                    let Some((_, waiter)) = self.pop_head(shape) else {
                        continue;
                    };
                    match waiter.notify {
                        Notify::Run(notify) => {
                            let batch = granted.iter_mut().find(|(r, n, _)| {
                                *r == waiter.requester && matches!(n, Notify::Run(_))
                            });
                            match batch {
                                Some((_, _, grants)) => grants.push(grant),
                                None => granted.push((
                                    waiter.requester,
                                    Notify::Run(notify),
                                    vec![grant],
                                )),
                            }
                        }
                        once => granted.push((waiter.requester, once, vec![grant])),
                    }
                }
                None => self.blocked(shape, key, requester, &request),
            }
        }
        for (requester, notify, grants) in granted {
            self.deliver(requester, notify, grants, ctx);
        }
    }

    /// The head of `shape`'s queue (`key`) did not fit: once it has waited for
    /// [`RESERVE_AFTER`], a node is kept for it.
    fn blocked(&mut self, shape: ShapeId, key: Key, requester: RequesterId, request: &Request) {
        let Some(queue) = self.queues.get_mut(&shape) else {
            return;
        };
        let since = *queue.blocked_at.get_or_insert_with(Instant::now);
        if since.elapsed() >= RESERVE_AFTER
            && !self.reservations.contains_key(&key)
            && let Ok(Some(node)) = catch_user_code("resource tracker", || {
                self.node_to_reserve(requester, request)
            })
        {
            tracing::debug!(function = %request.function, %node, "reserving a node for a request that waited");
            self.reservations.insert(key, node);
        }
    }

    /// Queues a request that was just found not to fit.
    fn enqueue_blocked(&mut self, waiter: Waiter) {
        let key = self.next_key(waiter.request.rank);
        self.next_waiter += 1;
        let shape = self.intern(Shape::of(waiter.requester, &waiter.request));
        let (requester, request) = (waiter.requester, waiter.request.clone());
        self.enqueue_at(key, shape, waiter);
        if self.heads.get(&key) == Some(&shape) {
            self.blocked(shape, key, requester, &request);
        }
    }

    /// Queues `waiter` under `key` in `shape`'s queue (made by [`Self::intern`]).
    fn enqueue_at(&mut self, key: Key, shape: ShapeId, waiter: Waiter) {
        let Some(queue) = self.queues.get_mut(&shape) else {
            return;
        };
        if matches!(waiter.notify, Notify::Run(_)) {
            self.queued
                .insert((waiter.requester, waiter.request.index), (shape, key));
        }
        let old_head = queue.waiters.keys().next().copied();
        queue.waiters.insert(key, waiter);
        if old_head.is_none_or(|head| key < head) {
            if let Some(head) = old_head {
                self.heads.remove(&head);
                self.reservations.remove(&head);
                queue.blocked_at = None;
            }
            self.heads.insert(key, shape);
        }
    }

    /// Drops queued requests of `requester` (they ran on a reservation it held).
    fn cancel(&mut self, requester: RequesterId, indices: Vec<u32>) {
        for index in indices {
            let Some((shape, key)) = self.queued.remove(&(requester, index)) else {
                continue;
            };
            let Some(queue) = self.queues.get_mut(&shape) else {
                continue;
            };
            if queue.waiters.keys().next() == Some(&key) {
                self.pop_head(shape);
            } else {
                queue.waiters.remove(&key);
            }
        }
    }

    /// The key a new request would be queued under.
    fn next_key(&self, rank: Rank) -> Key {
        (Reverse(rank), self.next_waiter)
    }
}

/// The actor's name in panic reports.
const ACTOR: &str = "resource manager";

impl Actor for ResourceManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Supervised for ResourceManager {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.restarts += 1;
        // Nothing is lost: the queued requests are state, and the grace periods and the
        // grants waiting for room in a channel run as tasks of their own.
        tracing::warn!(node = %self.local, "resource manager restarting; registrations, reservations and queued requests kept");
    }
}

impl Handler<CountRestarts> for ResourceManager {
    type Result = u32;

    fn handle(&mut self, _msg: CountRestarts, _ctx: &mut Self::Context) -> u32 {
        self.restarts
    }
}

impl Handler<Reserve> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: Reserve, ctx: &mut Self::Context) {
        // The tracker's and the allocator's panics refuse the requests concerned (see
        // `try_grant`). If the manager's own code panics, every request of the batch is
        // refused rather than left waiting for a grant that would never come.
        let requester = msg.requester;
        let asked: Vec<(u32, FunctionId)> = msg
            .requests
            .iter()
            .map(|r| (r.index, r.function.clone()))
            .collect();
        let notify_on_panic = msg.notify.clone();
        let handled = guarded_with(ACTOR, ctx, |ctx| {
            let Reserve {
                requester,
                requests,
                strategy,
                notify,
            } = msg;
            let mut grants = Vec::new();
            // The shape of the previous request (consecutive requests mostly share one).
            let mut last: Option<(Shape, ShapeId)> = None;
            for request in requests {
                // Behind a request of its shape that is waiting already, it waits too
                // (whatever fits one fits the other): queued without a try.
                let shape = match &last {
                    Some((shape, id)) if shape.matches(requester, &request) => Some(*id),
                    _ => {
                        let shape = Shape::of(requester, &request);
                        let id = self.shape_ids.get(&shape).copied();
                        if let Some(id) = id {
                            last = Some((shape, id));
                        }
                        id
                    }
                };
                if let Some(shape) = shape
                    && let Some(queue) = self.queues.get(&shape)
                    && queue.blocked_at.is_some()
                {
                    let key = self.next_key(request.rank);
                    self.next_waiter += 1;
                    let waiter = Waiter {
                        requester,
                        request,
                        strategy: strategy.clone(),
                        notify: Notify::Run(notify.clone()),
                    };
                    self.enqueue_at(key, shape, waiter);
                    continue;
                }
                let key = self.next_key(request.rank);
                match self.try_grant(requester, &request, &strategy, key) {
                    Some(grant) => grants.push(grant),
                    None => self.enqueue_blocked(Waiter {
                        requester,
                        request,
                        strategy: strategy.clone(),
                        notify: Notify::Run(notify.clone()),
                    }),
                }
            }
            if !grants.is_empty() {
                self.deliver(requester, Notify::Run(notify), grants, ctx);
            }
        });
        if let Err(panicked) = handled {
            self.drop_queued(|r| r == requester);
            let refusals = asked
                .into_iter()
                .map(|(index, function)| Grant {
                    index,
                    outcome: Err(AllocationError::NeverGranted {
                        function,
                        reason: panicked.to_string(),
                    }),
                    parallel: 0,
                })
                .collect();
            self.deliver(requester, Notify::Run(notify_on_panic), refusals, ctx);
        }
    }
}

impl Handler<ReserveOne> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: ReserveOne, ctx: &mut Self::Context) {
        let ReserveOne {
            requester,
            rank,
            function,
            code,
            cost,
            target,
            strategy,
            reply,
        } = msg;
        let request = Request {
            index: 0,
            rank,
            function: function.clone(),
            code,
            signature: None,
            cost: Arc::new(cost),
            target,
            locality: Vec::new(),
            avoid: None,
        };
        let key = self.next_key(request.rank);
        let granted = guarded_with(ACTOR, ctx, |_| {
            self.try_grant(requester, &request, &strategy, key)
        });
        match granted {
            Ok(Some(grant)) => self.deliver(requester, Notify::Once(reply), vec![grant], ctx),
            Ok(None) => self.enqueue_blocked(Waiter {
                requester,
                request,
                strategy,
                notify: Notify::Once(reply),
            }),
            Err(panicked) => {
                let _ = reply.send(Err(AllocationError::NeverGranted {
                    function,
                    reason: panicked.to_string(),
                }));
            }
        }
    }
}

impl Handler<RegisterPeer> for ResourceManager {
    type Result = Result<(), NodeError>;

    fn handle(&mut self, msg: RegisterPeer, ctx: &mut Self::Context) -> Self::Result {
        guarded_with(ACTOR, ctx, |ctx| {
            self.tracker.register(msg.node.clone(), msg.capabilities)?;
            if msg.node != self.local {
                let codes = Arc::new(msg.code_names.into_iter().collect());
                if self.departed.remove(&msg.node).is_some() {
                    tracing::info!(node = %msg.node, "a node that left is back");
                }
                self.signatures.insert(
                    msg.node.clone(),
                    Arc::new(msg.signatures.into_iter().collect()),
                );
                self.executable.insert(msg.node, codes);
            }
            self.retry_waiters(ctx);
            Ok(())
        })?
    }
}

impl Handler<ForgetPeer> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: ForgetPeer, ctx: &mut Self::Context) {
        if msg.node == self.local || self.executable.remove(&msg.node).is_none() {
            return;
        }
        // Groups placed there (and not pinned there) form again elsewhere.
        self.groups.retain(|_, n| *n != msg.node);
        self.departures += 1;
        let departure = self.departures;
        if self.departed.len() >= MAX_DEPARTED {
            // The oldest departure is forgotten (its grace period is long over).
            if let Some(oldest) = self
                .departed
                .iter()
                .min_by_key(|(_, seq)| **seq)
                .map(|(node, _)| node.clone())
            {
                self.departed.remove(&oldest);
            }
        }
        self.departed.insert(msg.node.clone(), departure);
        // A task of its own, not a timer on the actor's context: a restart of the
        // manager (which drops those) must not keep the requests waiting forever.
        let (manager, grace, node) = (ctx.address().downgrade(), self.grace, msg.node);
        actix::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(manager) = manager.upgrade() {
                let _ = manager.send(GraceOver { node, departure }).await;
            }
        });
    }
}

/// The grace period of a node that left is over (sent by the task [`ForgetPeer`] starts).
struct GraceOver {
    node: NodeId,
    /// Which departure: a node that came back and left again has a later one.
    departure: u64,
}

impl Message for GraceOver {
    type Result = ();
}

impl Handler<GraceOver> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: GraceOver, ctx: &mut Self::Context) {
        let _ = guarded_with(ACTOR, ctx, |ctx| {
            if self.departed.get(&msg.node) == Some(&msg.departure) {
                self.give_up_on(&msg.node, ctx);
            }
        });
    }
}

impl Handler<ClusterView> for ResourceManager {
    type Result = Vec<ExecutableNode>;

    fn handle(&mut self, _msg: ClusterView, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            self.ordered(true)
                .into_iter()
                .filter_map(|(node, capacity)| {
                    let code_names = Arc::clone(self.executable.get(&node)?);
                    let signatures = self.signatures.get(&node).cloned().unwrap_or_default();
                    Some(ExecutableNode {
                        node,
                        capacity,
                        code_names,
                        signatures,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Handler<Release> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) {
        let _ = guarded_with(ACTOR, ctx, |ctx| {
            for grant in msg.grants {
                self.release(grant);
            }
            self.retry_waiters(ctx);
        });
    }
}

impl Handler<Withdraw> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: Withdraw, ctx: &mut Self::Context) {
        let _ = guarded_with(ACTOR, ctx, |ctx| self.withdraw(msg.requester, ctx));
    }
}

impl Handler<Cancel> for ResourceManager {
    type Result = ();

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) {
        let _ = guarded_with(ACTOR, ctx, |_| self.cancel(msg.requester, msg.indices));
    }
}

impl Handler<RegisterNode> for ResourceManager {
    type Result = Result<(), NodeError>;

    fn handle(&mut self, msg: RegisterNode, ctx: &mut Self::Context) -> Self::Result {
        guarded_with(ACTOR, ctx, |ctx| {
            self.tracker.register(msg.node, msg.capabilities)?;
            self.retry_waiters(ctx);
            Ok(())
        })?
    }
}

impl Handler<ResourcesAvailable> for ResourceManager {
    type Result = bool;

    fn handle(&mut self, msg: ResourcesAvailable, ctx: &mut Self::Context) -> bool {
        guarded(ACTOR, ctx, || {
            self.tracker.resources_available(&msg.node, &msg.cost)
        })
        .unwrap_or(false)
    }
}

impl Handler<NodeResources> for ResourceManager {
    type Result = Option<(Resources, Resources)>;

    fn handle(&mut self, msg: NodeResources, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            Some((
                self.tracker.capabilities(&msg.node)?,
                self.tracker.available(&msg.node)?,
            ))
        })
        .ok()
        .flatten()
    }
}

impl Handler<Capacities> for ResourceManager {
    type Result = Vec<(NodeId, Resources)>;

    fn handle(&mut self, _msg: Capacities, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || self.ordered(true)).unwrap_or_default()
    }
}

impl Handler<RegisteredNodes> for ResourceManager {
    type Result = Vec<(NodeId, Resources)>;

    fn handle(&mut self, _msg: RegisteredNodes, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || self.ordered(false)).unwrap_or_default()
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::supervision::Crash> for ResourceManager {
    type Result = Result<(), crate::supervision::Panicked>;

    fn handle(&mut self, _msg: crate::supervision::Crash, ctx: &mut Self::Context) -> Self::Result {
        guarded(ACTOR, ctx, || {
            panic!("fault injection: the resource manager was told to crash")
        })
    }
}

#[cfg(test)]
mod tests {
    //! A restart of the manager (a panic of its own code) keeps what is under way: the
    //! grace period of a node that left, and grants waiting for room in a full channel.

    use handoff_core::SimpleResourceTracker;
    use tokio::sync::mpsc;

    use super::*;
    use crate::run::RunEvent;

    /// Makes the manager's handler panic under [`guarded`], so its supervisor restarts it.
    struct Restart;

    impl Message for Restart {
        type Result = ();
    }

    impl Handler<Restart> for ResourceManager {
        type Result = ();

        fn handle(&mut self, _msg: Restart, ctx: &mut Self::Context) {
            let _ = guarded(ACTOR, ctx, || panic!("a bug in the resource manager"));
        }
    }

    /// How long an await may take before the test is declared hung.
    const HANG_GUARD: Duration = Duration::from_secs(30);

    /// A supervised manager of node `local` (1 cpu, code `f`) and of its peer `peer`
    /// (1 cpu, code `f`), which waits `grace` for a peer that left to come back.
    async fn manager(grace: Duration) -> Addr<ResourceManager> {
        let state = ResourceManager::new(
            Box::new(SimpleResourceTracker::new()),
            NodeId::new("local"),
            vec![CodeName::new("f")],
            Vec::new(),
            grace,
        );
        let manager = Supervisor::start(move |_| state);
        manager
            .send(RegisterNode {
                node: NodeId::new("local"),
                capabilities: Resources::new().cpu(1),
            })
            .await
            .expect("alive")
            .expect("registered");
        manager
            .send(RegisterPeer {
                node: NodeId::new("peer"),
                capabilities: Resources::new().cpu(1),
                code_names: vec![CodeName::new("f")],
                signatures: Vec::new(),
            })
            .await
            .expect("alive")
            .expect("registered");
        manager
    }

    /// Function `f`'s request for 1 cpu on `target`.
    fn request(target: Target) -> Request {
        Request {
            index: 0,
            rank: Rank {
                priority: 0,
                path: 0,
            },
            function: FunctionId::new("f"),
            code: CodeName::new("f"),
            signature: None,
            cost: Arc::new(Resources::new().cpu(1)),
            target,
            locality: Vec::new(),
            avoid: None,
        }
    }

    /// Sends `request` for requester 1, its grants to `notify`.
    async fn reserve(
        manager: &Addr<ResourceManager>,
        request: Request,
        notify: &mpsc::Sender<RunEvent>,
    ) {
        manager
            .send(Reserve {
                requester: RequesterId(1),
                requests: vec![request],
                strategy: AllocationStrategy::default(),
                notify: Arc::new(notify.clone()),
            })
            .await
            .expect("alive");
    }

    async fn restart(manager: &Addr<ResourceManager>) {
        manager.send(Restart).await.expect("alive");
        assert_eq!(manager.send(CountRestarts).await, Ok(1));
    }

    /// The next grant on `events`.
    async fn next_grant(events: &mut mpsc::Receiver<RunEvent>) -> Grant {
        match tokio::time::timeout(HANG_GUARD, events.recv()).await {
            Ok(Some(RunEvent::Reserved(mut grants))) if grants.len() == 1 => {
                grants.pop().expect("one grant")
            }
            Ok(Some(_)) => panic!("expected one grant, got another event"),
            Ok(None) => panic!("the grant was dropped"),
            Err(_) => panic!("hang guard: no grant within {HANG_GUARD:?}"),
        }
    }

    #[actix::test]
    async fn the_grace_period_of_a_node_that_left_outlives_a_restart() {
        let manager = manager(Duration::from_millis(300)).await;
        let peer = NodeId::new("peer");
        // Two requests pinned to the peer: the first holds it, the second waits.
        let (notify, mut events) = mpsc::channel(8);
        reserve(&manager, request(Target::Pinned(peer.clone())), &notify).await;
        let first = next_grant(&mut events).await;
        assert!(matches!(first.outcome, Ok((_, ref node)) if *node == peer));
        reserve(&manager, request(Target::Pinned(peer.clone())), &notify).await;
        // The peer leaves: the waiting request fails once the grace period is over,
        // although the manager restarts meanwhile.
        manager
            .send(ForgetPeer { node: peer.clone() })
            .await
            .expect("alive");
        restart(&manager).await;
        let second = next_grant(&mut events).await;
        assert!(
            matches!(
                second.outcome,
                Err(AllocationError::NodeDown { ref node, .. }) if *node == peer
            ),
            "{:?}",
            second.outcome
        );
    }

    #[actix::test]
    async fn a_grant_waiting_for_room_in_a_full_channel_outlives_a_restart() {
        let manager = manager(Duration::from_secs(60)).await;
        let (notify, mut events) = mpsc::channel(1);
        notify
            .try_send(RunEvent::Cancel)
            .expect("room for one event");
        // Granted at once, but the execution's channel is full: the grant waits for room.
        reserve(
            &manager,
            request(Target::Pinned(NodeId::new("local"))),
            &notify,
        )
        .await;
        drop(notify);
        restart(&manager).await;
        assert!(matches!(events.recv().await, Some(RunEvent::Cancel)));
        let grant = next_grant(&mut events).await;
        assert!(
            matches!(grant.outcome, Ok((_, ref node)) if node.as_str() == "local"),
            "{:?}",
            grant.outcome
        );
    }
}
