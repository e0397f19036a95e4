//! `gateway`: the real-time messaging gateway. See the README for the protocol and operations.

use anyhow::{Context, Result};
use broker_config::Config;
use clap::{Parser, Subcommand};
use gateway::api::tokens::parse_ttl;
use gateway::app::{App, Stopped};
use gateway::auth::secrets;
use gateway::front::dev_cert;
use gateway::infra::allocator;
use gateway::infra::data_dir::DataDir;
use protocol::envelope::Platform;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The allocator the gateway's code is measured and tuned on (see `infra::allocator`).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Real-time messaging gateway: MQTT, JSON WebSocket, HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    place: Place,
}

/// Where the configuration and the data live. Shared by every command that needs them.
#[derive(clap::Args, Clone)]
struct Place {
    /// Configuration file (TOML). Without one, every setting has its default.
    #[arg(long, global = true, env = "GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for generated secrets and stored state.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default command).
    Serve,
    /// Check a configuration file and report every error with its key.
    CheckConfig { file: PathBuf },
    /// Print a signed device token.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        device: String,
        #[arg(long, default_value = "android", value_parser = parse_platform)]
        platform: Platform,
        /// Lifetime such as 24h or 30m (default: auth.default_token_ttl).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Print the backend API key (generated into the data dir when none is configured).
    ApiKey,
    /// Write a self-signed TLS certificate and key (cert.pem, key.pem) for local use.
    DevCert {
        /// Directory to write into (default: the data dir).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Host names and addresses the certificate is valid for.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1"])]
        hosts: Vec<String>,
    },
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| "expected ios, android, web or desktop".to_string())
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let place = cli.place;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Serve => {
            let config = load_config(place.config.as_deref())?;
            init_logging(&config.log.level);
            // Blocking work (the embedded store's reads, sessions and retained messages) runs on
            // a pool of bounded size: a reconnect storm must not start hundreds of threads,
            // each with an allocator heap of its own, to wait on two cores.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(config.limits.blocking_threads)
                .build()
                .context("starting the runtime")?;
            let stopped = runtime.block_on(serve(config, &place.data_dir))?;
            // Tasks that did not finish within the grace are not waited for again.
            runtime.shutdown_background();
            Ok(match stopped {
                Stopped::Drained => ExitCode::SUCCESS,
                Stopped::GraceExpired => ExitCode::FAILURE,
                Stopped::Failed(reason) => {
                    eprintln!("error: {reason}");
                    ExitCode::from(gateway::infra::fatal::EXIT_CODE)
                }
            })
        }
        Command::Token {
            user,
            device,
            platform,
            ttl,
        } => {
            let config = load_config(place.config.as_deref())?;
            let data = DataDir::open(&place.data_dir)?;
            let ttl = match ttl {
                Some(text) => parse_ttl(&text).map_err(anyhow::Error::msg)?,
                None => config.auth.default_token_ttl,
            };
            let signer = secrets::token_signer(&config, &data)?;
            let (token, _) = signer.sign(&user, &device, platform, ttl)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey => {
            let config = load_config(place.config.as_deref())?;
            let data = DataDir::open(&place.data_dir)?;
            println!("{}", secrets::api_keys(&config, &data)?.first());
            Ok(ExitCode::SUCCESS)
        }
        Command::DevCert { out_dir, hosts } => {
            let dir = out_dir.unwrap_or(place.data_dir);
            let (cert, key) = dev_cert::write(&dir, hosts)?;
            println!("wrote {} and {}", cert.display(), key.display());
            println!("use them with:\n[tls]\ncert = {:?}\nkey = {:?}", cert, key);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(file: Option<&Path>) -> Result<Config> {
    Config::load(file, std::env::vars()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(Some(file), std::env::vars()) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                println!("{}: {e}", file.display());
            }
            println!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The embedded store's engine logs every flush at info; keep it to warnings. The Redis
        // Cluster client warns of every attempt to reach a node that is down (hundreds a second
        // during a failover); the gateway's own warnings name the outage, once per failed request.
        .or_else(|_| {
            let quiet = "fjall=warn,lsm_tree=warn,redis=error";
            tracing_subscriber::EnvFilter::try_new(format!("{level},{quiet}"))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Serves until SIGTERM or Ctrl-C, then shuts down (see [`App::serve`]).
async fn serve(config: Config, data_dir: &Path) -> Result<Stopped> {
    let data = DataDir::open(data_dir)?;
    App::build(config, &data).await?.serve(data_dir).await
}
