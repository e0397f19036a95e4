//! `loadtest`: drives the gateway, or a plain MQTT broker such as mosquitto, with pub/sub
//! traffic or idle connections, and reports throughput, latency, losses and broker memory; and
//! measures the gateway's message store (durable appends) and devices' catch-up after being
//! offline.
//!
//! Exit status: 0 when every check passed, 1 when a check failed (lost QoS 1 messages, failed
//! connections, …), 2 when the run could not be carried out at all.

mod batch_publisher;
mod catchup;
mod compare;
mod connect;
mod device;
mod fanout;
mod messages_api;
mod mosquitto;
mod notify;
mod pacer;
mod payload;
mod plot;
mod procfs;
mod progress;
mod pubsub;
mod replay;
mod report;
mod roam;
mod seq;
mod session_device;
mod stages;
mod stop;
mod store_bench;
mod target;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gateway::infra::allocator;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load generator for the gateway and for plain MQTT brokers"
)]
struct Cli {
    /// Also write the full result, every number, as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw the latency distribution and the throughput over time as SVG to this file
    /// (scenarios that measure latency).
    #[arg(long, global = true, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publishers send to subscribers: throughput, end-to-end latency, losses.
    Pubsub(pubsub::PubsubCmd),
    /// Users with several devices (MQTT and JSON WebSocket) each get messages from the API and
    /// from devices: delivery to every device, latency, losses.
    Fanout(fanout::FanoutCmd),
    /// A reconnect storm: devices drop, messages pile up, all reconnect at once and sync (or,
    /// with --sessions, get them from their persistent MQTT sessions); time until all caught
    /// up, and nothing missing or repeated.
    Roam(roam::RoamCmd),
    /// Many idle connections: connect rate, failures, broker memory per connection.
    Connect(connect::ConnectCmd),
    /// The gateway against mosquitto, alternating over rounds: medians and ratios.
    Compare(compare::CompareCmd),
    /// A message store opened directly, without the gateway: durable appends per second.
    Store(store_bench::StoreCmd),
    /// A device catching up on messages it missed: time from sync request to last page.
    Catchup(catchup::CatchupCmd),
    /// Test doubles of the WeChat and 球球 push APIs, until Ctrl-C (prints their addresses).
    MockChannels(loadtest::mock_channels::MockChannelsCmd),
    /// Notification routing: decisions per second, or a burst paced by the channels' rate limit.
    Notify(notify::NotifyCmd),
    /// A traffic recording made by the gateway, played back with its timing scaled by --speed.
    Replay(replay::ReplayCmd),
}

impl Command {
    /// The port of the broker under test, whose CPU and memory the run reports.
    fn broker_port(&self) -> Option<u16> {
        match self {
            Self::Pubsub(cmd) => Some(cmd.target.endpoint.mqtt.port()),
            Self::Fanout(cmd) => Some(cmd.endpoint.mqtt.port()),
            Self::Roam(cmd) => Some(cmd.endpoint.mqtt.port()),
            Self::Connect(cmd) => Some(cmd.target.endpoint.mqtt.port()),
            Self::Catchup(cmd) => Some(cmd.endpoint.mqtt.port()),
            Self::Replay(cmd) => Some(cmd.endpoint.mqtt.port()),
            Self::Compare(_) | Self::Store(_) | Self::MockChannels(_) | Self::Notify(_) => None,
        }
    }
}

/// The gateway's allocator, tuned as the gateway tunes it: `store` runs the gateway's message
/// store in this process, and must measure it as the gateway runs it.
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the chosen scenario; `Ok(false)` when one of its checks failed.
async fn run(cli: Cli) -> Result<bool> {
    let files = report::Files {
        json: cli.json.as_deref(),
        plot: cli.plot.as_deref(),
        watch: report::RunWatch::start(cli.command.broker_port()),
    };
    match &cli.command {
        Command::Pubsub(cmd) => files.finish(&pubsub::run_cmd(cmd).await?),
        Command::Fanout(cmd) => files.finish(&fanout::run_cmd(cmd).await?),
        Command::Roam(cmd) => files.finish(&roam::run_cmd(cmd).await?),
        Command::Connect(cmd) => files.finish(&connect::run_cmd(cmd).await?),
        Command::Compare(cmd) => files.finish(&compare::run_cmd(cmd).await?),
        Command::Store(cmd) => files.finish(&store_bench::run_cmd(cmd).await?),
        Command::Catchup(cmd) => files.finish(&catchup::run_cmd(cmd).await?),
        Command::MockChannels(cmd) => loadtest::mock_channels::run_cmd(cmd).await,
        Command::Notify(cmd) => notify::run(cmd, &files).await,
        Command::Replay(cmd) => files.finish(&replay::run_cmd(cmd).await?),
    }
}
