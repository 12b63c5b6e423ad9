//! The actix runtime of one Handoff node.
