//! Announcements received on the gossip topic, and peers found by mDNS.

use super::*;

impl EventLoop {
    pub(super) fn on_gossip_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => self.on_announcement(propagation_source, message_id, message),
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                tracing::debug!(peer = %peer_id, "peer subscribed to the announcements");
                let _ = self.publish();
            }
            _ => {}
        }
    }

    fn on_announcement(
        &mut self,
        propagation_source: PeerId,
        message_id: MessageId,
        message: gossipsub::Message,
    ) {
        let acceptance = match announce::decode(
            &message.data,
            message.source,
            self.max_announcement_bytes,
            &self.version,
        ) {
            Ok(announcement) => match message.source {
                Some(peer) if peer != self.local && !self.refused.contains_key(&peer) => {
                    self.accept(peer, announcement)
                }
                _ => MessageAcceptance::Ignore,
            },
            Err(AnnouncementError::VersionMismatch { theirs, .. }) => {
                if let Some(peer) = message.source {
                    self.refuse(peer, theirs);
                }
                MessageAcceptance::Ignore
            }
            Err(error) => {
                tracing::warn!(
                    from = %propagation_source,
                    source = ?message.source,
                    "rejecting a gossip announcement: {error}"
                );
                if error.is_misbehaviour() {
                    MessageAcceptance::Reject
                } else {
                    MessageAcceptance::Ignore
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossip
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    fn accept(&mut self, peer: PeerId, announcement: Announcement) -> MessageAcceptance {
        let addresses: Vec<Multiaddr> = announcement
            .addresses
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let applied = self.peers.apply(announcement.clone(), Instant::now());
        if applied == Applied::Stale {
            return MessageAcceptance::Ignore;
        }
        for address in &addresses {
            self.swarm.add_peer_address(peer, address.clone());
        }
        if !self.swarm.is_connected(&peer) && !addresses.is_empty() {
            // Connect directly, so requests and gossip do not depend on a relay.
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addresses)
                .build();
            let id = opts.connection_id();
            if self.swarm.dial(opts).is_ok() {
                self.dials.insert(
                    id,
                    PendingDial {
                        address: None,
                        reply: None,
                    },
                );
            }
        }
        match applied {
            Applied::New => {
                tracing::info!(node = %announcement.node, name = %announcement.name, "peer joined");
                self.emit(NetEvent::PeerAnnounced(announcement));
            }
            Applied::Changed => self.emit(NetEvent::PeerAnnounced(announcement)),
            Applied::Refreshed | Applied::Stale => {}
        }
        MessageAcceptance::Accept
    }

    #[cfg(feature = "mdns")]
    pub(super) fn on_mdns_event(&mut self, event: libp2p::mdns::Event) {
        if let libp2p::mdns::Event::Discovered(found) = event {
            for (peer, address) in found {
                if peer == self.local || self.refused.contains_key(&peer) {
                    continue;
                }
                self.swarm.add_peer_address(peer, address.clone());
                if !self.swarm.is_connected(&peer) {
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .addresses(vec![address])
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, "mdns dial not started: {e}");
                    }
                }
            }
        }
    }

    #[cfg(not(feature = "mdns"))]
    pub(super) fn on_mdns_event(&mut self, event: std::convert::Infallible) {
        match event {}
    }
}
