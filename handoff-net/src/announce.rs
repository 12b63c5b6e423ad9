//! Capability announcements: what each node tells the cluster about itself on the gossip
//! topic, and how a received one is checked.

use handoff_core::{CodeName, NodeId, Resources};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::ids::node_id_of;

/// What a node offers: the part of its [`Announcement`] that the application sets
/// (through `Config::builder(..).state(..)` and `Client::announce`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeState {
    /// Its total capabilities.
    pub capabilities: Resources,
    /// What is free now.
    pub free: Resources,
    /// The code names in its registry: the functions it can run.
    pub code_names: Vec<CodeName>,
    /// It is draining (see `ClusterNode::drain`): it takes no new work, finishes what
    /// runs and serves the values it holds until it leaves. Peers stop placing work there
    /// without counting it lost. (Absent from older announcements, and written only when
    /// set, so an announcement of a node that is not draining reads as before.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// The parameter and result types of its typed codes (`Code::signature`), by name: a
    /// function built from a typed handle is sent only where its code has its types.
    /// (Absent from older announcements, and written only when there are some.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<(CodeName, String)>,
}

impl NodeState {
    /// A node with these capabilities, all free, and no code.
    pub fn new(capabilities: Resources) -> Self {
        NodeState {
            free: capabilities.clone(),
            capabilities,
            code_names: Vec::new(),
            draining: false,
            signatures: Vec::new(),
        }
    }

    /// Sets what is free.
    pub fn with_free(mut self, free: Resources) -> Self {
        self.free = free;
        self
    }

    /// Sets the code names.
    pub fn with_code_names<I, C>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<CodeName>,
    {
        self.code_names = names.into_iter().map(Into::into).collect();
        self
    }
}

/// What a node announces on the gossip topic: on start (as soon as a peer subscribes),
/// on every `Client::announce`, and periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The node (its `PeerId` in base58; checked against the gossip message's signer).
    pub node: NodeId,
    /// Its human-readable name.
    pub name: String,
    /// Its [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: String,
    /// Increases with each announcement of the node; a receiver ignores an announcement
    /// whose number is not above the last one it accepted. It starts from the wall clock
    /// (microseconds since the Unix epoch), so a restarted node that kept its identity is
    /// not ignored.
    pub seq: u64,
    /// The addresses it listens on (multiaddr text), so peers can reach it directly.
    pub addresses: Vec<String>,
    /// What it offers.
    pub state: NodeState,
}

/// Why a received announcement was not accepted ([`Announcement::decode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// Larger than the limit (checked before decoding).
    #[error("announcement of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid announcement.
    #[error("malformed announcement: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The gossip message carries no signer (impossible with strict validation).
    #[error("unsigned announcement")]
    Unsigned,
    /// The node id inside does not match the signer of the message.
    #[error("announcement for node {claimed} signed by {signer}")]
    ForeignNode {
        /// The node the announcement names.
        claimed: NodeId,
        /// The node that signed it.
        signer: NodeId,
    },
    /// The node speaks another protocol version.
    #[error("protocol version mismatch: ours `{ours}`, theirs `{theirs}`")]
    VersionMismatch {
        /// Our version.
        ours: String,
        /// The sender's.
        theirs: String,
    },
}

impl AnnouncementError {
    /// Whether the sender misbehaved (reject: penalise and do not forward) rather than
    /// merely being incompatible (ignore).
    pub(crate) fn is_misbehaviour(&self) -> bool {
        !matches!(self, AnnouncementError::VersionMismatch { .. })
    }
}

/// The gossip topic of a cluster's announcements.
pub(crate) fn topic_name(cluster: &str) -> String {
    format!("handoff/{cluster}/announce/1")
}

pub(crate) fn encode(announcement: &Announcement) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(announcement)
}

impl Announcement {
    /// Decodes and checks the payload of a gossip message, as the event loop does with
    /// every announcement it receives: at most `max_bytes` (checked before decoding), a
    /// well-formed MessagePack announcement, naming its `signer`, of protocol `version`,
    /// without negative amounts. Never panics, whatever the bytes.
    pub fn decode(
        data: &[u8],
        signer: Option<PeerId>,
        max_bytes: usize,
        version: &str,
    ) -> Result<Announcement, AnnouncementError> {
        decode(data, signer, max_bytes, version)
    }
}

/// Decodes and checks a gossip message's payload.
pub(crate) fn decode(
    data: &[u8],
    source: Option<PeerId>,
    max: usize,
    version: &str,
) -> Result<Announcement, AnnouncementError> {
    if data.len() > max {
        return Err(AnnouncementError::TooLarge {
            len: data.len(),
            max,
        });
    }
    let signer = source.ok_or(AnnouncementError::Unsigned)?;
    let announcement: Announcement =
        crate::codec::decode(data).map_err(|e| AnnouncementError::Malformed {
            reason: e.to_string(),
        })?;
    let signer = node_id_of(&signer);
    if announcement.node != signer {
        return Err(AnnouncementError::ForeignNode {
            claimed: announcement.node,
            signer,
        });
    }
    if announcement.version != version {
        return Err(AnnouncementError::VersionMismatch {
            ours: version.to_owned(),
            theirs: announcement.version,
        });
    }
    if let Some((name, amount)) = announcement
        .state
        .capabilities
        .first_invalid()
        .or_else(|| announcement.state.free.first_invalid())
    {
        return Err(AnnouncementError::Malformed {
            reason: format!("negative amount {amount} of `{name}`"),
        });
    }
    Ok(announcement)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(peer: &PeerId) -> Announcement {
        Announcement {
            node: node_id_of(peer),
            name: "worker".into(),
            version: "v1".into(),
            seq: 1,
            addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
            state: NodeState::new(Resources::new().cpu(4)).with_code_names(["double"]),
        }
    }

    #[test]
    fn valid_announcements_decode() {
        let peer = PeerId::random();
        let bytes = encode(&sample(&peer)).expect("encode");
        assert_eq!(
            decode(&bytes, Some(peer), 1024, "v1").expect("valid"),
            sample(&peer)
        );
    }

    /// A draining node's announcement says so; a node that is not draining writes no
    /// `draining` field at all (an older node's announcement reads as not draining).
    #[test]
    fn the_draining_state_travels_and_is_absent_otherwise() {
        let peer = PeerId::random();
        let mut draining = sample(&peer);
        draining.state.draining = true;
        let bytes = encode(&draining).expect("encode");
        let read = decode(&bytes, Some(peer), 1024, "v1").expect("valid");
        assert!(read.state.draining);
        let plain = encode(&sample(&peer)).expect("encode");
        assert!(!String::from_utf8_lossy(&plain).contains("draining"));
        assert!(String::from_utf8_lossy(&bytes).contains("draining"));
    }

    #[test]
    fn invalid_announcements_are_typed_errors() {
        let peer = PeerId::random();
        let bytes = encode(&sample(&peer)).expect("encode");
        assert!(matches!(
            decode(&bytes, Some(peer), 8, "v1"),
            Err(AnnouncementError::TooLarge { max: 8, .. })
        ));
        assert_eq!(
            decode(&bytes, None, 1024, "v1"),
            Err(AnnouncementError::Unsigned)
        );
        let other = PeerId::random();
        let err = decode(&bytes, Some(other), 1024, "v1").expect_err("foreign");
        assert!(matches!(err, AnnouncementError::ForeignNode { .. }));
        assert!(err.is_misbehaviour());
        let err = decode(&bytes, Some(peer), 1024, "v2").expect_err("version");
        assert!(matches!(err, AnnouncementError::VersionMismatch { .. }));
        assert!(!err.is_misbehaviour());
        assert!(matches!(
            decode(b"\x93garbage", Some(peer), 1024, "v1"),
            Err(AnnouncementError::Malformed { .. })
        ));
        let mut negative = sample(&peer);
        negative.state.free = Resources::new().cpu(-1);
        let bytes = encode(&negative).expect("encode");
        assert!(matches!(
            decode(&bytes, Some(peer), 1024, "v1"),
            Err(AnnouncementError::Malformed { .. })
        ));
    }

    #[test]
    fn deep_nesting_and_inflated_lengths_are_malformed() {
        let peer = PeerId::random();
        let valid = encode(&sample(&peer)).expect("encode");
        // One more field, nested 10 000 arrays deep (the top-level map has 6 fields).
        let mut deep = valid.clone();
        assert_eq!(deep[0], 0x86);
        deep[0] = 0x87;
        deep.extend_from_slice(&[0xa1, b'x']);
        deep.extend(std::iter::repeat_n(0x91, 10_000));
        deep.push(0xc0);
        assert!(matches!(
            decode(&deep, Some(peer), 1 << 20, "v1"),
            Err(AnnouncementError::Malformed { .. })
        ));
        // The code names cut off by an array header claiming 65 535 of them.
        let at = valid
            .windows(10)
            .position(|w| w == b"code_names")
            .expect("field")
            + 10;
        let mut inflated = valid[..at].to_vec();
        inflated.extend_from_slice(&[0xdc, 0xff, 0xff]);
        assert!(matches!(
            decode(&inflated, Some(peer), 1 << 20, "v1"),
            Err(AnnouncementError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, Some(PeerId::random()), 1024, "v1");
        }

        /// A valid announcement with bytes flipped, inserted or removed: never a panic,
        /// and what is still accepted is an announcement that survives a round trip.
        #[test]
        fn mutated_announcements_never_panic(
            edits in proptest::collection::vec((0_u8..3, any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let peer = PeerId::random();
            let mut bytes = encode(&sample(&peer)).expect("encode");
            for (op, at, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] ^= byte.max(1),
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            if let Ok(announcement) = decode(&bytes, Some(peer), 1 << 20, "v1") {
                let again = encode(&announcement).expect("encode");
                prop_assert_eq!(decode(&again, Some(peer), 1 << 20, "v1"), Ok(announcement));
            }
        }
    }
}
