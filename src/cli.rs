//! The command line of a cluster node process, reusable with your own function registry.
//!
//! The `handoff-node` binary is this module run with the [demo registry](crate::demo):
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     handoff::cli::main(handoff::demo::registry)
//! }
//! ```
//!
//! A binary of your own does the same with the functions its DAGs call, so that every
//! node of your cluster can run them:
//!
//! ```no_run
//! use handoff::{RegisterError, Registry};
//!
//! fn registry() -> Result<Registry, RegisterError> {
//!     let mut registry = Registry::new();
//!     registry.register("double", |x: i64| x.saturating_mul(2))?;
//!     Ok(registry)
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     handoff::cli::main(registry)
//! }
//! ```
//!
//! The command line it understands:
//!
//! ```text
//! <program> keygen <FILE>
//! <program> run (--key FILE | --key-env | --insecure) [--listen MULTIADDR] [--bootstrap MULTIADDR]...
//!               [--name NAME] [--cpu N] [--memory MB] [--gpu N] [--custom NAME=AMOUNT]...
//! ```
//!
//! `keygen` writes a new cluster key (mode 0600 on Unix) and refuses to overwrite a file.
//! `--key-env` reads the key from the `HANDOFF_CLUSTER_KEY` environment variable (the text
//! of a key file, or its 64 hex digits), for deployments that hand secrets over that way.
//! `run` starts a [`ClusterNode`], prints these lines on standard output, and runs until
//! SIGTERM or SIGINT (Ctrl-C) stops it gracefully (its standard input is not read, so it
//! runs in the background, under nohup, systemd or a container alike):
//!
//! ```text
//! listening <address>/p2p/<peer id>         once listening, for each address
//! dialed <address> <node>                   for each bootstrap address reached,
//! dial failed <address>: <reason>; …         or not (a wrong cluster key shows here),
//!                                           then again, waiting longer each time
//! peers <n> <name>:<cpu>:<gpu>,...          each time the set of peers changes (by name)
//! stopping on <signal>                      when told to stop; then it exits with 0
//! ```
//!
//! The pieces are public for programs with a command line of their own: [`parse`] or
//! [`parse_run`] read arguments into a [`Command`] or [`RunArgs`], [`keygen`] writes a
//! key, and [`run`] (or [`run_node`], inside an actix `System` you already run) runs a
//! node until it is told to stop.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use handoff_core::{Amount, RegisterError, Registry, ResourceName, Resources};
use handoff_net::{
    ClientError, ClusterKey, ClusterKeyError, ClusterNode, ClusterStartError, Config, ConfigError,
    DialError, DiscoveredNode, Keypair, Multiaddr, Security,
};

use handoff_actors::NodeConfig;

/// The flags of `run`, as shown in the usage text.
pub const RUN_FLAGS: &str = "(--key FILE | --key-env | --insecure) [--listen MULTIADDR] \
                             [--bootstrap MULTIADDR]...\n    [--name NAME] [--cpu N] \
                             [--memory MB] [--gpu N] [--custom NAME=AMOUNT]... \
                             [--identity FILE] [--allow-remote-registration]";

/// The first wait before a failed bootstrap dial is tried again; each later wait is
/// twice the one before, up to [`MAX_REDIAL`].
pub const FIRST_REDIAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest wait between two dials of a bootstrap address that failed.
pub const MAX_REDIAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The address a node listens on when `--listen` is not given: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// The program name used in messages when the command line does not give one.
const DEFAULT_PROGRAM: &str = "handoff-node";

/// The usage text, naming the program as `program`.
pub fn usage(program: &str) -> String {
    format!("usage:\n  {program} keygen <FILE>\n  {program} run {RUN_FLAGS}\n  {program} --version")
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// `keygen FILE`: write a new cluster key to `file`.
    Keygen {
        /// The file to write.
        file: PathBuf,
    },
    /// `run ...`: run a node.
    Run(RunArgs),
    /// `help`, `-h` or `--help`: print the usage text.
    Help,
    /// `version`, `-V` or `--version`: print the program's name and version.
    Version,
}

/// How a node secures its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// `--key FILE`: only nodes holding the cluster key in this file can connect.
    File(PathBuf),
    /// `--key-env`: as `--key`, with the key read from the `HANDOFF_CLUSTER_KEY` environment
    /// variable.
    Env,
    /// `--insecure`: any node that reaches this one can connect.
    Insecure,
}

/// The arguments of `run`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunArgs {
    /// How connections are secured.
    pub key: KeyChoice,
    /// The address to listen on (`--listen`, default [`DEFAULT_LISTEN`]).
    pub listen: Multiaddr,
    /// Nodes to dial at start (`--bootstrap`, repeatable).
    pub bootstrap: Vec<Multiaddr>,
    /// The node's human-readable name (`--name`); by default `node-` and the end of its
    /// peer id.
    pub name: Option<String>,
    /// CPUs offered (`--cpu`, default the number of cores).
    pub cpu: u32,
    /// Memory offered, in MB (`--memory`, default 0: none announced).
    pub memory: u32,
    /// GPUs offered (`--gpu`, default 0: none announced).
    pub gpu: u32,
    /// Other resources offered (`--custom NAME=AMOUNT`, repeatable), in the order given.
    pub custom: Vec<(ResourceName, Amount)>,
    /// Where the node's identity (its libp2p key pair, hence its node id) is kept
    /// (`--identity FILE`): read when the file exists, else generated and written there
    /// (mode 0600), so that a restarted node comes back as the same node. Without it, each
    /// start is a new node.
    pub identity: Option<PathBuf>,
    /// Lets peers set this node's capacity (`--allow-remote-registration`; default off:
    /// the node's capacity changes on its own word only).
    pub allow_remote_registration: bool,
}

impl RunArgs {
    /// The defaults of `run` with this security choice: listen on [`DEFAULT_LISTEN`], no
    /// bootstrap node, no name, as many CPUs as cores, nothing else.
    pub fn new(key: KeyChoice) -> RunArgs {
        RunArgs {
            key,
            // The constant parses (a unit test checks it); the fallback is never used.
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
            bootstrap: Vec::new(),
            name: None,
            cpu: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            memory: 0,
            gpu: 0,
            custom: Vec::new(),
            identity: None,
            allow_remote_registration: false,
        }
    }

    /// The resources the node offers: `cpu` always, `memory`, `gpu` and each custom
    /// resource when above zero.
    pub fn capabilities(&self) -> Resources {
        let mut capabilities = Resources::new().cpu(self.cpu);
        if self.memory > 0 {
            capabilities.set("memory", self.memory);
        }
        if self.gpu > 0 {
            capabilities.set("gpu", self.gpu);
        }
        for (name, amount) in &self.custom {
            if *amount > Amount::ZERO {
                capabilities.set(name.clone(), *amount);
            }
        }
        capabilities
    }
}

/// Why the command line was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// No command was given.
    #[error("no command given")]
    MissingCommand,
    /// The command is not `keygen`, `run` or `help`.
    #[error("unknown command `{command}`")]
    UnknownCommand {
        /// The command given.
        command: String,
    },
    /// A command lacks a positional argument.
    #[error("`{command}` needs {what}")]
    MissingArgument {
        /// The command.
        command: &'static str,
        /// What it lacks.
        what: &'static str,
    },
    /// An argument the command does not take.
    #[error("unexpected argument `{argument}`")]
    UnexpectedArgument {
        /// The argument.
        argument: String,
    },
    /// An argument is not valid Unicode.
    #[error("argument `{argument}` is not valid Unicode")]
    NotUnicode {
        /// The argument, with invalid sequences replaced.
        argument: String,
    },
    /// A flag is last on the line, without its value.
    #[error("`{flag}` needs a value")]
    MissingValue {
        /// The flag.
        flag: String,
    },
    /// A flag's value does not parse.
    #[error("invalid value `{value}` for `{flag}`: {reason}")]
    InvalidValue {
        /// The flag.
        flag: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A custom resource is given twice.
    #[error("`--custom {name}=...` is given twice")]
    DuplicateResource {
        /// The resource.
        name: String,
    },
    /// None of `--key`, `--key-env` and `--insecure` was given.
    #[error(
        "choose the security: `--key FILE` (a key made by `keygen FILE`), `--key-env` (the key \
         in HANDOFF_CLUSTER_KEY) or `--insecure` (any node that reaches this one can connect)"
    )]
    MissingSecurity,
    /// More than one of `--key`, `--key-env` and `--insecure` was given.
    #[error("`--key`, `--key-env` and `--insecure` exclude each other")]
    ConflictingSecurity,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `keygen` was asked to write a file that exists.
    #[error("{path} already exists; not overwriting a cluster key", path = path.display())]
    KeyFileExists {
        /// The file.
        path: PathBuf,
    },
    /// The cluster key file can be read by other users than its owner: anyone on the
    /// machine could join the cluster with it.
    #[error(
        "{path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`",
        path = path.display()
    )]
    KeyFileShared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The node's identity file could not be read or written.
    #[error("identity file {path}: {reason}", path = path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The cluster key could not be read or written.
    #[error(transparent)]
    Key {
        /// What went wrong.
        #[from]
        source: ClusterKeyError,
    },
    /// The function registry could not be built.
    #[error("function registry: {source}")]
    Registry {
        /// What went wrong.
        #[from]
        source: RegisterError,
    },
    /// The network configuration is invalid.
    #[error("network configuration: {source}")]
    Config {
        /// What went wrong.
        #[from]
        source: ConfigError,
    },
    /// The node could not start.
    #[error(transparent)]
    Start {
        /// What went wrong.
        #[from]
        source: ClusterStartError,
    },
    /// The network layer stopped while the node ran.
    #[error("the network layer stopped: {source}")]
    Net {
        /// What went wrong.
        #[from]
        source: ClientError,
    },
    /// A line could not be written to standard output.
    #[error("writing to stdout: {source}")]
    Stdout {
        /// What went wrong.
        #[from]
        source: std::io::Error,
    },
}

/// Runs the command line of `std::env::args_os()` with the registry `registry` builds
/// (called only for `run`), and returns the process's exit code: 0 on success, 2 when
/// the command line is not understood (the error and the usage text go to standard
/// error), 1 when the command fails.
///
/// It sets up `tracing` output to standard error (filtered by `RUST_LOG`, default
/// `warn`) unless a subscriber is already set, and starts the actix `System` itself: call
/// it from a plain `fn main`, not from inside a `System`.
pub fn main<F>(registry: F) -> ExitCode
where
    F: FnOnce() -> Result<Registry, RegisterError>,
{
    init_logging();
    let mut args = std::env::args_os();
    let program = args
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_stem)
        .and_then(|stem| stem.to_str())
        .map_or_else(|| DEFAULT_PROGRAM.to_owned(), str::to_owned);
    let command = match unicode_args(args).and_then(parse) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("{program}: {error}\n\n{}", usage(&program));
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            println!("{}", usage(&program));
            Ok(())
        }
        Command::Version => {
            println!("{program} {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Keygen { file } => keygen(&file),
        Command::Run(args) => registry()
            .map_err(RunError::from)
            .and_then(|registry| run(args, registry)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Sends `tracing` output to standard error, filtered by `RUST_LOG` (default `warn`);
/// does nothing when a global subscriber is already set.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a terminal: a log redirected to a file carries no escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// The arguments as strings, or the first one that is not valid Unicode.
fn unicode_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, ArgsError> {
    args.into_iter()
        .map(|arg| {
            arg.into_string().map_err(|arg| ArgsError::NotUnicode {
                argument: arg.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Reads a command line (without the program name): `keygen FILE`, `run FLAGS...` or
/// `help`.
///
/// ```
/// use handoff::cli::{Command, KeyChoice, parse};
/// let args = ["run", "--insecure", "--cpu", "2", "--custom", "licence=1"];
/// let Ok(Command::Run(run)) = parse(args.map(String::from)) else { panic!() };
/// assert_eq!(run.key, KeyChoice::Insecure);
/// assert_eq!(run.capabilities().to_string(), "{cpu: 2, licence: 1}");
/// ```
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, ArgsError> {
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
        "-V" | "--version" | "version" => Ok(Command::Version),
        _ => Err(ArgsError::UnknownCommand { command }),
    }
}

/// Reads the flags of `run` (what follows `run` on the command line; see [`RUN_FLAGS`]).
pub fn parse_run(args: impl IntoIterator<Item = String>) -> Result<RunArgs, ArgsError> {
    fn value(flag: &str, args: &mut impl Iterator<Item = String>) -> Result<String, ArgsError> {
        args.next().ok_or_else(|| ArgsError::MissingValue {
            flag: flag.to_owned(),
        })
    }
    let mut args = args.into_iter();
    let (mut key, mut key_env, mut insecure) = (None, false, false);
    let mut listen = None;
    let mut bootstrap = Vec::new();
    let mut name = None;
    let mut identity = None;
    let mut allow_remote_registration = false;
    let (mut cpu, mut memory, mut gpu) = (None, 0, 0);
    let mut custom: Vec<(ResourceName, Amount)> = Vec::new();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--key" => key = Some(PathBuf::from(value(&flag, &mut args)?)),
            "--key-env" => key_env = true,
            "--insecure" => insecure = true,
            "--listen" => listen = Some(parsed(&flag, value(&flag, &mut args)?)?),
            "--bootstrap" => bootstrap.push(parsed(&flag, value(&flag, &mut args)?)?),
            "--name" => name = Some(value(&flag, &mut args)?),
            "--identity" => identity = Some(PathBuf::from(value(&flag, &mut args)?)),
            "--allow-remote-registration" => allow_remote_registration = true,
            "--cpu" => cpu = Some(parsed(&flag, value(&flag, &mut args)?)?),
            "--memory" => memory = parsed(&flag, value(&flag, &mut args)?)?,
            "--gpu" => gpu = parsed(&flag, value(&flag, &mut args)?)?,
            "--custom" => {
                let (name, amount) = custom_resource(value(&flag, &mut args)?)?;
                if custom.iter().any(|(known, _)| *known == name) {
                    return Err(ArgsError::DuplicateResource {
                        name: name.to_string(),
                    });
                }
                custom.push((name, amount));
            }
            _ => return Err(ArgsError::UnexpectedArgument { argument: flag }),
        }
    }
    let key = match (key, key_env, insecure) {
        (Some(path), false, false) => KeyChoice::File(path),
        (None, true, false) => KeyChoice::Env,
        (None, false, true) => KeyChoice::Insecure,
        (None, false, false) => return Err(ArgsError::MissingSecurity),
        _ => return Err(ArgsError::ConflictingSecurity),
    };
    let mut run = RunArgs::new(key);
    if let Some(listen) = listen {
        run.listen = listen;
    }
    if let Some(cpu) = cpu {
        run.cpu = cpu;
    }
    run.bootstrap = bootstrap;
    run.name = name;
    run.memory = memory;
    run.gpu = gpu;
    run.custom = custom;
    run.allow_remote_registration = allow_remote_registration;
    run.identity = identity;
    Ok(run)
}

/// `value` parsed as a `T`, or an error naming `flag`.
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

/// `NAME=AMOUNT`, with a decimal amount at or above zero; `cpu`, `memory` and `gpu` have
/// flags of their own.
fn custom_resource(value: String) -> Result<(ResourceName, Amount), ArgsError> {
    let invalid = |reason: &str| ArgsError::InvalidValue {
        flag: "--custom".to_owned(),
        value: value.clone(),
        reason: reason.to_owned(),
    };
    let Some((name, amount)) = value.split_once('=') else {
        return Err(invalid("expected NAME=AMOUNT"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("the resource has no name"));
    }
    if matches!(name, "cpu" | "memory" | "gpu") {
        return Err(invalid("use `--cpu`, `--memory` or `--gpu` for these"));
    }
    let amount = amount
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(Amount::from_f64)
        .ok_or_else(|| invalid("the amount is not a number"))?;
    if amount.is_negative() {
        return Err(invalid("the amount is below zero"));
    }
    Ok((ResourceName::new(name), amount))
}

/// Writes a new cluster key to `file` (mode 0600 on Unix) and prints `wrote a new cluster
/// key to <file> (fingerprint <fingerprint>)`. Refuses to overwrite an existing file.
pub fn keygen(file: &Path) -> Result<(), RunError> {
    if file.exists() {
        return Err(RunError::KeyFileExists {
            path: file.to_owned(),
        });
    }
    let key = ClusterKey::generate();
    key.to_file(file)?;
    say(&format!(
        "wrote a new cluster key to {} (fingerprint {})",
        file.display(),
        key.fingerprint()
    ))?;
    Ok(())
}

/// The key pair kept in `path`, or a new one written there (mode 0600) when the file does
/// not exist.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, RunError> {
    use std::io::Write;
    let failed = |reason: String| RunError::Identity {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|error| failed(format!("not a key pair: {error}"))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|error| failed(error.to_string()))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(|e| failed(e.to_string()))?;
            file.write_all(&bytes).map_err(|e| failed(e.to_string()))?;
            file.sync_all().map_err(|e| failed(e.to_string()))?;
            Ok(keypair)
        }
        Err(error) => Err(failed(error.to_string())),
    }
}

/// Runs a node in a new actix `System` until SIGTERM or SIGINT stops it (see
/// [`run_node`]). Call it from outside any `System`.
pub fn run(args: RunArgs, registry: Registry) -> Result<(), RunError> {
    actix::System::new().block_on(run_node(args, registry))
}

/// Runs a node with `registry` inside the current actix `System`, printing the lines
/// described in the [module docs](self), until SIGTERM or SIGINT (Ctrl-C); then shuts
/// the node's network layer down.
pub async fn run_node(args: RunArgs, registry: Registry) -> Result<(), RunError> {
    let security = match &args.key {
        KeyChoice::File(path) => {
            refuse_shared_key(path)?;
            Security::from(ClusterKey::from_file(path)?)
        }
        KeyChoice::Env => Security::from(ClusterKey::from_default_env()?),
        KeyChoice::Insecure => Security::Insecure,
    };
    let keypair = match &args.identity {
        Some(path) => load_or_create_identity(path)?,
        None => Keypair::generate_ed25519(),
    };
    let peer = keypair.public().to_peer_id();
    let name = args.name.clone().unwrap_or_else(|| {
        let id = peer.to_base58();
        format!(
            "node-{}",
            id.get(id.len().saturating_sub(6)..).unwrap_or(&id)
        )
    });
    let net = Config::builder(security)
        .name(name)
        .keypair(keypair)
        .listen_on(args.listen.clone())
        .allow_remote_registration(args.allow_remote_registration)
        .build()?;
    let node = NodeConfig::new(net.node_id(), registry).capabilities(args.capabilities());
    let cluster = ClusterNode::start(node, net).await?;
    let outcome = serve(&cluster, &peer.to_string(), args.bootstrap).await;
    let stopped = cluster.shutdown().await;
    outcome?;
    stopped?;
    Ok(())
}

/// Refuses a key file other users can read (as ssh refuses such a private key).
fn refuse_shared_key(path: &Path) -> Result<(), RunError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A file that cannot be read is reported by the key's own reading.
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(RunError::KeyFileShared {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Prints the node's addresses, dials the bootstrap nodes and prints the peers as they
/// change, until SIGTERM or SIGINT (Ctrl-C) stops it.
async fn serve(
    cluster: &ClusterNode,
    peer: &str,
    bootstrap: Vec<Multiaddr>,
) -> Result<(), RunError> {
    for address in cluster.client().listen_addresses().await? {
        say(&format!("listening {address}/p2p/{peer}"))?;
    }
    // Bootstrap addresses are dialed here rather than by the network layer, so that a
    // failure (a wrong cluster key shows up as a failed handshake) is reported. A failed
    // dial is tried again, waiting twice as long each time up to `MAX_REDIAL`, until it
    // succeeds: start order does not matter.
    for address in bootstrap {
        let client = cluster.client().clone();
        actix::spawn(async move {
            let mut wait = FIRST_REDIAL;
            loop {
                let (line, again) = match client.dial(address.clone()).await {
                    Ok(node) => (format!("dialed {address} {node}"), false),
                    Err(DialError::Stopped) => break,
                    Err(error) => (
                        format!("dial failed {address}: {error}; trying again in {wait:?}"),
                        true,
                    ),
                };
                if let Err(error) = say(&line) {
                    tracing::warn!("writing to stdout: {error}");
                }
                if !again {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_REDIAL);
            }
        });
    }

    // SIGTERM or SIGINT (Ctrl-C) stops the node, gracefully. Standard input is not
    // read: a node run in the background, under nohup, systemd or a container keeps
    // running when it has none.
    let mut stop = Box::pin(stop_signal());
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
            signal = &mut stop => {
                say(&format!("stopping on {signal}"))?;
                break;
            }
        }
    }
    Ok(())
}

/// Waits for the signal that stops a node: SIGTERM or SIGINT (on other platforms,
/// Ctrl-C); its name.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut interrupt)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            },
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(
                    "cannot listen for stop signals ({error}); stop the node by killing it"
                );
                std::future::pending().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}

/// Writes one line to standard output and flushes it (a parent reading the pipe sees it
/// at once).
fn say(line: &str) -> Result<(), std::io::Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// `peers <n> <name>:<cpu>:<gpu>,...`, sorted by name.
fn peers_line(peers: &[DiscoveredNode]) -> String {
    let mut entries: Vec<String> = peers
        .iter()
        .map(|p| {
            format!(
                "{}:{}:{}",
                printable(&p.name),
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

/// A name a peer announced, safe to print on one line of `peers`: ASCII letters,
/// digits, `-`, `_` and `.` as they are, anything else (control characters and terminal
/// escapes, separators of the line, other characters) as `\u{hex}`. A peer cannot forge
/// lines or drive the terminal through its name.
fn printable(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_names_are_printed_escaped() {
        assert_eq!(printable("node-a_1.eu"), "node-a_1.eu");
        assert_eq!(
            printable("x\u{1b}]0;pwned\u{7}\npeers 9 fake:1:0,é"),
            "x\\u{1b}\\u{5d}0\\u{3b}pwned\\u{7}\\u{a}peers\\u{20}9\\u{20}fake\\u{3a}1\\u{3a}0\\u{2c}\\u{e9}"
        );
        let peer = DiscoveredNode {
            node: crate::NodeId::new("id"),
            name: "evil\npeers 1 forged:8:8".to_owned(),
            capabilities: Resources::new().cpu(1),
            code_names: Vec::new(),
        };
        let line = peers_line(&[peer]);
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(line.matches(':').count(), 2, "{line}");
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn run_needs_a_security_choice() {
        assert!(matches!(
            parse(args("run --cpu 2")),
            Err(ArgsError::MissingSecurity)
        ));
        for conflicting in [
            "run --key k --insecure",
            "run --key k --key-env",
            "run --key-env --insecure",
        ] {
            assert!(
                matches!(
                    parse(args(conflicting)),
                    Err(ArgsError::ConflictingSecurity)
                ),
                "{conflicting}"
            );
        }
        let parsed = parse_run(args("--key-env"));
        assert!(
            matches!(&parsed, Ok(run) if run.key == KeyChoice::Env),
            "{parsed:?}"
        );
    }

    #[test]
    fn run_parses_every_flag() {
        let parsed = parse(args(
            "run --insecure --listen /ip4/127.0.0.1/tcp/4001 --bootstrap /ip4/127.0.0.1/tcp/4002 \
             --bootstrap /ip4/127.0.0.1/tcp/4003 --name a --cpu 2 --memory 512 --gpu 1 \
             --custom licence=2 --custom disk=0.5",
        ));
        let Ok(Command::Run(run)) = parsed else {
            panic!("unexpected {parsed:?}");
        };
        assert_eq!(run.key, KeyChoice::Insecure);
        assert_eq!(run.listen.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(run.bootstrap.len(), 2);
        assert_eq!(run.name.as_deref(), Some("a"));
        assert_eq!((run.cpu, run.memory, run.gpu), (2, 512, 1));
        assert_eq!(
            run.capabilities(),
            Resources::new()
                .cpu(2)
                .memory(512)
                .gpu(1)
                .with("licence", 2)
                .with("disk", 0.5)
        );
    }

    #[test]
    fn defaults_offer_the_cores_and_nothing_else() {
        let parsed = parse_run(args("--key cluster.key"));
        let Ok(run) = parsed else {
            panic!("unexpected {parsed:?}");
        };
        assert_eq!(run.key, KeyChoice::File("cluster.key".into()));
        assert_eq!(run.listen.to_string(), DEFAULT_LISTEN);
        assert!(run.cpu >= 1);
        assert_eq!(run.capabilities(), Resources::new().cpu(run.cpu));
        // Zero amounts are not announced.
        let Ok(run) = parse_run(args("--insecure --cpu 0 --memory 0 --custom x=0")) else {
            panic!("parses");
        };
        assert_eq!(run.capabilities(), Resources::new().cpu(0));
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
        assert!(matches!(parse(args("")), Err(ArgsError::MissingCommand)));
        assert!(matches!(
            parse(args("keygen")),
            Err(ArgsError::MissingArgument { .. })
        ));
        assert!(matches!(
            parse(args("keygen a b")),
            Err(ArgsError::UnexpectedArgument { .. })
        ));
    }

    #[test]
    fn custom_resources_are_checked() {
        for bad in [
            "licence",
            "=1",
            "licence=",
            "licence=many",
            "licence=-1",
            "licence=inf",
            "licence=NaN",
            "cpu=2",
            "gpu=1",
        ] {
            match parse_run(args(&format!("--insecure --custom {bad}"))) {
                Err(ArgsError::InvalidValue { flag, value, .. }) => {
                    assert_eq!((flag.as_str(), value.as_str()), ("--custom", bad));
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
        assert!(matches!(
            parse_run(args("--insecure --custom a=1 --custom a=2")),
            Err(ArgsError::DuplicateResource { name }) if name == "a"
        ));
    }

    #[test]
    fn arguments_that_are_not_unicode_are_refused() {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = OsString::from_vec(vec![b'r', 0xff]);
            assert!(matches!(
                unicode_args([OsString::from("run"), bad]),
                Err(ArgsError::NotUnicode { .. })
            ));
        }
        assert!(matches!(
            unicode_args([OsString::from("help")]).map(parse),
            Ok(Ok(Command::Help))
        ));
    }

    #[test]
    fn the_usage_names_the_program_and_every_flag() {
        let text = usage("my-node");
        assert!(text.contains("my-node keygen <FILE>"), "{text}");
        for flag in [
            "--key",
            "--insecure",
            "--listen",
            "--bootstrap",
            "--name",
            "--cpu",
            "--memory",
            "--gpu",
            "--custom",
        ] {
            assert!(text.contains(flag), "{flag} in {text}");
        }
    }
}
