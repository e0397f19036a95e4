//! `gateway`: the real-time messaging gateway. See the README for the protocol and operations.

use anyhow::{Context, Result};
use broker_config::Config;
use clap::{Parser, Subcommand};
use gateway::api::tokens::parse_ttl;
use gateway::app::{App, Stopped};
use gateway::auth::secrets;
use gateway::front::dev_cert;
use gateway::infra::data_dir::DataDir;
use protocol::envelope::Platform;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: a message's way through the gateway allocates and
/// frees many small buffers on several threads, and glibc's malloc and free were 15% of the
/// gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3): how long freed memory is kept before it
/// is returned to the system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory is returned to the system after a second instead of mimalloc's 10 ms: under load
/// the gateway frees and reallocates the same memory (request buffers, batches, memtables) again
/// within milliseconds, and each return made the next use fault the pages in and zero them again,
/// ~6% of its CPU while routing notifications (+7% decisions/s in alternated runs, the same
/// resident memory). `MIMALLOC_PURGE_DELAY` in the environment still decides when set.
fn delay_returning_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option of the allocator this program runs on, before any thread
        // but this one exists; the option is read on every purge and may change at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

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

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` is set (then
/// mimalloc's own option decides). mimalloc asks the kernel for 2 MiB pages under its arenas, and
/// where the kernel honours that (THP `madvise` or `always`), a few bytes written in a fresh part
/// of an arena make 2 MiB resident: an idle connection with a persistent session held ~8.3 KB
/// with them and ~6.9 KB without (19,000 connections). Redis turns them off for itself as well.
/// Pages faulted in before this call (the runtime's own, before `main`) keep what they got.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes integers only and sets a flag of this process, read
        // by the kernel when it backs a page.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

fn main() -> ExitCode {
    delay_returning_memory();
    without_huge_pages();
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
