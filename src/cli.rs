//! The command line of a cluster node process, reusable with your own function registry.
//!
//! The `handoff-node` binary is this module run with a demo registry
//! (`src/bin/handoff-node/demo.rs`):
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     handoff::cli::main(demo::registry)
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
//! The commands (`<program> help <command>` or `<program> <command> --help` tells every
//! flag, and the environment variable that sets it):
//!
//! ```text
//! <program> keygen <FILE>       write a new cluster key (mode 0600), never over a file
//! <program> run [FLAGS]         run a node until SIGTERM or SIGINT (Ctrl-C)
//! <program> status [FLAGS]      join the cluster for a moment and print every node
//! <program> --version
//! ```
//!
//! `run` and `status` take the security choice: `--key FILE` (`HANDOFF_KEY_FILE`), `--key-env`
//! (the key in `HANDOFF_CLUSTER_KEY`, the text of a key file or its 64 hex digits) or
//! `--insecure`. A key file other users can read is refused (as ssh refuses such a private
//! key) unless `--allow-shared-key` is given. Logs go to standard error, filtered by
//! `RUST_LOG` (default `warn`): plain text (coloured only on a terminal), or JSON lines
//! with `--log-format json` (`HANDOFF_LOG_FORMAT`).
//!
//! `run` starts a [`ClusterNode`], prints these lines on standard output, and runs until
//! SIGTERM or SIGINT (Ctrl-C) stops it gracefully: it drains ([`ClusterNode::drain`]:
//! peers stop sending it work, what runs finishes and coordinators fetch the values they
//! still need, at most `--drain-timeout`), then leaves; a second signal stops it at once. Its standard input is not read (so it
//! runs in the background, under nohup, systemd or a container alike) unless
//! `--stop-on-stdin-eof` asks it to stop when standard input closes:
//!
//! ```text
//! listening <address>/p2p/<peer id>         once listening, for each address
//! dialed <address> <node>                   for each bootstrap address reached,
//! dial failed <address>: <reason>; …         or not (a wrong cluster key shows here),
//!                                           then again, waiting longer each time
//! peers <n> <name>:<cpu>:<gpu>,...          each time the set of peers changes (by name)
//! stopping on <reason>: draining …           when told to stop (a signal drains first)
//! stopped: <why>                            when the drain ended (or a second signal came);
//!                                           then it exits with 0
//! ```
//!
//! `status` joins the cluster through `--bootstrap` as a node offering nothing, waits until
//! the set of nodes it hears of stops changing (at most `--wait`), prints one line per node
//! (name, peer id, state (alive or draining), addresses, capacity, free resources now,
//! registered functions), and
//! leaves.
//!
//! For programs with a command line of their own: [`RunArgs`] holds what `run` takes,
//! [`run`] (or [`run_node`], inside an actix `System` you already run) runs a node until it
//! is told to stop, [`keygen`] writes a key, and [`main_from`] runs this command line on
//! arguments you pass.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use handoff_core::{Amount, RegisterError, Registry, ResourceName, Resources};
use handoff_net::{
    ClientError, ClusterKey, ClusterKeyError, ClusterNode, ClusterStartError, Config, ConfigError,
    DialError, DiscoveredNode, Keypair, Multiaddr, Security,
};

use handoff_actors::NodeConfig;

/// The first wait before a failed bootstrap dial is tried again; each later wait is
/// twice the one before, up to [`MAX_REDIAL`].
pub const FIRST_REDIAL: Duration = Duration::from_millis(250);

/// The longest wait between two dials of a bootstrap address that failed.
pub const MAX_REDIAL: Duration = Duration::from_secs(30);

/// How long a node told to stop drains at most, by default (`--drain-timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The address a node listens on when `--listen` is not given: loopback, any free port.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

/// The program name used in messages when the command line does not give one.
const DEFAULT_PROGRAM: &str = "handoff-node";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A Handoff cluster node: runs the functions of its registry for the DAGs of every \
             node holding the same cluster key.",
    propagate_version = true,
    disable_help_subcommand = false
)]
struct Cli {
    /// How logs on standard error look (filtered by RUST_LOG, default `warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        env = "HANDOFF_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Write a new cluster key to FILE (mode 0600); an existing file is never overwritten.
    Keygen {
        /// The file to write.
        file: PathBuf,
    },
    /// Run a node until SIGTERM or SIGINT (Ctrl-C).
    Run(RunFlags),
    /// Join the cluster for a moment and print every node: name, peer id, addresses,
    /// capacity, free resources and registered functions.
    Status(StatusFlags),
}

/// The security choice of `run` and `status`: exactly one.
#[derive(Debug, Args)]
#[group(id = "security", required = true, multiple = false)]
struct SecurityFlags {
    /// The cluster key file (written by `keygen`): only nodes holding the same key connect.
    #[arg(long, value_name = "FILE", env = "HANDOFF_KEY_FILE")]
    key: Option<PathBuf>,
    /// Read the cluster key from HANDOFF_CLUSTER_KEY (a key file's text, or its 64 hex
    /// digits).
    #[arg(long)]
    key_env: bool,
    /// No cluster key: any node that reaches this one connects (for trying things out).
    #[arg(long)]
    insecure: bool,
}

impl SecurityFlags {
    fn choice(&self) -> KeyChoice {
        match (&self.key, self.key_env) {
            (Some(path), _) => KeyChoice::File(path.clone()),
            (None, true) => KeyChoice::Env,
            (None, false) => KeyChoice::Insecure,
        }
    }
}

#[derive(Debug, Args)]
struct RunFlags {
    #[command(flatten)]
    security: SecurityFlags,
    /// Accept a key file other users can read (refused by default: anyone on this machine
    /// could join the cluster with it).
    #[arg(long)]
    allow_shared_key: bool,
    /// The address to listen on.
    #[arg(long, value_name = "MULTIADDR", env = "HANDOFF_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: Multiaddr,
    /// A node to join the cluster through (repeatable; in the environment, separated by
    /// commas). A dial that fails is tried again, waiting longer each time, until it works.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "HANDOFF_BOOTSTRAP",
        value_delimiter = ','
    )]
    bootstrap: Vec<Multiaddr>,
    /// This node's name, shown to the others [default: `node-` and the end of its peer id].
    #[arg(long, env = "HANDOFF_NAME")]
    name: Option<String>,
    /// CPUs offered [default: the number of cores].
    #[arg(long, value_name = "N", env = "HANDOFF_CPU")]
    cpu: Option<u32>,
    /// Memory offered, in MB (0: none announced).
    #[arg(long, value_name = "MB", env = "HANDOFF_MEMORY", default_value_t = 0)]
    memory: u32,
    /// GPUs offered (0: none announced).
    #[arg(long, value_name = "N", env = "HANDOFF_GPU", default_value_t = 0)]
    gpu: u32,
    /// Another resource offered, e.g. `--custom licence=2` (repeatable; a decimal amount at
    /// or above zero).
    #[arg(long, value_name = "NAME=AMOUNT", value_parser = custom_resource)]
    custom: Vec<(ResourceName, Amount)>,
    /// Where this node's identity (its key pair, hence its peer id) is kept: read when the
    /// file exists, else made and written there (mode 0600), so that a restarted node
    /// comes back as the same node [default: a new identity at each start].
    #[arg(long, value_name = "FILE", env = "HANDOFF_IDENTITY")]
    identity: Option<PathBuf>,
    /// Let peers set this node's capacity (by default it changes on its own word only).
    #[arg(long)]
    allow_remote_registration: bool,
    /// Also stop when standard input closes (for a parent process that owns the node).
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// On SIGTERM or SIGINT, the longest to wait, in seconds, for the functions running
    /// here to finish and for the values held here to be fetched before leaving.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "HANDOFF_DRAIN_TIMEOUT",
        default_value_t = 30.0
    )]
    drain_timeout: f64,
}

#[derive(Debug, Args)]
struct StatusFlags {
    #[command(flatten)]
    security: SecurityFlags,
    /// Accept a key file other users can read (refused by default: anyone on this machine
    /// could join the cluster with it).
    #[arg(long)]
    allow_shared_key: bool,
    /// A node of the cluster to join through (repeatable; in the environment, separated by
    /// commas).
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "HANDOFF_BOOTSTRAP",
        value_delimiter = ',',
        required = true
    )]
    bootstrap: Vec<Multiaddr>,
    /// The longest to wait for the set of nodes to stop changing, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    wait: f64,
}

/// How log lines look on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Plain text, coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
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

/// The arguments of `run` (see the [module docs](self) for the flags that set each).
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
    /// Accepts a key file other users can read (`--allow-shared-key`; default off: such a
    /// file is refused with [`RunError::KeyFileShared`]).
    pub allow_shared_key: bool,
    /// Stops the node when standard input closes too (`--stop-on-stdin-eof`; default off:
    /// standard input is not read).
    pub stop_on_stdin_eof: bool,
    /// On a stop signal, the longest the node drains before it leaves (`--drain-timeout`,
    /// default [`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
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
            allow_shared_key: false,
            stop_on_stdin_eof: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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

impl RunFlags {
    /// The arguments these flags give, or a usage error (a custom resource given twice).
    fn into_args(self) -> Result<RunArgs, clap::Error> {
        for (i, (name, _)) in self.custom.iter().enumerate() {
            if self.custom[..i].iter().any(|(known, _)| known == name) {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("`--custom {name}=...` is given twice"),
                ));
            }
        }
        let mut run = RunArgs::new(self.security.choice());
        run.listen = self.listen;
        if let Some(cpu) = self.cpu {
            run.cpu = cpu;
        }
        run.bootstrap = self.bootstrap;
        run.name = self.name;
        run.memory = self.memory;
        run.gpu = self.gpu;
        run.custom = self.custom;
        run.identity = self.identity;
        run.allow_remote_registration = self.allow_remote_registration;
        run.allow_shared_key = self.allow_shared_key;
        run.stop_on_stdin_eof = self.stop_on_stdin_eof;
        run.drain_timeout = Duration::try_from_secs_f64(self.drain_timeout).map_err(|_| {
            Cli::command().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "`--drain-timeout {}`: a number of seconds, 0 or more, is expected",
                    self.drain_timeout
                ),
            )
        })?;
        Ok(run)
    }
}

/// `NAME=AMOUNT`, with a decimal amount at or above zero; `cpu`, `memory` and `gpu` have
/// flags of their own.
fn custom_resource(value: &str) -> Result<(ResourceName, Amount), String> {
    let Some((name, amount)) = value.split_once('=') else {
        return Err("expected NAME=AMOUNT".to_owned());
    };
    let name = name.trim();
    if name.is_empty() {
        return Err("the resource has no name".to_owned());
    }
    if matches!(name, "cpu" | "memory" | "gpu") {
        return Err("use `--cpu`, `--memory` or `--gpu` for these".to_owned());
    }
    let amount = amount
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(Amount::from_f64)
        .ok_or_else(|| "the amount is not a number".to_owned())?;
    if amount.is_negative() {
        return Err("the amount is below zero".to_owned());
    }
    if !amount.is_valid() {
        return Err(format!("the amount is above {}", Amount::MAX));
    }
    Ok((ResourceName::new(name), amount))
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
    /// `status` could not reach any node of the cluster through its bootstrap addresses.
    #[error("could not join the cluster: {reasons}")]
    NotJoined {
        /// Why each bootstrap address failed.
        reasons: String,
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
/// (called only for `run`), and returns the process's exit code: 0 on success (and for
/// `--help` and `--version`), 2 when the command line is not understood (the error and
/// the usage go to standard error), 1 when the command fails.
///
/// It sets up `tracing` output to standard error ([`init_logging_as`], the format chosen
/// by `--log-format`) unless a subscriber is already set, and starts the actix `System`
/// itself: call it from a plain `fn main`, not from inside a `System`.
pub fn main<F>(registry: F) -> ExitCode
where
    F: FnOnce() -> Result<Registry, RegisterError>,
{
    main_from(std::env::args_os(), registry)
}

/// As [`main`], with the command line `args` (the program's name first, as in
/// `std::env::args_os()`).
///
/// ```
/// let registry = || Ok(handoff::Registry::new());
/// let code = handoff::cli::main_from(["my-node", "--version"], registry);
/// assert_eq!(code, std::process::ExitCode::SUCCESS);
/// ```
pub fn main_from<I, T, F>(args: I, registry: F) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
    F: FnOnce() -> Result<Registry, RegisterError>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let program = args
        .first()
        .map(Path::new)
        .and_then(Path::file_stem)
        .and_then(|stem| stem.to_str())
        .map_or_else(|| DEFAULT_PROGRAM.to_owned(), str::to_owned);
    if args.is_empty() {
        args.push(OsString::from(&program));
    }
    let command = Cli::command()
        .name(program.clone())
        .bin_name(program.clone());
    let parsed = command
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    init_logging_as(cli.log_format);
    let outcome = match cli.command {
        CliCommand::Keygen { file } => keygen(&file),
        CliCommand::Run(flags) => match flags.into_args() {
            Ok(run_args) => registry()
                .map_err(RunError::from)
                .and_then(|registry| run(run_args, registry)),
            Err(error) => return usage_error(&error),
        },
        CliCommand::Status(flags) => status(&flags),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command-line error (or the help or version asked for) and gives the exit code:
/// 2 for an error, 0 for help and version.
fn usage_error(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Sends `tracing` output to standard error as plain text, filtered by `RUST_LOG`
/// (default `warn`); does nothing when a global subscriber is already set.
pub fn init_logging() {
    init_logging_as(LogFormat::Text);
}

/// Sends `tracing` output to standard error in `format`, filtered by `RUST_LOG` (default
/// `warn`); does nothing when a global subscriber is already set. Text carries colours
/// only when standard error is a terminal (a log redirected to a file has no escape
/// codes); JSON is one object per line, never coloured.
pub fn init_logging_as(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// `status`: joins the cluster as a node offering nothing, waits until the set of nodes it
/// hears of stops changing ([`STATUS_QUIET`] without news, at most `--wait`), prints one
/// line per node and leaves.
fn status(flags: &StatusFlags) -> Result<(), RunError> {
    let security = security(&flags.security.choice(), flags.allow_shared_key)?;
    let wait = Duration::try_from_secs_f64(flags.wait).unwrap_or(Duration::from_secs(10));
    let bootstrap = flags.bootstrap.clone();
    actix::System::new().block_on(async move {
        let net = Config::builder(security)
            .name("status")
            .listen_on(
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty()),
            )
            .build()?;
        let node = NodeConfig::new(net.node_id(), Registry::new()).capabilities(Resources::new());
        let cluster = ClusterNode::start(node, net).await?;
        let outcome = status_of(&cluster, bootstrap, wait).await;
        let stopped = cluster.shutdown().await;
        outcome?;
        stopped?;
        Ok(())
    })
}

/// How long `status` waits after the last change before it takes the set of nodes as
/// complete: every live node announces itself at least once in that time (each does every
/// [`handoff_net::DEFAULT_ANNOUNCE_INTERVAL`]), with room for gossip to carry it.
const STATUS_QUIET: Duration = Duration::from_millis(3_000);

async fn status_of(
    cluster: &ClusterNode,
    bootstrap: Vec<Multiaddr>,
    wait: Duration,
) -> Result<(), RunError> {
    let mut reasons = Vec::new();
    let addresses = bootstrap.len();
    for address in bootstrap {
        if let Err(error) = cluster.client().dial(address.clone()).await {
            reasons.push(format!("{address}: {error}"));
        }
    }
    if reasons.len() == addresses {
        return Err(RunError::NotJoined {
            reasons: reasons.join("; "),
        });
    }
    // Announcements arrive over gossip: the set is taken as complete once it has not
    // changed for a while.
    let end = tokio::time::Instant::now() + wait;
    let mut changes = cluster.peer_changes();
    loop {
        let quiet = (tokio::time::Instant::now() + STATUS_QUIET).min(end);
        match tokio::time::timeout_at(quiet, changes.changed()).await {
            Ok(Ok(())) if tokio::time::Instant::now() < end => continue,
            _ => break,
        }
    }
    let mut peers = cluster.client().peers().await?;
    peers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.node.cmp(&b.node)));
    say(&format!("nodes {}", peers.len()))?;
    for peer in peers {
        let free = match cluster.node_stats(&peer.node).await {
            Ok(stats) => stats.free.to_string(),
            Err(error) => format!("unknown ({error})"),
        };
        // What a peer announced is printed only as addresses that parse (a peer cannot
        // drive the terminal through them).
        let addresses: Vec<String> = peer
            .addresses
            .iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .map_or_else(|_| "<invalid>".to_owned(), |a| a.to_string())
            })
            .collect();
        say(&format!(
            "{} id {} state {} addresses {} capacity {} free {} functions {}",
            printable(&peer.name),
            peer.node,
            if peer.state.draining {
                "draining"
            } else {
                "alive"
            },
            if addresses.is_empty() {
                "-".to_owned()
            } else {
                addresses.join(",")
            },
            peer.state.capabilities,
            free,
            peer.state.code_names.len()
        ))?;
    }
    Ok(())
}

/// The security a key choice asks for: the key file (refused when others can read it,
/// unless `allow_shared`), the key in the environment, or none.
fn security(choice: &KeyChoice, allow_shared: bool) -> Result<Security, RunError> {
    Ok(match choice {
        KeyChoice::File(path) => {
            if !allow_shared {
                refuse_shared_key(path)?;
            }
            Security::from(ClusterKey::from_file(path)?)
        }
        KeyChoice::Env => Security::from(ClusterKey::from_default_env()?),
        KeyChoice::Insecure => Security::Insecure,
    })
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
    let security = security(&args.key, args.allow_shared_key)?;
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
    let outcome = serve(
        &cluster,
        &peer.to_string(),
        args.bootstrap,
        args.stop_on_stdin_eof,
        args.drain_timeout,
    )
    .await;
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
    stop_on_stdin_eof: bool,
    drain_timeout: Duration,
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
    let mut signals = StopSignals::new();
    let mut stdin = Box::pin(async move {
        if stop_on_stdin_eof {
            stdin_closed().await
        } else {
            std::future::pending().await
        }
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
            () = &mut stdin => {
                // The parent that owns the node is gone: no drain.
                say("stopping on standard input closed")?;
                say("stopped: standard input closed")?;
                break;
            }
            reason = signals.next() => {
                say(&format!(
                    "stopping on {reason}: draining for at most {drain_timeout:?} (a second signal stops at once)"
                ))?;
                let line = tokio::select! {
                    drained = cluster.drain(drain_timeout) => match drained {
                        Ok(drained) => format!("stopped: {drained}"),
                        Err(error) => format!("stopped: the drain failed: {error}"),
                    },
                    second = signals.next() => format!("stopped at once on a second {second}"),
                };
                say(&line)?;
                break;
            }
        }
    }
    Ok(())
}

/// The signals that stop a node: SIGTERM and SIGINT (on other platforms, Ctrl-C),
/// listened for from creation on, so that none sent after it is missed.
struct StopSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn new() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(interrupt)) => Some((term, interrupt)),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(
                        "cannot listen for stop signals ({error}); stop the node by killing it"
                    );
                    None
                }
            };
            StopSignals { streams }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next stop signal; its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            match &mut self.streams {
                Some((term, interrupt)) => tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                },
                None => std::future::pending().await,
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
}

/// Waits until standard input closes (read on a thread of the blocking pool).
async fn stdin_closed() {
    let read = tokio::task::spawn_blocking(|| {
        let mut sink = [0_u8; 1024];
        let mut stdin = std::io::stdin().lock();
        while matches!(std::io::Read::read(&mut stdin, &mut sink), Ok(n) if n > 0) {}
    });
    let _ = read.await;
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
            draining: false,
        };
        let line = peers_line(&[peer]);
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(line.matches(':').count(), 2, "{line}");
    }

    /// Parses `line` as the command line of `handoff-node`.
    fn parse(line: &str) -> Result<CliCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("handoff-node").chain(line.split_whitespace()))
            .map(|cli| cli.command)
    }

    fn run_args(line: &str) -> Result<RunArgs, clap::Error> {
        match parse(line)? {
            CliCommand::Run(flags) => flags.into_args(),
            other => panic!("not `run`: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_needs_exactly_one_security_choice() {
        let missing = run_args("run --cpu 2").expect_err("no choice");
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let text = missing.to_string();
        assert!(
            text.contains("--key") && text.contains("--insecure"),
            "{text}"
        );
        for conflicting in [
            "run --key k --insecure",
            "run --key k --key-env",
            "run --key-env --insecure",
        ] {
            let error = run_args(conflicting).expect_err(conflicting);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{conflicting}"
            );
        }
        let run = run_args("run --key-env").expect("parses");
        assert_eq!(run.key, KeyChoice::Env);
        assert!(!run.allow_shared_key);
        let run = run_args("run --key k --allow-shared-key").expect("parses");
        assert_eq!(run.key, KeyChoice::File("k".into()));
        assert!(run.allow_shared_key);
    }

    #[test]
    fn run_parses_every_flag() {
        let run = run_args(
            "run --insecure --listen /ip4/127.0.0.1/tcp/4001 --bootstrap /ip4/127.0.0.1/tcp/4002 \
             --bootstrap /ip4/127.0.0.1/tcp/4003 --name a --cpu 2 --memory 512 --gpu 1 \
             --custom licence=2 --custom disk=0.5 --identity id.key \
             --allow-remote-registration --stop-on-stdin-eof --log-format json \
             --drain-timeout 2.5",
        )
        .expect("parses");
        assert_eq!(run.drain_timeout, Duration::from_millis(2500));
        assert_eq!(run.key, KeyChoice::Insecure);
        assert_eq!(run.listen.to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(run.bootstrap.len(), 2);
        assert_eq!(run.name.as_deref(), Some("a"));
        assert_eq!((run.cpu, run.memory, run.gpu), (2, 512, 1));
        assert_eq!(run.identity, Some(PathBuf::from("id.key")));
        assert!(run.allow_remote_registration && run.stop_on_stdin_eof);
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
        let run = run_args("run --key cluster.key").expect("parses");
        assert_eq!(run.key, KeyChoice::File("cluster.key".into()));
        assert_eq!(run.listen.to_string(), DEFAULT_LISTEN);
        assert!(run.cpu >= 1);
        assert_eq!(run.capabilities(), Resources::new().cpu(run.cpu));
        assert!(!run.stop_on_stdin_eof && !run.allow_remote_registration);
        assert_eq!(run.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
        // Zero amounts are not announced.
        let run = run_args("run --insecure --cpu 0 --memory 0 --custom x=0").expect("parses");
        assert_eq!(run.capabilities(), Resources::new().cpu(0));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let error = run_args("run --insecure --gpu lots").expect_err("not a number");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let text = error.to_string();
        assert!(text.contains("--gpu") && text.contains("lots"), "{text}");
        let error = run_args("run --insecure --drain-timeout=-1").expect_err("negative");
        assert!(error.to_string().contains("--drain-timeout"), "{error}");
        for (line, kind) in [
            (
                "run --insecure --name",
                clap::error::ErrorKind::InvalidValue,
            ),
            ("launch", clap::error::ErrorKind::InvalidSubcommand),
            (
                "",
                clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
            ),
            ("keygen", clap::error::ErrorKind::MissingRequiredArgument),
            ("keygen a b", clap::error::ErrorKind::UnknownArgument),
            (
                "status --insecure",
                clap::error::ErrorKind::MissingRequiredArgument,
            ),
        ] {
            let error = parse(line).expect_err(line);
            assert_eq!(error.kind(), kind, "{line}: {error}");
        }
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
            "licence=9e15",
            "cpu=2",
            "gpu=1",
        ] {
            let error = run_args(&format!("run --insecure --custom {bad}")).expect_err(bad);
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
            assert!(error.to_string().contains("--custom"), "{bad}: {error}");
        }
        let error = run_args("run --insecure --custom a=1 --custom a=2").expect_err("twice");
        assert!(
            error
                .to_string()
                .contains("`--custom a=...` is given twice"),
            "{error}"
        );
    }

    #[test]
    fn arguments_that_are_not_unicode_are_refused() {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = OsString::from_vec(vec![b'r', 0xff]);
            let code = main_from(
                [OsString::from("node"), OsString::from("run"), bad],
                || -> Result<Registry, RegisterError> { panic!("never built") },
            );
            assert_eq!(code, ExitCode::from(2));
        }
    }

    #[test]
    fn the_help_names_every_flag_and_its_environment_variable() {
        let mut command = Cli::command();
        command.build();
        let run = command
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help();
        let text = run.to_string();
        for flag in [
            "--key",
            "--key-env",
            "--insecure",
            "--allow-shared-key",
            "--listen",
            "--bootstrap",
            "--name",
            "--cpu",
            "--memory",
            "--gpu",
            "--custom",
            "--identity",
            "--allow-remote-registration",
            "--stop-on-stdin-eof",
            "--log-format",
        ] {
            assert!(text.contains(flag), "{flag} in {text}");
        }
        for variable in [
            "HANDOFF_KEY_FILE",
            "HANDOFF_LISTEN",
            "HANDOFF_BOOTSTRAP",
            "HANDOFF_NAME",
            "HANDOFF_CPU",
            "HANDOFF_MEMORY",
            "HANDOFF_GPU",
            "HANDOFF_IDENTITY",
            "HANDOFF_LOG_FORMAT",
        ] {
            assert!(text.contains(variable), "{variable} in {text}");
        }
    }
}
