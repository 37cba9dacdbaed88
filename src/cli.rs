//! The command line, as close to the flags as possible. [`crate::run`]
//! turns it into a validated [`crate::deploy::Options`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tack",
    version,
    about = "Deploy components incrementally, and say why"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy ENV's components that belong on this machine.
    Local(LocalArgs),
    /// Deploy every host of ENV as its `connect_method` says: over ssh,
    /// each host at once, or here (as `local`).
    Deploy(DeployArgs),
    /// What `local` would do and why: `local --dry-run --explain`.
    Explain(ExplainArgs),
    /// Print the node graph of ENV as Graphviz dot.
    Graph(GraphArgs),
    /// Inspect and maintain the step cache.
    Cache(CacheArgs),
    /// Print a completion script for SHELL, e.g.
    /// `tack completions bash > ~/.local/share/bash-completion/completions/tack`.
    Completions {
        /// The shell to complete in.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Edit, show and re-encrypt the age-encrypted secrets of `secrets/`.
    Secrets(SecretsArgs),
    /// The far end of an ssh session: speaks tack's framed protocol on
    /// stdin and stdout. Started by tack itself, never by hand.
    #[command(hide = true)]
    Agent,
    /// Start tack's agent on HOST over ssh (uploading this binary if HOST
    /// lacks it), ping it and say what happened: a check of the transport.
    #[command(hide = true)]
    SshPing(SshPingArgs),
}

#[derive(Debug, Args)]
pub struct SshPingArgs {
    /// An ssh destination.
    #[arg(value_name = "HOST")]
    pub host: String,
    /// The ssh config file (`ssh -F`).
    #[arg(short = 'F', long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Give up connecting after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value = "10")]
    pub connect_timeout: u64,
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
    /// The deployment directory.
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DIR",
        default_value = ".",
        global = true
    )]
    pub dir: PathBuf,
    /// Decrypt with the age identities (or ssh key) in FILE (default:
    /// `TACK_AGE_IDENTITY`, else `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`).
    #[arg(long, value_name = "FILE", global = true)]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Decrypt ENV's secrets into a private temporary file, run `$EDITOR`,
    /// check the result and encrypt it to every recipient.
    Edit {
        #[arg(value_parser = environment_name)]
        env: String,
        /// Edit `secrets/ENV/NAME.age` (used as `source = secret:NAME`).
        #[arg(long, value_name = "NAME", value_parser = secret_file_name)]
        file: Option<String>,
    },
    /// Print ENV's decrypted secrets.
    Show {
        #[arg(value_parser = environment_name)]
        env: String,
        /// Print `secrets/ENV/NAME.age`.
        #[arg(long, value_name = "NAME", value_parser = secret_file_name)]
        file: Option<String>,
    },
    /// Encrypt ENV's secrets (every environment's without ENV) again to
    /// the recipients now in `secrets/recipients.txt`.
    Reencrypt {
        #[arg(value_parser = environment_name)]
        env: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
    /// The cache directory (default: `.tack/cache` of the deployment in
    /// `-C DIR`; also `TACK_CACHE_DIR`).
    #[arg(long, value_name = "DIR", env = "TACK_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// The deployment directory whose `.tack/cache` to use.
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DIR",
        default_value = ".",
        global = true
    )]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// How many entries and bytes the cache holds.
    Stats,
    /// Re-hash every blob and check every record; report what is corrupt.
    Verify,
    /// Evict least recently used entries until the cache fits SIZE
    /// (e.g. `500M`, `2G`).
    Gc {
        /// The most the cache may hold: bytes, or with K, M, G or T
        /// (`500M`, `2G`).
        #[arg(long, value_name = "SIZE")]
        max_size: String,
    },
    /// Write every valid entry into one archive file.
    Export {
        /// The archive to write (replaced if it exists).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Add the entries of an archive file (verified) to the cache.
    Import {
        /// An archive written by `tack cache export`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// The environment: `environments/ENV.cfg`.
    #[arg(value_parser = environment_name)]
    pub env: String,
    /// The deployment directory.
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DIR",
        default_value = "."
    )]
    pub dir: PathBuf,
    /// Only this host of the environment; repeat for several (default:
    /// every host for `deploy` and with `connect_method = local`, else the
    /// hosts that are this machine).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Decrypt `secrets/` with the age identities (or ssh key) in FILE
    /// (default: `TACK_AGE_IDENTITY`, else `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl Target {
    /// The hosts asked for, as one value the manifest remembers (a run
    /// with other hosts takes the full path): `None` without `--host`.
    pub fn host_choice(&self) -> Option<String> {
        (!self.hosts.is_empty()).then(|| self.hosts.join(","))
    }
}

#[derive(Debug, Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub target: Target,
    /// Show what would change; change nothing, state included.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print under each node why it runs, down to the value that changed.
    #[arg(long)]
    pub explain: bool,
    /// Show a unified diff of changed text files (never of sensitive ones).
    #[arg(long)]
    pub diff: bool,
    /// Run at most N nodes at once (default: the number of cores).
    #[arg(
        long,
        short = 'j',
        value_name = "N",
        value_parser = at_least_one
    )]
    pub jobs: Option<usize>,
    /// Share step outputs through this cache directory (default:
    /// `.tack/cache`; also `TACK_CACHE_DIR`).
    #[arg(long, value_name = "DIR", env = "TACK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not restore step outputs from the cache: a step that has to run
    /// runs, and its cache entry is written anew (an up-to-date step still
    /// does not run; `--force` it for that).
    #[arg(long)]
    pub no_cache_read: bool,
    /// Disown every cache entry written under another salt (also
    /// `TACK_CACHE_SALT`).
    #[arg(long, value_name = "SALT", env = "TACK_CACHE_SALT")]
    pub cache_salt: Option<String>,
    /// Remove what nodes that are no longer configured left on this host
    /// (only what tack made there and nobody changed since).
    #[arg(long)]
    pub prune: bool,
    /// Give up after waiting this many seconds for another tack deploying
    /// the same directory (default: wait).
    #[arg(long, value_name = "SECONDS")]
    pub lock_timeout: Option<u64>,
    /// `text` (batou-style lines) or `json` (one report at the end).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Run this node even if it is up to date: a node id such as
    /// `tick/file:tick.sh`, or a component name for all of its nodes.
    #[arg(long, value_name = "NODE")]
    pub force: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Set up at most N ssh sessions at a time (default: all at once);
    /// once connected, every host deploys at once, ordered where one
    /// requires from another.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub host_jobs: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this node (an id such as `tick/file:tick.sh`) or component.
    pub node: Option<String>,
    /// Show a unified diff of changed text files as well.
    #[arg(long)]
    pub diff: bool,
    /// `text` (lines with reasons) or `json` (one report at the end).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub target: Target,
}

/// An environment is named like a host or component: `../../x` would read
/// a file outside `environments/` and keep state outside `.tack/state/`.
fn environment_name(name: &str) -> Result<String, String> {
    if crate::environment::is_name(name) {
        Ok(name.to_string())
    } else {
        Err("an environment name has only letters, digits, `-` and `_`".to_string())
    }
}

/// A secret file's name stays inside `secrets/ENV/`.
fn secret_file_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        Err("a secret file's name is a plain file name, without `/`".to_string())
    } else {
        Ok(name.to_string())
    }
}

/// `--jobs 0` asks for nothing to run at once; rather than guess what was
/// meant (it used to run as `--jobs 1`), refuse it.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(error) => Err(error.to_string()),
    }
}
