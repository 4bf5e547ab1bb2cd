//! `kiln`: the server and its administration commands.
#![forbid(unsafe_code)]

mod accounts;
mod base_images;
mod client;
mod datasets;
mod eval;
mod files;
mod images;
mod instances;
mod mcp;
mod nodes;
mod orgs;
mod ports;
mod pull_dataset;
mod snapshots;
mod swebench;
mod telemetry;
mod validate;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use kiln_config::{Config, Overrides};
use kiln_services::Kiln;

/// The static in-sandbox agent, built by build.rs (empty when the build skipped it).
static EMBEDDED_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kiln-agent"));

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Sandboxed environments for coding agents, graded like SWE-bench"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// A TOML configuration file (layered over the defaults, under KILN_* variables).
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Where Kiln keeps its state [default: .kiln; env: KILN_DATA_DIR].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the Codeset API under /api/v1).
    Serve {
        /// Address to listen on [default: 127.0.0.1:8000; env: KILN_LISTEN].
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the effective configuration (secrets masked).
    Config,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Password accounts: links of mails not sent over SMTP.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Manage datasets.
    #[command(subcommand)]
    Datasets(datasets::DatasetsCommand),
    /// Manage users' credits (the billing ledger).
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Manage environment images.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Evaluate a model's predictions on a dataset as the SWE-bench harness does, with
    /// its outputs (logs/run_evaluation/…, <model>.<run_id>.json); resumable by run id.
    Eval(eval::EvalArgs),
    /// Create, list and close sessions on a running server.
    Sessions {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: client::SessionsCommand,
    },
    /// MCP over stdio for a local agent, relayed to a running server's /mcp with an API key.
    Mcp {
        #[command(flatten)]
        server: client::Server,
    },
    /// Read, write and list an instance's files on a running server.
    Files {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: files::FilesCommand,
    },
    /// Create, list, show, change and delete instances (`/v1/instances`) on a running server.
    Instances {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: instances::InstancesCommand,
    },
    /// The servers (nodes) sharing a PostgreSQL: list, drain (admins).
    Nodes {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: nodes::NodesCommand,
    },
    /// Your organizations on a running server: list, create, invite, default.
    Orgs {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: orgs::OrgsCommand,
    },
    /// Run a command in a session on a running server; exits with its exit code.
    Exec {
        #[command(flatten)]
        server: client::Server,
        session: String,
        /// Seconds before the command is killed (exit code 124).
        #[arg(long)]
        timeout: Option<u32>,
        /// Through the instance API's stream: output as it comes (resumed if the
        /// connection drops), beside the session's own commands.
        #[arg(long)]
        stream: bool,
        /// The command (joined with spaces and run by bash).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Base image families on a running server: list, prepare, promote, abort, rollback,
    /// delete (`/v1/base-images`; changes need an admin's key).
    BaseImages {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: base_images::BaseImagesCommand,
    },
    /// Snapshots, checkpoints and rollback of an instance on a running server.
    Snapshot {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: snapshots::SnapshotCommand,
    },
    /// Fork an instance on a running server into COUNT copies; prints their ids once ready.
    Fork {
        #[command(flatten)]
        server: client::Server,
        instance: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Reach a service inside an instance on a running server: open, list, close forwards.
    Ports {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: ports::PortsCommand,
    },
    /// Your webhooks on a running server: create, list, update, delete, deliveries,
    /// retry, test.
    Webhooks {
        #[command(flatten)]
        server: client::Server,
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user and print its id.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Credit cents to a user's balance (a deposit no payment backs); prints the new balance.
    Grant {
        /// The user's id (usr_…).
        #[arg(long)]
        user: String,
        /// How much, in cents (at least 1).
        #[arg(long)]
        cents: i64,
        /// Shown in the user's usage history.
        #[arg(long)]
        description: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Mint an API key for a user and print it (it is shown only this once).
    Create {
        /// The user's id (usr_…).
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let overrides = Overrides {
        listen,
        data_dir: cli.global.data_dir.clone(),
    };
    let config = match Config::load(cli.global.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kiln: {e}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. });
    let telemetry = match telemetry::init(&config, serving) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config => {
            print!("{}", config.to_masked_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { .. } => serve(config).await,
        Command::Users(UsersCommand::Create { name, email, admin }) => {
            let kiln = Kiln::open(config).await?;
            let user = kiln.auth.create_user(&name, &email, admin).await?;
            println!("{}", user.user_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Create { user, name }) => {
            let kiln = Kiln::open(config).await?;
            if kiln.auth.get_user(&user).await?.is_none() {
                bail!("no user with id {user:?} (create one with `kiln users create`)");
            }
            let key = kiln.auth.create_api_key(&user, name).await?;
            println!("{}", key.secret);
            Ok(ExitCode::SUCCESS)
        }
        Command::Credits(CreditsCommand::Grant {
            user,
            cents,
            description,
        }) => {
            let kiln = Kiln::open(config).await?;
            if kiln.auth.get_user(&user).await?.is_none() {
                bail!("no user with id {user:?} (create one with `kiln users create`)");
            }
            if cents < 1 {
                bail!("--cents must be at least 1");
            }
            let granted = kiln.billing.grant(&user, cents, description).await?;
            let balance = kiln.billing.balance(&user).await?;
            println!(
                "granted {} cents to {user} ({}); balance {} cents",
                granted.amount_cents, granted.transaction_id, balance.balance_cents
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Datasets(command) => datasets::run(config, command).await,
        Command::Images(command) => images::run(&config, command).await,
        Command::Accounts(command) => {
            accounts::run(config, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions { server, command } => client::sessions(&config, server, command).await,
        Command::Files { server, command } => files::run(&config, server, command).await,
        Command::Mcp { server } => mcp::run(&config, server).await,
        Command::Instances { server, command } => instances::run(&config, server, command).await,
        Command::Nodes { server, command } => nodes::run(&config, server, command).await,
        Command::Orgs { server, command } => orgs::run(&config, server, command).await,
        Command::Exec {
            server,
            session,
            timeout,
            stream,
            command,
        } => client::exec(&config, server, &session, timeout, &command, stream).await,
        Command::BaseImages { server, command } => base_images::run(&config, server, command).await,
        Command::Snapshot { server, command } => {
            snapshots::snapshot(&config, server, command).await
        }
        Command::Fork {
            server,
            instance,
            count,
        } => snapshots::fork(&config, server, &instance, count).await,
        Command::Ports { server, command } => ports::run(&config, server, command).await,
        Command::Webhooks { server, command } => webhooks::run(&config, server, command).await,
        Command::Eval(args) => eval::run(config, args).await,
    }
}

/// Uses the agent built into this binary unless one is configured: written once into
/// the data directory (rewritten only when this build's differs).
pub(crate) fn install_embedded_agent(config: &mut Config) -> anyhow::Result<()> {
    if config.runtime.agent_binary.is_some()
        || std::env::var_os("KILN_AGENT_BIN").is_some()
        || EMBEDDED_AGENT.is_empty()
    {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = config.data_dir.join("bin");
    let path = dir.join("kiln-agent");
    if std::fs::read(&path).ok().as_deref() != Some(EMBEDDED_AGENT) {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = dir.join("kiln-agent.tmp");
        std::fs::write(&tmp, EMBEDDED_AGENT)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &path)?;
    }
    config.runtime.agent_binary = Some(path);
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<ExitCode> {
    fit_connections_to_fd_limit(&mut config);
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    install_embedded_agent(&mut config)?;
    // Before anything starts (a node registers in `bootstrap`): a TLS file that cannot
    // be used stops the start, rather than every handshake or hop later.
    kiln_api::tls::check(&config).context("cannot start")?;
    let scheme = if config.server.tls() { "https" } else { "http" };
    let kiln = Kiln::open(config).await.context("cannot start")?;
    let report = kiln.bootstrap().await.context("cannot prepare the store")?;
    match &report.sessions_unavailable {
        Some(why) => {
            tracing::warn!("sessions are disabled: {why}");
            println!("Sessions are disabled: {why}");
        }
        None => {
            let r = &report.recovery;
            tracing::info!(
                resumed = r.sessions_resumed,
                ended = r.sessions_ended,
                sandboxes_removed = r.sandboxes_removed,
                interactions_failed = r.interactions_failed,
                "sessions recovered"
            );
        }
    }
    if let Some(key) = &report.admin_key {
        println!(
            "Created the admin user. Its API key (shown once; also in {}):",
            data_dir.join("admin.key").display()
        );
        println!();
        println!("    {key}");
        println!();
    }
    if kiln.config.build_demo_images
        && kiln.config.load_demo_dataset
        && report.sessions_unavailable.is_none()
    {
        images::spawn_demo_build(&kiln.config);
    }
    if report.demo_samples_loaded > 0 {
        tracing::info!(
            samples = report.demo_samples_loaded,
            "loaded the kiln-demo dataset"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, store = kiln.store_backend(), data_dir = %data_dir.display(), "kiln is serving");
    let stop = shutdown_signal();
    println!(
        "Kiln is serving on {scheme}://{local}/api/v1 (dashboard: {scheme}://{local}/, docs: {scheme}://{local}/docs)"
    );
    let kiln = Arc::new(kiln);
    kiln_api::serve(kiln.clone(), listener, stop).await?;
    kiln.shutdown().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, then keeps `server.max_connections`
/// under half of it, so the connection cap binds before the descriptors run out (the
/// other half is for sandboxes, the store and files).
fn fit_connections_to_fd_limit(config: &mut Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            // An unlimited hard limit still cannot pass the kernel's nr_open (2^20 by default).
            let want = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
            if soft < want {
                match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                    Ok(()) => want,
                    Err(e) => {
                        tracing::warn!(error = %e, soft, hard, "cannot raise the file descriptor limit");
                        soft
                    }
                }
            } else {
                soft
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the file descriptor limit");
            return;
        }
    };
    let fit = usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1);
    let server = &mut config.server;
    if server.max_connections > fit {
        tracing::warn!(
            configured = server.max_connections,
            fd_limit = limit,
            "server.max_connections lowered to {fit}, half the file descriptor limit"
        );
        server.max_connections = fit;
        server.max_connections_per_ip = server.max_connections_per_ip.min(fit);
    }
    tracing::info!(
        fd_limit = limit,
        max_connections = server.max_connections,
        max_connections_per_ip = server.max_connections_per_ip,
        "connection caps"
    );
}

/// Listens for SIGINT and SIGTERM from the moment it is called (not from its first poll):
/// a signal that arrives while the server starts must stop it gracefully, never kill it
/// with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for {name}");
            None
        }
    };
    let mut int = listen(SignalKind::interrupt(), "SIGINT");
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = recv_signal(int.as_mut()) => tracing::info!("SIGINT: shutting down"),
            () = recv_signal(term.as_mut()) => tracing::info!("SIGTERM: shutting down"),
        }
    }
}

async fn recv_signal(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
