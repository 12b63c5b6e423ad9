//! Requests from peers, the per-peer cap on those waiting for an answer, and checking
//! peers' protocol versions.

use super::*;

impl EventLoop {
    pub(super) fn on_rpc_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_inbound(peer, request_id, request, channel),
                Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(pending) = self.finish_request(request_id) {
                        let result = match response {
                            Response::Error(error) => Err(RequestError::Remote {
                                node: pending.node,
                                error,
                            }),
                            response => Ok(response),
                        };
                        let _ = pending.reply.send(result);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                let Some(pending) = self.finish_request(request_id) else {
                    return;
                };
                let node = pending.node;
                let request = RequestId::new(request_id);
                tracing::debug!(%node, %request, "request failed: {error}");
                let error = match error {
                    OutboundFailure::DialFailure => RequestError::DialFailure { node, request },
                    OutboundFailure::Timeout => RequestError::Timeout { node, request },
                    OutboundFailure::ConnectionClosed => {
                        RequestError::ConnectionClosed { node, request }
                    }
                    OutboundFailure::UnsupportedProtocols => {
                        RequestError::UnsupportedProtocol { node, request }
                    }
                    OutboundFailure::Io(source) => RequestError::Io {
                        node,
                        request,
                        source,
                    },
                };
                let _ = pending.reply.send(Err(error));
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.inbound_done(request_id);
                match &error {
                    InboundFailure::Io(e) if FrameError::of(e).is_some() => {
                        let refused = self.refused_frames.entry(peer).or_default();
                        *refused += 1;
                        // A peer sending garbage costs what it sends (the codec allocates
                        // with the bytes received); its log lines are rationed.
                        if refused.is_power_of_two() {
                            tracing::warn!(
                                peer = %peer,
                                refused = *refused,
                                "refused an inbound request: {e}"
                            );
                        } else {
                            tracing::debug!(peer = %peer, "refused an inbound request: {e}");
                        }
                    }
                    _ => tracing::debug!(peer = %peer, "inbound request failed: {error}"),
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.inbound_done(request_id)
            }
        }
    }

    fn on_inbound(
        &mut self,
        peer: PeerId,
        id: InboundRequestId,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) {
        if let Request::Hello { version, name } = request {
            let response = if version == self.version {
                tracing::debug!(peer = %peer, %name, "hello");
                self.verify(peer);
                Response::Hello {
                    version: self.version.clone(),
                    name: self.name.clone(),
                }
            } else {
                let theirs = refused::shorten_version(version);
                self.refuse(peer, theirs.clone());
                Response::Error(RpcError::VersionMismatch {
                    ours: self.version.clone(),
                    theirs,
                })
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
            return;
        }
        if let Some(theirs) = self.refused.get(&peer).cloned() {
            self.refuse_version(channel, theirs);
            return;
        }
        let verified = self.verified.contains(&peer);
        if !verified {
            let held = self.held.get(&peer).map_or(0, Vec::len);
            let (held, limit) = if held >= MAX_HELD_PER_PEER {
                (held, MAX_HELD_PER_PEER)
            } else {
                (self.held_total, MAX_HELD)
            };
            if held >= limit {
                tracing::debug!(
                    peer = %peer,
                    held,
                    limit,
                    "answering an inbound {} request from an unverified peer with Busy",
                    request.kind()
                );
                self.busy(channel, held, limit);
                return;
            }
        }
        let pending = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        if pending >= self.max_inbound_per_peer {
            self.throttle(peer, pending, request.kind(), channel);
            return;
        }
        self.inbound_per_peer.insert(peer, pending + 1);
        self.inbound.insert(id, peer);
        if verified {
            self.forward(peer, request, channel);
        } else {
            self.held.entry(peer).or_default().push(Held {
                id,
                request,
                channel,
            });
            self.held_total += 1;
        }
    }

    /// Removes and returns the requests held for `peer`.
    pub(super) fn take_held(&mut self, peer: PeerId) -> Vec<Held> {
        let held = self.held.remove(&peer).unwrap_or_default();
        self.held_total -= held.len();
        held
    }

    /// Drops the request `id` of `peer` if it is held (it failed: timed out, or its
    /// stream closed).
    fn drop_held(&mut self, peer: PeerId, id: InboundRequestId) {
        let Some(held) = self.held.get_mut(&peer) else {
            return;
        };
        if let Some(position) = held.iter().position(|h| h.id == id) {
            held.remove(position);
            self.held_total -= 1;
            if held.is_empty() {
                self.held.remove(&peer);
            }
        }
    }

    /// Answers Busy to a request from a peer at its inbound cap.
    fn throttle(
        &mut self,
        peer: PeerId,
        pending: usize,
        kind: crate::protocol::RequestKind,
        channel: request_response::ResponseChannel<Response>,
    ) {
        let limit = self.max_inbound_per_peer;
        if self.throttled.insert(peer) {
            tracing::warn!(
                peer = %peer,
                pending,
                limit,
                "peer at its cap of inbound requests: answering Busy until some are answered"
            );
        } else {
            tracing::debug!(peer = %peer, "answering an inbound {kind} request with Busy");
        }
        self.busy(channel, pending, limit);
    }

    /// Answers Busy, with `pending` requests waiting against `limit`.
    fn busy(
        &mut self,
        channel: request_response::ResponseChannel<Response>,
        pending: usize,
        limit: usize,
    ) {
        let response = Response::Error(RpcError::Busy {
            pending: u32::try_from(pending).unwrap_or(u32::MAX),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        });
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// An inbound request was answered or failed: it no longer counts against its peer,
    /// and is no longer held if it was.
    fn inbound_done(&mut self, id: InboundRequestId) {
        let Some(peer) = self.inbound.remove(&id) else {
            return;
        };
        self.drop_held(peer, id);
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
                self.throttled.remove(&peer);
            }
        }
    }

    /// Forgets the inbound requests of a peer whose last connection closed (libp2p also
    /// reports each as failed; this keeps the counts right whatever the order).
    pub(super) fn forget_inbound(&mut self, peer: PeerId) {
        if self.inbound_per_peer.remove(&peer).is_some() {
            self.inbound.retain(|_, p| *p != peer);
        }
        self.throttled.remove(&peer);
        self.refused_frames.remove(&peer);
    }

    /// Answers a request from a peer of another protocol version with the mismatch.
    fn refuse_version(
        &mut self,
        channel: request_response::ResponseChannel<Response>,
        theirs: String,
    ) {
        let response = Response::Error(RpcError::VersionMismatch {
            ours: self.version.clone(),
            theirs,
        });
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// Hands an inbound request to the application, or answers Busy when it is behind.
    fn forward(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: request_response::ResponseChannel<Response>,
    ) {
        let node = node_id_of(&peer);
        let kind = request.kind();
        let event = NetEvent::InboundRequest {
            node: node.clone(),
            request,
            channel: ResponseChannel {
                node,
                kind,
                inner: channel,
            },
        };
        let (channel, error) = match self.events.try_send(event) {
            Ok(()) => return,
            Err(TrySendError::Full(NetEvent::InboundRequest { channel, .. })) => {
                tracing::warn!(
                    capacity = self.event_capacity,
                    "event channel full: answering an inbound {kind} request with Busy"
                );
                let limit = self.event_capacity as u32;
                (
                    channel,
                    RpcError::Busy {
                        pending: limit,
                        limit,
                    },
                )
            }
            // The node's application side stopped (its `ClusterNode` was dropped) while
            // the swarm still runs: it is going away.
            Err(TrySendError::Closed(NetEvent::InboundRequest { channel, .. })) => {
                (channel, RpcError::ShuttingDown)
            }
            Err(_) => return,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel.inner, Response::Error(error));
    }

    fn verify(&mut self, peer: PeerId) {
        self.refused.remove(&peer);
        self.verified.insert(peer);
        for held in self.take_held(peer) {
            self.forward(peer, held.request, held.channel);
        }
    }

    /// Refuses a peer: its requests are answered with a version mismatch, its
    /// announcements ignored, and it is disconnected after [`REFUSAL_GRACE`] (time for both
    /// sides to exchange identify info, and so both to log the refusal). Its version is
    /// kept, logged and reported shortened ([`refused::shorten_version`]).
    pub(super) fn refuse(&mut self, peer: PeerId, theirs: String) {
        let theirs = refused::shorten_version(theirs);
        self.verified.remove(&peer);
        let node = node_id_of(&peer);
        if self.refused.get(&peer) != Some(&theirs) {
            let reason = Refusal::VersionMismatch {
                ours: self.version.clone(),
                theirs: theirs.clone(),
            };
            tracing::warn!(%node, "refusing peer: {reason}; disconnecting");
            self.refused.insert(peer, theirs.clone());
            self.emit(NetEvent::PeerRefused {
                node: node.clone(),
                reason,
            });
        }
        for held in self.take_held(peer) {
            self.refuse_version(held.channel, theirs.clone());
        }
        if self.peers.remove(&node) {
            self.emit(NetEvent::PeerGone {
                node,
                reason: GoneReason::Refused,
            });
        }
        if self.swarm.is_connected(&peer) {
            self.disconnects.push(Box::pin(async move {
                tokio::time::sleep(REFUSAL_GRACE).await;
                peer
            }));
        }
    }

    pub(super) fn on_identify_event(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received { peer_id, info, .. } => {
                if info.protocol_version == self.version {
                    for address in info.listen_addrs {
                        self.swarm.add_peer_address(peer_id, address);
                    }
                    self.verify(peer_id);
                } else {
                    self.refuse(peer_id, info.protocol_version);
                }
            }
            identify::Event::Error { peer_id, error, .. } => {
                tracing::debug!(peer = %peer_id, "identify failed: {error}");
            }
            identify::Event::Sent { .. } | identify::Event::Pushed { .. } => {}
        }
    }
}
