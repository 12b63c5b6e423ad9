//! Telling why a connection attempt failed: a likely cluster key mismatch, or nothing
//! at the address.

use std::io;

use libp2p::TransportError;

/// How a failed connection attempt most likely failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The TCP connection opened but the handshake did not complete (with pnet: a
    /// different cluster key).
    Handshake,
    /// Nothing answered.
    Unreachable,
    /// Anything else.
    Other,
}

pub(super) fn io_failure_kind(error: &io::Error) -> FailureKind {
    // The TCP error is nested inside the timeout and upgrade layers; its Debug form
    // names the OS error kind wherever it sits.
    let text = format!("{error:?}");
    const UNREACHABLE: [&str; 4] = [
        "ConnectionRefused",
        "HostUnreachable",
        "NetworkUnreachable",
        "AddrNotAvailable",
    ];
    if UNREACHABLE.iter().any(|kind| text.contains(kind)) {
        FailureKind::Unreachable
    } else {
        FailureKind::Handshake
    }
}

pub(super) fn dial_failure_kind(error: &libp2p::swarm::DialError) -> FailureKind {
    match error {
        libp2p::swarm::DialError::Transport(errors) if !errors.is_empty() => {
            let kinds: Vec<FailureKind> = errors
                .iter()
                .map(|(_, e)| match e {
                    TransportError::MultiaddrNotSupported(_) => FailureKind::Other,
                    TransportError::Other(io) => io_failure_kind(io),
                })
                .collect();
            if kinds.contains(&FailureKind::Handshake) {
                FailureKind::Handshake
            } else if kinds.iter().all(|k| *k == FailureKind::Unreachable) {
                FailureKind::Unreachable
            } else {
                FailureKind::Other
            }
        }
        _ => FailureKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connections_are_unreachable_and_timeouts_are_handshakes() {
        let refused = io::Error::other(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(io_failure_kind(&refused), FailureKind::Unreachable);
        let timeout = io::Error::other("Timeout");
        assert_eq!(io_failure_kind(&timeout), FailureKind::Handshake);
    }
}
