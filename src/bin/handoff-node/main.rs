//! `handoff-node`: one Handoff cluster node as its own process, running the demo registry
//! ([`demo`]: every function listed there can run on it).
//!
//! ```text
//! handoff-node keygen <FILE>
//! handoff-node run (--key FILE | --key-env | --insecure) [FLAGS]   (`run --help` lists them)
//! handoff-node status (--key FILE | --key-env | --insecure) --bootstrap MULTIADDR
//! ```
//!
//! `run` prints `listening <address>/p2p/<peer id>` once listening, `dialed <address>
//! <node>` or `dial failed <address>: <reason>` for each bootstrap address, and
//! `peers <n> <name>:<cpu>:<gpu>,...` each time the set of discovered peers changes, and
//! stops on SIGTERM or SIGINT. See [`handoff::cli`] for the details, and for running a
//! node with your own functions instead.
//!
//! The demo registry is part of this program, not of the library: its `crash` function
//! aborts the process running it (for failure tests). The examples and tests that run it
//! include the same file.

mod demo;

use std::process::ExitCode;

fn main() -> ExitCode {
    handoff::cli::main(demo::registry)
}
