//! Custom [`ResourceTracker`] implementations plugged in and used through
//! `Box<dyn ResourceTracker>`: a quota tracker that caps every node at a global quota,
//! and a tracker that logs every call it forwards.

use std::sync::{Arc, Mutex};

use handoff_core::{
    AllocationStrategy, Amount, Dag, Function, NodeId, RegisterNodeError, ReleaseError,
    RequestError, ResourceTracker, Resources, SimpleResourceTracker, allocate,
};

/// Caps every node's capacity, resource by resource, at a global quota; resources the
/// quota does not name are not available at all.
struct QuotaTracker {
    quota: Resources,
    inner: SimpleResourceTracker,
}

impl QuotaTracker {
    fn new(quota: Resources) -> Self {
        QuotaTracker {
            quota,
            inner: SimpleResourceTracker::new(),
        }
    }
}

impl ResourceTracker for QuotaTracker {
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError> {
        let capped: Resources = capabilities
            .iter()
            .map(|(name, amount)| (name.clone(), amount.min(self.quota.get(name))))
            .collect();
        // Validate what was given, not the capped form (a NaN must still be refused).
        if let Some((resource, amount)) = capabilities.first_invalid() {
            return Err(RegisterNodeError::InvalidCapacity {
                node,
                resource: resource.clone(),
                amount,
            });
        }
        self.inner.register(node, capped)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.inner.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.inner.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError> {
        self.inner.request(node, cost)
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError> {
        self.inner.release(node, cost)
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.inner.nodes()
    }
}

/// Forwards to another tracker and records each call.
struct LoggingTracker {
    inner: Box<dyn ResourceTracker>,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggingTracker {
    fn record(&self, line: String) {
        self.log.lock().expect("log lock").push(line);
    }
}

impl ResourceTracker for LoggingTracker {
    fn register(&mut self, node: NodeId, capabilities: Resources) -> Result<(), RegisterNodeError> {
        self.record(format!("register {node} {capabilities}"));
        self.inner.register(node, capabilities)
    }
    fn capabilities(&self, node: &NodeId) -> Option<Resources> {
        self.record(format!("capabilities {node}"));
        self.inner.capabilities(node)
    }
    fn available(&self, node: &NodeId) -> Option<Resources> {
        self.record(format!("available {node}"));
        self.inner.available(node)
    }
    fn request(&mut self, node: &NodeId, cost: &Resources) -> Result<(), RequestError> {
        let result = self.inner.request(node, cost);
        self.record(format!("request {node} {cost} -> {}", result.is_ok()));
        result
    }
    fn release(&mut self, node: &NodeId, cost: &Resources) -> Result<(), ReleaseError> {
        let result = self.inner.release(node, cost);
        self.record(format!("release {node} {cost} -> {}", result.is_ok()));
        result
    }
    fn nodes(&self) -> Vec<NodeId> {
        self.record("nodes".to_owned());
        self.inner.nodes()
    }
}

fn n(id: &str) -> NodeId {
    NodeId::new(id)
}

#[test]
fn a_quota_tracker_caps_every_node() {
    let mut tracker: Box<dyn ResourceTracker> =
        Box::new(QuotaTracker::new(Resources::new().cpu(2).memory(4000)));
    tracker
        .register(n("big"), Resources::new().cpu(16).memory(64000).gpu(4))
        .expect("register");
    tracker
        .register(n("small"), Resources::new().cpu(1).memory(8000))
        .expect("register");

    assert_eq!(
        tracker.capabilities(&n("big")),
        Some(Resources::new().cpu(2).memory(4000).gpu(0))
    );
    assert_eq!(
        tracker.capabilities(&n("small")),
        Some(Resources::new().cpu(1).memory(4000))
    );
    assert_eq!(tracker.nodes(), vec![n("big"), n("small")]);

    // The default method works through the trait object, against the capped capacity.
    assert!(tracker.resources_available(&n("big"), &Resources::new().cpu(2)));
    assert!(!tracker.resources_available(&n("big"), &Resources::new().cpu(3)));
    assert!(!tracker.resources_available(&n("big"), &Resources::new().gpu(1)));

    tracker
        .request(&n("big"), &Resources::new().cpu(1.5))
        .expect("within quota");
    assert_eq!(
        tracker.request(&n("big"), &Resources::new().cpu(1)),
        Err(RequestError::Unavailable {
            node: n("big"),
            missing: Resources::new().cpu(0.5),
        })
    );
    tracker
        .release(&n("big"), &Resources::new().cpu(1.5))
        .expect("release");
    assert_eq!(
        tracker.available(&n("big")).map(|a| a.get("cpu")),
        Some(Amount::from(2))
    );

    assert!(
        tracker
            .register(n("bad"), Resources::new().cpu(f64::NAN))
            .is_err()
    );
}

#[test]
fn capacities_from_a_custom_tracker_drive_allocation() {
    let mut tracker: Box<dyn ResourceTracker> =
        Box::new(QuotaTracker::new(Resources::new().cpu(2)));
    tracker
        .register(n("node1"), Resources::new().cpu(8))
        .expect("register");
    tracker
        .register(n("node2"), Resources::new().cpu(8))
        .expect("register");
    let capacities: Vec<(NodeId, Resources)> = tracker
        .nodes()
        .into_iter()
        .map(|node| {
            let cap = tracker.capabilities(&node).expect("registered");
            (node, cap)
        })
        .collect();

    // Under the quota, a 3-cpu function fits nowhere, though each node has 8 cpus.
    let dag = Dag::new()
        .with(Function::new("big", "c").with_cost(Resources::new().cpu(3)))
        .validate()
        .expect("valid");
    let err =
        allocate(&dag, &capacities, &AllocationStrategy::FirstAvailable).expect_err("above quota");
    assert!(err.to_string().contains("`big`"), "{err}");

    let dag = Dag::new()
        .with(Function::new("a", "c").with_cost(Resources::new().cpu(2)))
        .with(Function::new("b", "c").with_cost(Resources::new().cpu(2)))
        .validate()
        .expect("valid");
    let plan = allocate(&dag, &capacities, &AllocationStrategy::FirstAvailable).expect("plan");
    assert_eq!(plan.nodes["a"], n("node1"));
    assert_eq!(plan.nodes["b"], n("node2"));
    assert!(plan.waiting.is_empty());
    for (f, node) in &plan.nodes {
        let cost = dag
            .function(dag.index_of(f.as_str()).expect("id"))
            .cost()
            .expect("cost");
        tracker.request(node, cost).expect("the plan fits");
    }
    assert!(!tracker.resources_available(&n("node1"), &Resources::new().cpu(0.001)));
}

#[test]
fn a_logging_tracker_sees_every_call() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tracker: Box<dyn ResourceTracker> = Box::new(LoggingTracker {
        inner: Box::new(QuotaTracker::new(Resources::new().cpu(1))),
        log: Arc::clone(&log),
    });
    tracker
        .register(n("a"), Resources::new().cpu(4))
        .expect("register");
    assert!(tracker.resources_available(&n("a"), &Resources::new().cpu(1)));
    tracker
        .request(&n("a"), &Resources::new().cpu(0.25))
        .expect("fits");
    assert!(tracker.request(&n("a"), &Resources::new().cpu(1)).is_err());
    tracker
        .release(&n("a"), &Resources::new().cpu(0.25))
        .expect("release");
    assert_eq!(tracker.nodes(), vec![n("a")]);

    let log = log.lock().expect("log lock").clone();
    assert_eq!(
        log,
        vec![
            "register a {cpu: 4}",
            // The trait's default `resources_available` goes through `available`.
            "available a",
            "request a {cpu: 0.25} -> true",
            "request a {cpu: 1} -> false",
            "release a {cpu: 0.25} -> true",
            "nodes",
        ]
    );
}
