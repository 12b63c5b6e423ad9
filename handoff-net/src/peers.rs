//! The table of live peers and their latest announcements (pure: no I/O, the clock is
//! passed in).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use handoff_core::NodeId;

use crate::announce::Announcement;

/// What applying an announcement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The node was not in the table.
    New,
    /// The node was known; something other than the sequence number changed.
    Changed,
    /// The node was known; only the sequence number changed.
    Refreshed,
    /// The sequence number is not above the last accepted one: ignored.
    Stale,
}

#[derive(Debug)]
struct Entry {
    announcement: Announcement,
    seen: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: HashMap<NodeId, Entry>,
    /// The last sequence number of peers that left: a late copy of an announcement they
    /// made before leaving (gossip relays them) must not bring them back; a node that
    /// really comes back announces with a higher number (they start at the clock).
    departed: HashMap<NodeId, u64>,
}

/// The most departed peers remembered.
const MAX_DEPARTED: usize = 4096;

impl PeerTable {
    pub(crate) fn apply(&mut self, announcement: Announcement, now: Instant) -> Applied {
        if let Some(&last) = self.departed.get(&announcement.node) {
            if announcement.seq <= last {
                return Applied::Stale;
            }
            self.departed.remove(&announcement.node);
        }
        match self.peers.get_mut(&announcement.node) {
            None => {
                self.peers.insert(
                    announcement.node.clone(),
                    Entry {
                        announcement,
                        seen: now,
                    },
                );
                Applied::New
            }
            Some(entry) if announcement.seq <= entry.announcement.seq => Applied::Stale,
            Some(entry) => {
                let old = &entry.announcement;
                let changed = old.name != announcement.name
                    || old.state != announcement.state
                    || old.addresses != announcement.addresses
                    || old.version != announcement.version;
                entry.announcement = announcement;
                entry.seen = now;
                if changed {
                    Applied::Changed
                } else {
                    Applied::Refreshed
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, node: &NodeId) -> bool {
        match self.peers.remove(node) {
            Some(entry) => {
                self.remember_departure(node.clone(), entry.announcement.seq);
                true
            }
            None => false,
        }
    }

    fn remember_departure(&mut self, node: NodeId, seq: u64) {
        if self.departed.len() >= MAX_DEPARTED {
            // Forget the oldest departure (the smallest sequence number).
            if let Some(oldest) = self
                .departed
                .iter()
                .min_by_key(|(_, seq)| **seq)
                .map(|(n, _)| n.clone())
            {
                self.departed.remove(&oldest);
            }
        }
        self.departed.insert(node, seq);
    }

    /// Removes and returns the nodes not heard from within `ttl`.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<NodeId> {
        let expired: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.seen) > ttl)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &expired {
            self.remove(node);
        }
        expired
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, node: &NodeId) -> bool {
        self.peers.contains_key(node)
    }

    /// The latest announcements, ordered by node id.
    pub(crate) fn list(&self) -> Vec<Announcement> {
        let mut out: Vec<Announcement> = self
            .peers
            .values()
            .map(|e| e.announcement.clone())
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}

#[cfg(test)]
mod tests {
    use handoff_core::Resources;

    use super::*;
    use crate::NodeState;

    fn announcement(node: &str, seq: u64, cpu: u32) -> Announcement {
        Announcement {
            node: NodeId::new(node),
            name: node.to_owned(),
            version: "v".into(),
            seq,
            addresses: Vec::new(),
            state: NodeState::new(Resources::new().cpu(cpu)),
        }
    }

    #[test]
    fn announcements_are_ordered_by_sequence() {
        let mut table = PeerTable::default();
        let t0 = Instant::now();
        assert_eq!(table.apply(announcement("a", 5, 1), t0), Applied::New);
        assert_eq!(table.apply(announcement("a", 5, 2), t0), Applied::Stale);
        assert_eq!(table.apply(announcement("a", 4, 2), t0), Applied::Stale);
        assert_eq!(table.apply(announcement("a", 6, 1), t0), Applied::Refreshed);
        assert_eq!(table.apply(announcement("a", 7, 2), t0), Applied::Changed);
        assert_eq!(table.list()[0].state.capabilities, Resources::new().cpu(2));
    }

    #[test]
    fn silent_peers_expire() {
        let mut table = PeerTable::default();
        let t0 = Instant::now();
        table.apply(announcement("a", 1, 1), t0);
        table.apply(announcement("b", 1, 1), t0 + Duration::from_secs(10));
        let expired = table.expire(t0 + Duration::from_secs(16), Duration::from_secs(15));
        assert_eq!(expired, vec![NodeId::new("a")]);
        assert!(table.contains(&NodeId::new("b")));
        assert!(table.remove(&NodeId::new("b")));
        // A late copy of what they announced before leaving does not bring them back; a
        // newer announcement does.
        assert_eq!(table.apply(announcement("a", 1, 1), t0), Applied::Stale);
        assert_eq!(table.apply(announcement("b", 1, 1), t0), Applied::Stale);
        assert_eq!(table.apply(announcement("a", 2, 1), t0), Applied::New);
        assert_eq!(table.list().len(), 1);
    }
}
