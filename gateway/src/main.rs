//! `gateway`: the real-time messaging gateway. See the README for the protocol and operations.

use anyhow::{Context, Result};
use broker_config::Config;
use clap::{Parser, Subcommand};
use gateway::data_dir::DataDir;
use gateway::front::listener::{self, MqttListenerKind};
use gateway::gateway::Gateway;
use gateway::{api, dev_cert, front, token};
use protocol::envelope::Platform;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::net::TcpListener;

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

fn main() -> ExitCode {
    delay_returning_memory();
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
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(serve(config, &place.data_dir))?;
            Ok(ExitCode::SUCCESS)
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
                Some(text) => api::tokens::parse_ttl(&text).map_err(anyhow::Error::msg)?,
                None => config.auth.default_token_ttl,
            };
            let signer = token::TokenSigner::new(&gateway::gateway::token_secret(&config, &data)?);
            let (token, _) = signer.sign(&user, &device, platform, ttl)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey => {
            let config = load_config(place.config.as_deref())?;
            let data = DataDir::open(&place.data_dir)?;
            println!("{}", gateway::gateway::api_keys(&config, &data)?[0]);
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
        // The embedded store's engine logs every flush at info; keep it to warnings.
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!("{level},fjall=warn,lsm_tree=warn"))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn bind(name: &str, addr: SocketAddr, backlog: u32) -> Result<TcpListener> {
    let listening = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As std's and tokio's own `bind` do: a restarted gateway must not wait out TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listening()
        .with_context(|| format!("cannot listen for {name} on {addr} (set listeners.{name})"))
}

async fn serve(config: Config, data_dir: &Path) -> Result<()> {
    let data = DataDir::open(data_dir)?;
    let gw = Gateway::new(config, &data).await?;
    let listeners = gw.config.listeners.clone();
    let mut bound = serde_json::Map::new();

    let mut mqtt_listeners = vec![
        ("mqtt", listeners.mqtt, MqttListenerKind::Tcp),
        ("mqtt_ws", listeners.mqtt_ws, MqttListenerKind::WebSocket),
    ];
    if let Some((cert, key)) = gw.config.tls.pair() {
        let acceptor = front::tls::acceptor(cert, key)?;
        mqtt_listeners.push((
            "mqtt_tls",
            listeners.mqtt_tls,
            MqttListenerKind::Tls(acceptor.clone()),
        ));
        mqtt_listeners.push((
            "mqtt_wss",
            listeners.mqtt_wss,
            MqttListenerKind::SecureWebSocket(acceptor),
        ));
    }
    for (name, addr, kind) in mqtt_listeners {
        let listener = bind(name, addr, listeners.backlog)?;
        bound.insert(name.into(), listener.local_addr()?.to_string().into());
        tokio::spawn(listener::run(gw.clone(), listener, kind));
    }
    let http = bind("http", listeners.http, listeners.backlog)?;
    bound.insert("http".into(), http.local_addr()?.to_string().into());
    tokio::spawn(front::http_listener::run(
        gw.clone(),
        http,
        api::router(gw.clone()),
    ));

    tracing::info!(listening = ?bound, data_dir = %data_dir.display(), "gateway started");
    // One machine-readable line on stdout, so scripts and tests learn the bound ports.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::json!({ "listening": bound }))?;
    stdout.flush()?;
    drop(stdout);

    tokio::spawn(sweep(gw.clone()));
    tokio::spawn(gw.notifications.worker.clone().run());
    if let Some(cluster) = &gw.cluster {
        tokio::spawn(cluster.clone().run_inbound(gw.clone()));
        tokio::spawn(cluster.clone().run_heartbeat(gw.clone()));
    }

    shutdown_signal().await;
    tracing::info!("shutting down: closing sessions");
    gw.sessions.close_all();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    if let Some(recorder) = gw.recorder.clone() {
        // The sessions closed above have recorded their disconnects; write them out.
        tokio::task::spawn_blocking(move || recorder.finish()).await?;
    }
    Ok(())
}

/// Cuts messages past `roaming.retention_age`, purges deleted conversations, and removes
/// expired dedup claims and notification records past `notify.record_retention`, every
/// `roaming.sweep_interval`.
async fn sweep(gw: std::sync::Arc<Gateway>) {
    let roaming = gw.config.roaming.clone();
    let mut every = tokio::time::interval(roaming.sweep_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = gateway::session_handle::unix_millis();
        let records_before =
            now.saturating_sub(gw.config.notify.record_retention.as_millis() as u64);
        match gw.notifications.ledger.sweep(now, records_before).await {
            Ok(swept) if swept != Default::default() => {
                tracing::info!(
                    claims = swept.claims,
                    records = swept.records,
                    "notification ledger swept"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("notification ledger sweep failed: {e}"),
        }
        let cutoff = now.saturating_sub(roaming.retention_age.as_millis() as u64);
        match gw.store.sweep(cutoff).await {
            Ok(report) if report != Default::default() => {
                tracing::info!(
                    expired = report.expired,
                    purged = report.purged_contacts,
                    "store swept"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("store sweep failed: {e}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
