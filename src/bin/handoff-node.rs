//! `handoff-node`: one Handoff cluster node as its own process.
//!
//! ```text
//! handoff-node keygen <FILE>
//! handoff-node run (--key FILE | --insecure) [--listen MULTIADDR] [--bootstrap MULTIADDR]...
//!                  [--name NAME] [--cpu N] [--memory MB] [--gpu N]
//! ```
//!
//! `run` prints `listening <address>/p2p/<peer id>` once listening, `dialed <address>
//! <node>` or `dial failed <address>: <reason>` for each bootstrap address, and
//! `peers <n> <name>:<cpu>:<gpu>,...` each time the set of discovered peers changes. It
//! exits when its standard input closes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use handoff::{
    ClusterKey, ClusterKeyError, ClusterNode, ClusterStartError, DiscoveredNode, Keypair,
    Multiaddr, NetConfig, NetConfigError, NodeConfig, RegisterError, Registry, Resources, Security,
};

const USAGE: &str = "usage:
  handoff-node keygen <FILE>
  handoff-node run (--key FILE | --insecure) [--listen MULTIADDR] [--bootstrap MULTIADDR]...
                   [--name NAME] [--cpu N] [--memory MB] [--gpu N]";

const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    Keygen { file: PathBuf },
    Run(RunArgs),
    Help,
}

#[derive(Debug)]
enum KeyChoice {
    File(PathBuf),
    Insecure,
}

#[derive(Debug)]
struct RunArgs {
    key: KeyChoice,
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
    name: Option<String>,
    cpu: u32,
    memory: u32,
    gpu: u32,
}

/// Why the command line was not understood.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    #[error("no command given")]
    MissingCommand,
    #[error("unknown command `{command}`")]
    UnknownCommand { command: String },
    #[error("`{command}` needs {what}")]
    MissingArgument {
        command: &'static str,
        what: &'static str,
    },
    #[error("unexpected argument `{argument}`")]
    UnexpectedArgument { argument: String },
    #[error("`{flag}` needs a value")]
    MissingValue { flag: String },
    #[error("invalid value `{value}` for `{flag}`: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "choose the security: `--key FILE` (a key made by `handoff-node keygen FILE`) or \
         `--insecure` (any node that reaches this one can connect)"
    )]
    MissingSecurity,
    #[error("`--key` and `--insecure` exclude each other")]
    ConflictingSecurity,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{path} already exists; not overwriting a cluster key", path = path.display())]
    KeyFileExists { path: PathBuf },
    #[error(transparent)]
    Key {
        #[from]
        source: ClusterKeyError,
    },
    #[error("built-in registry: {source}")]
    Registry {
        #[from]
        source: RegisterError,
    },
    #[error("network configuration: {source}")]
    Config {
        #[from]
        source: NetConfigError,
    },
    #[error(transparent)]
    Start {
        #[from]
        source: ClusterStartError,
    },
    #[error("the network layer stopped: {source}")]
    Net {
        #[from]
        source: handoff::NetClientError,
    },
    #[error("writing to stdout: {source}")]
    Stdout {
        #[from]
        source: std::io::Error,
    },
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
    let mut args = args.into_iter();
    let command = args.next().ok_or(ArgsError::MissingCommand)?;
    match command.as_str() {
        "keygen" => {
            let file = args.next().ok_or(ArgsError::MissingArgument {
                command: "keygen",
                what: "the file to write",
            })?;
            if let Some(argument) = args.next() {
                return Err(ArgsError::UnexpectedArgument { argument });
            }
            Ok(Command::Keygen { file: file.into() })
        }
        "run" => parse_run(args).map(Command::Run),
        "-h" | "--help" | "help" => Ok(Command::Help),
        _ => Err(ArgsError::UnknownCommand { command }),
    }
}

fn parse_run(mut args: impl Iterator<Item = String>) -> Result<RunArgs, ArgsError> {
    fn value(flag: &str, args: &mut impl Iterator<Item = String>) -> Result<String, ArgsError> {
        args.next().ok_or_else(|| ArgsError::MissingValue {
            flag: flag.to_owned(),
        })
    }
    fn parsed<T: std::str::FromStr>(flag: &str, value: String) -> Result<T, ArgsError>
    where
        T::Err: std::fmt::Display,
    {
        value.parse().map_err(|e: T::Err| ArgsError::InvalidValue {
            flag: flag.to_owned(),
            reason: e.to_string(),
            value,
        })
    }
    let (mut key, mut insecure) = (None, false);
    let mut listen = None;
    let mut bootstrap = Vec::new();
    let mut name = None;
    let mut cpu = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let (mut memory, mut gpu) = (0, 0);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--key" => key = Some(PathBuf::from(value(&flag, &mut args)?)),
            "--insecure" => insecure = true,
            "--listen" => listen = Some(parsed(&flag, value(&flag, &mut args)?)?),
            "--bootstrap" => bootstrap.push(parsed(&flag, value(&flag, &mut args)?)?),
            "--name" => name = Some(value(&flag, &mut args)?),
            "--cpu" => cpu = parsed(&flag, value(&flag, &mut args)?)?,
            "--memory" => memory = parsed(&flag, value(&flag, &mut args)?)?,
            "--gpu" => gpu = parsed(&flag, value(&flag, &mut args)?)?,
            _ => return Err(ArgsError::UnexpectedArgument { argument: flag }),
        }
    }
    let key = match (key, insecure) {
        (Some(path), false) => KeyChoice::File(path),
        (None, true) => KeyChoice::Insecure,
        (Some(_), true) => return Err(ArgsError::ConflictingSecurity),
        (None, false) => return Err(ArgsError::MissingSecurity),
    };
    let listen = match listen {
        Some(listen) => listen,
        None => parsed("--listen", DEFAULT_LISTEN.to_owned())?,
    };
    Ok(RunArgs {
        key,
        listen,
        bootstrap,
        name,
        cpu,
        memory,
        gpu,
    })
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let command = match parse(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("handoff-node: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Keygen { file } => keygen(file),
        Command::Run(args) => actix::System::new().block_on(run(args)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handoff-node: {error}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(file: PathBuf) -> Result<(), RunError> {
    if file.exists() {
        return Err(RunError::KeyFileExists { path: file });
    }
    let key = ClusterKey::generate();
    key.to_file(&file)?;
    println!(
        "wrote a new cluster key to {} (fingerprint {})",
        file.display(),
        key.fingerprint()
    );
    Ok(())
}

fn registry() -> Result<Registry, RegisterError> {
    let mut registry = Registry::new();
    registry.register("identity", |x: i64| x)?;
    registry.register("multiply", |x: i64, y: i64| x * y)?;
    registry.register("format", |x: i64| format!("The final answer is: {x}"))?;
    Ok(registry)
}

fn say(line: &str) -> Result<(), std::io::Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let security = match &args.key {
        KeyChoice::File(path) => Security::from(ClusterKey::from_file(path)?),
        KeyChoice::Insecure => Security::Insecure,
    };
    let keypair = Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id();
    let name = args.name.clone().unwrap_or_else(|| {
        let id = peer.to_base58();
        format!("node-{}", &id[id.len().saturating_sub(6)..])
    });
    let net = NetConfig::builder(security)
        .name(name)
        .keypair(keypair)
        .listen_on(args.listen.clone())
        .build()?;
    let mut capabilities = Resources::new().cpu(args.cpu);
    if args.memory > 0 {
        capabilities = capabilities.memory(args.memory);
    }
    if args.gpu > 0 {
        capabilities = capabilities.gpu(args.gpu);
    }
    let node = NodeConfig::new(net.node_id(), registry()?).capabilities(capabilities);
    let cluster = ClusterNode::start(node, net).await?;
    for address in cluster.client().listen_addresses().await? {
        say(&format!("listening {address}/p2p/{peer}"))?;
    }
    // Bootstrap addresses are dialed here rather than by the network layer, so that a
    // failure (a wrong cluster key shows up as a failed handshake) is reported.
    for address in args.bootstrap {
        let client = cluster.client().clone();
        actix::spawn(async move {
            let line = match client.dial(address.clone()).await {
                Ok(node) => format!("dialed {address} {node}"),
                Err(error) => format!("dial failed {address}: {error}"),
            };
            if let Err(error) = say(&line) {
                eprintln!("handoff-node: writing to stdout: {error}");
            }
        });
    }

    // Standard input closing is the signal to stop.
    let (stdin_closed, mut stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = stdin_closed.send(());
    });
    let mut peers = cluster.peer_changes();
    let mut last = None;
    loop {
        let line = peers_line(&peers.borrow_and_update());
        if last.as_ref() != Some(&line) {
            say(&line)?;
            last = Some(line);
        }
        tokio::select! {
            changed = peers.changed() => if changed.is_err() { break },
            _ = &mut stop => break,
        }
    }
    cluster.shutdown().await?;
    Ok(())
}

/// `peers <n> <name>:<cpu>:<gpu>,...`, sorted by name.
fn peers_line(peers: &[DiscoveredNode]) -> String {
    let mut entries: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}",
                p.name,
                p.capabilities.get("cpu"),
                p.capabilities.get("gpu")
            )
        })
        .collect();
    entries.sort();
    format!("peers {} {}", entries.len(), entries.join(","))
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn run_needs_a_security_choice() {
        assert!(matches!(
            parse(args("run --cpu 2")),
            Err(ArgsError::MissingSecurity)
        ));
        assert!(matches!(
            parse(args("run --key k --insecure")),
            Err(ArgsError::ConflictingSecurity)
        ));
    }

    #[test]
    fn run_parses_every_flag() {
        let parsed = parse(args(
            "run --insecure --listen /ip4/127.0.0.1/tcp/4001 --bootstrap /ip4/127.0.0.1/tcp/4002 \
             --bootstrap /ip4/127.0.0.1/tcp/4003 --name a --cpu 2 --memory 512 --gpu 1",
        ));
        let Ok(Command::Run(run)) = parsed else {
            panic!("unexpected {parsed:?}");
        };
        assert!(matches!(run.key, KeyChoice::Insecure));
        assert_eq!(run.listen.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(run.bootstrap.len(), 2);
        assert_eq!(run.name.as_deref(), Some("a"));
        assert_eq!((run.cpu, run.memory, run.gpu), (2, 512, 1));
    }

    #[test]
    fn bad_values_name_the_flag() {
        match parse(args("run --insecure --gpu lots")) {
            Err(ArgsError::InvalidValue { flag, value, .. }) => {
                assert_eq!((flag.as_str(), value.as_str()), ("--gpu", "lots"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(args("run --insecure --name")),
            Err(ArgsError::MissingValue { .. })
        ));
        assert!(matches!(
            parse(args("launch")),
            Err(ArgsError::UnknownCommand { .. })
        ));
    }
}
