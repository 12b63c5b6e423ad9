//! The peers refused for their protocol version, remembered across connections within
//! fixed bounds: a keyed peer can make new identities at will, and each refusal would
//! otherwise keep its (up to a request frame long) version string for good.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;

/// The most refused peers remembered ([`Refused`]). Past it, the one refused longest ago
/// is forgotten: if it comes back it is refused again (its identify or Hello says its
/// version), it is just not refused ahead of time. With versions cut to
/// [`MAX_REFUSED_VERSION_BYTES`], the table stays within a few hundred kilobytes.
pub(super) const MAX_REFUSED: usize = 1024;

/// The most bytes of a refused peer's version kept, logged, reported in
/// [`NetEvent::PeerRefused`](crate::NetEvent::PeerRefused) and echoed in
/// [`RpcError::VersionMismatch`](crate::RpcError::VersionMismatch); a longer one is cut at
/// a character boundary and ends with `…`.
pub(super) const MAX_REFUSED_VERSION_BYTES: usize = 64;

/// A version as kept for a refused peer: at most [`MAX_REFUSED_VERSION_BYTES`] of it.
pub(super) fn shorten_version(mut version: String) -> String {
    if version.len() > MAX_REFUSED_VERSION_BYTES {
        let mut end = MAX_REFUSED_VERSION_BYTES;
        while !version.is_char_boundary(end) {
            end -= 1;
        }
        version.truncate(end);
        version.push('…');
        version.shrink_to_fit();
    }
    version
}

/// Refused peers and their (shortened) versions: at most [`MAX_REFUSED`], the oldest
/// refusal forgotten first.
#[derive(Debug, Default)]
pub(super) struct Refused {
    versions: HashMap<PeerId, String>,
    /// The peers of `versions`, oldest refusal first.
    order: VecDeque<PeerId>,
}

impl Refused {
    /// The version `peer` was refused for, if it is remembered.
    pub(super) fn get(&self, peer: &PeerId) -> Option<&String> {
        self.versions.get(peer)
    }

    /// True when `peer` is remembered as refused.
    pub(super) fn contains_key(&self, peer: &PeerId) -> bool {
        self.versions.contains_key(peer)
    }

    /// Remembers `peer` as refused for `version` (shortened), forgetting the oldest
    /// refusal when the table is full.
    pub(super) fn insert(&mut self, peer: PeerId, version: String) {
        let version = shorten_version(version);
        if let Some(known) = self.versions.get_mut(&peer) {
            *known = version;
            return;
        }
        if self.versions.len() >= MAX_REFUSED
            && let Some(oldest) = self.order.pop_front()
        {
            self.versions.remove(&oldest);
        }
        self.versions.insert(peer, version);
        self.order.push_back(peer);
    }

    /// Forgets `peer` (it now speaks our version).
    pub(super) fn remove(&mut self, peer: &PeerId) {
        if self.versions.remove(peer).is_some() {
            self.order.retain(|p| p != peer);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.versions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_the_latest_refusals_within_its_bound() {
        let mut refused = Refused::default();
        let peers: Vec<PeerId> = (0..MAX_REFUSED + 10).map(|_| PeerId::random()).collect();
        for peer in &peers {
            refused.insert(*peer, "v".repeat(1 << 20));
        }
        assert_eq!(refused.len(), MAX_REFUSED);
        assert_eq!(refused.order.len(), MAX_REFUSED);
        assert!(!refused.contains_key(&peers[0]), "the oldest is forgotten");
        let last = refused
            .get(&peers[MAX_REFUSED + 9])
            .expect("the newest is kept");
        assert!(last.len() <= MAX_REFUSED_VERSION_BYTES + '…'.len_utf8());
        assert!(
            refused
                .versions
                .values()
                .all(|v| v.capacity() <= MAX_REFUSED_VERSION_BYTES + '…'.len_utf8()),
            "no long buffer is kept behind a short version"
        );
        refused.remove(&peers[MAX_REFUSED + 9]);
        assert_eq!(refused.order.len(), MAX_REFUSED - 1);
    }

    #[test]
    fn long_versions_are_cut_at_a_character_boundary() {
        assert_eq!(shorten_version("handoff/3".into()), "handoff/3");
        let cut = shorten_version("é".repeat(100));
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_REFUSED_VERSION_BYTES + '…'.len_utf8());
    }
}
