//! `handoff-node`: one Handoff cluster node as its own process, running the
//! [demo registry](handoff::demo) (every function listed there can run on it).
//!
//! ```text
//! handoff-node keygen <FILE>
//! handoff-node run (--key FILE | --insecure) [--listen MULTIADDR] [--bootstrap MULTIADDR]...
//!                  [--name NAME] [--cpu N] [--memory MB] [--gpu N] [--custom NAME=AMOUNT]...
//! ```
//!
//! `run` prints `listening <address>/p2p/<peer id>` once listening, `dialed <address>
//! <node>` or `dial failed <address>: <reason>` for each bootstrap address, and
//! `peers <n> <name>:<cpu>:<gpu>,...` each time the set of discovered peers changes. It
//! exits when its standard input closes. See [`handoff::cli`] for the details, and for
//! running a node with your own functions instead.

use std::process::ExitCode;

fn main() -> ExitCode {
    handoff::cli::main(handoff::demo::registry)
}
