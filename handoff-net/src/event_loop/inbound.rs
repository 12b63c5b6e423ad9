//! Requests from peers, and checking their protocol versions.

use super::*;

impl EventLoop {
    pub(super) fn on_rpc_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request {
                    request, channel, ..
                } => self.on_inbound(peer, request, channel),
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
            request_response::Event::InboundFailure { peer, error, .. } => match &error {
                InboundFailure::Io(e) if FrameError::of(e).is_some() => {
                    tracing::warn!(peer = %peer, "refused an inbound request: {e}");
                }
                _ => tracing::debug!(peer = %peer, "inbound request failed: {error}"),
            },
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(
        &mut self,
        peer: PeerId,
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
                self.refuse(peer, version.clone());
                Response::Error(RpcError::VersionMismatch {
                    ours: self.version.clone(),
                    theirs: version,
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
        } else if self.verified.contains(&peer) {
            self.forward(peer, request, channel);
        } else {
            let held = self.held.entry(peer).or_default();
            if held.len() >= self.max_in_flight_per_peer {
                let limit = self.max_in_flight_per_peer as u32;
                let response = Response::Error(RpcError::Busy {
                    pending: limit,
                    limit,
                });
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            } else {
                held.push((request, channel));
            }
        }
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
            Err(TrySendError::Closed(NetEvent::InboundRequest { channel, .. })) => {
                (channel, RpcError::Unsupported { request: kind })
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
        for (request, channel) in self.held.remove(&peer).unwrap_or_default() {
            self.forward(peer, request, channel);
        }
    }

    /// Refuses a peer: its requests are answered with a version mismatch, its
    /// announcements ignored, and it is disconnected after [`REFUSAL_GRACE`] (time for both
    /// sides to exchange identify info, and so both to log the refusal).
    pub(super) fn refuse(&mut self, peer: PeerId, theirs: String) {
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
        for (_, channel) in self.held.remove(&peer).unwrap_or_default() {
            self.refuse_version(channel, theirs.clone());
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
