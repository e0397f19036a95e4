//! Scenario `compare`: the same pub/sub (QoS 0, then QoS 1) and optionally connect load against
//! the gateway and against mosquitto, in one run, and a table of medians and ratios.
//!
//! Sides alternate within each round and the order flips every round (gateway first, then
//! mosquitto first, …), so slow drifts of the machine (thermal, page cache, other tenants) hit
//! both sides alike; medians over the rounds keep one noisy run from deciding the comparison.
//!
//! Memory per idle connection is the exception: a broker reuses the memory freed by earlier
//! load, so only the first measurement on a process counts. The connect scenario therefore runs
//! first in each round, and the summary takes its memory figure from round 1 only; for it to
//! mean anything the gateway must be freshly started.

use crate::connect::{self, ConnectLoad, ConnectResult};
use crate::mosquitto::Mosquitto;
use crate::pubsub::{self, PubsubLoad, PubsubResult};
use crate::report::{median, print_verdict, thousands, Outcome, Table};
use crate::target::{EndpointArgs, Target};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rumqttc::QoS;
use serde::Serialize;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Gateway,
    Mosquitto,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Mosquitto => "mosquitto",
        }
    }
}

/// Which brokers `compare` runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sides {
    /// The comparison proper.
    Both,
    /// Only the gateway, e.g. to check it before a full comparison.
    Gateway,
    /// Only mosquitto, e.g. to check the baseline setup.
    Mosquitto,
}

#[derive(Args, Debug)]
pub struct CompareCmd {
    #[command(flatten)]
    gateway: EndpointArgs,
    /// PID of the gateway, to measure its memory per idle connection.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Start /usr/sbin/mosquitto on a free loopback port, and stop it at the end.
    #[arg(long)]
    start_mosquitto: bool,
    /// A running mosquitto to compare against instead of starting one.
    #[arg(long, conflicts_with = "start_mosquitto")]
    mosquitto: Option<SocketAddr>,
    /// PID of the mosquitto given by --mosquitto, to measure its memory per idle connection.
    #[arg(long, requires = "mosquitto")]
    mosquitto_pid: Option<u32>,
    /// Rounds; each runs every scenario once on each side.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Brokers to run against.
    #[arg(long, value_enum, default_value_t = Sides::Both)]
    sides: Sides,
    #[command(flatten)]
    load: PubsubLoad,
    /// Also run QoS 0 and QoS 1 paced at this many messages per second in all (split over the
    /// publishers) on each side, for latency below saturation.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "paced_fraction")]
    paced_rate: Option<u64>,
    /// Also run QoS 0 and QoS 1 paced at this fraction of the gateway's median maximum rate for
    /// that QoS (e.g. 0.5), on each side, after all the full-speed rounds.
    #[arg(long)]
    paced_fraction: Option<f64>,
    /// Also run the connect scenario on each side.
    #[arg(long)]
    connect: bool,
    #[command(flatten)]
    connect_load: ConnectLoad,
    /// New connections per second in the connect scenario.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
    connect_rate: u64,
}

/// One side's results in one round.
#[derive(Debug, Serialize)]
pub struct SideRun {
    pub round: u32,
    pub side: Side,
    pub qos0: PubsubResult,
    pub qos1: PubsubResult,
    /// At `--paced-rate`, when given.
    pub paced_qos0: Option<PubsubResult>,
    pub paced_qos1: Option<PubsubResult>,
    pub connect: Option<ConnectResult>,
}

/// One metric's medians over the rounds.
#[derive(Debug, Serialize)]
pub struct SummaryRow {
    pub metric: &'static str,
    pub gateway: Option<f64>,
    pub mosquitto: Option<f64>,
    /// gateway / mosquitto.
    pub ratio: Option<f64>,
}

/// One stage of the gateway's durable path: the median over the rounds of its p99, per
/// pub/sub scenario (see [`SCENARIOS`]).
#[derive(Debug, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub p99_us: [Option<f64>; 4],
}

/// A pub/sub scenario of a round: its name and its result.
type Scenario = (&'static str, fn(&SideRun) -> Option<&PubsubResult>);

/// The pub/sub scenarios of a round, as the stage table's columns name them.
const SCENARIOS: [Scenario; 4] = [
    ("qos0", |r| Some(&r.qos0)),
    ("qos1", |r| Some(&r.qos1)),
    ("paced qos0", |r| r.paced_qos0.as_ref()),
    ("paced qos1", |r| r.paced_qos1.as_ref()),
];

#[derive(Debug, Serialize)]
pub struct CompareResult {
    pub rounds: u32,
    pub runs: Vec<SideRun>,
    pub summary: Vec<SummaryRow>,
    /// Where the gateway's time went, stage by stage (empty when it was not measured).
    pub gateway_stages: Vec<StageRow>,
    pub failed_checks: Vec<String>,
}

/// A broker under test and the process whose memory is measured.
struct Broker {
    side: Side,
    target: Target,
    pid: Option<u32>,
}

pub async fn run_cmd(cmd: &CompareCmd) -> Result<CompareResult> {
    let mut brokers = Vec::new();
    if cmd.sides != Sides::Mosquitto {
        brokers.push(Broker {
            side: Side::Gateway,
            target: Target::gateway(&cmd.gateway)?,
            pid: cmd.gateway_pid,
        });
    }
    let mut started = None;
    if cmd.sides != Sides::Gateway {
        let (addr, pid) = if cmd.start_mosquitto {
            let broker = Mosquitto::start().await?;
            let found = (broker.addr(), broker.pid());
            eprintln!("started mosquitto on {}", found.0);
            started = Some(broker);
            found
        } else if let Some(addr) = cmd.mosquitto {
            (addr, cmd.mosquitto_pid)
        } else {
            bail!("give --start-mosquitto or --mosquitto ADDR, or --sides gateway");
        };
        brokers.push(Broker {
            side: Side::Mosquitto,
            target: Target::mqtt(addr)?,
            pid,
        });
    }
    let result = compare(cmd, &brokers).await;
    if let Some(broker) = started {
        broker.stop().await;
    }
    result
}

async fn compare(cmd: &CompareCmd, brokers: &[Broker]) -> Result<CompareResult> {
    if cmd.paced_fraction.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
        bail!("--paced-fraction must be above 0 and at most 1");
    }
    let mut runs = Vec::new();
    for round in 1..=cmd.rounds {
        for broker in alternating(brokers, round) {
            runs.push(run_side(cmd, broker, round).await?);
        }
    }
    let gateway_median = |read: fn(&SideRun) -> f64| {
        median(
            runs.iter()
                .filter(|r| r.side == Side::Gateway)
                .map(read)
                .collect(),
        )
    };
    let paced_rates = match (cmd.paced_rate, cmd.paced_fraction) {
        (Some(rate), _) => Some((rate, rate)),
        (None, Some(fraction)) => {
            let qos0 = gateway_median(|r| r.qos0.delivered_rate)
                .context("--paced-fraction needs the gateway side")?;
            let qos1 = gateway_median(|r| r.qos1.delivered_rate).unwrap_or(qos0);
            Some(((qos0 * fraction) as u64, (qos1 * fraction) as u64))
        }
        (None, None) => None,
    };
    if let Some(rates) = paced_rates {
        for round in 1..=cmd.rounds {
            for broker in alternating(brokers, round) {
                let run = runs
                    .iter_mut()
                    .find(|r| r.round == round && r.side == broker.side)
                    .expect("every side ran every round");
                run_paced(cmd, broker, rates, run).await?;
            }
        }
    }
    let summary = summarize(&runs);
    let gateway_stages = stage_medians(&runs);
    let failed_checks = runs
        .iter()
        .flat_map(|run| {
            let prefix = format!("round {} {}", run.round, run.side.as_str());
            let paced = [&run.paced_qos0, &run.paced_qos1].into_iter().flatten();
            let pubsub_checks =
                [&run.qos0, &run.qos1]
                    .into_iter()
                    .chain(paced)
                    .flat_map(move |r| {
                        r.failed_checks
                            .iter()
                            .map(move |check| (format!("qos{}", r.qos), check))
                    });
            let connect_checks = run.connect.iter().flat_map(|c| {
                c.failed_checks
                    .iter()
                    .map(|check| ("connect".to_owned(), check))
            });
            pubsub_checks
                .chain(connect_checks)
                .map(move |(what, check)| format!("{prefix} {what}: {check}"))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(CompareResult {
        rounds: cmd.rounds,
        runs,
        summary,
        gateway_stages,
        failed_checks,
    })
}

async fn run_side(cmd: &CompareCmd, broker: &Broker, round: u32) -> Result<SideRun> {
    let name = format!("round {round} {}", broker.side.as_str());
    // Before any pub/sub traffic, so that round 1 measures memory on a fresh process.
    let connect = if cmd.connect {
        let result = connect::run(
            &broker.target,
            &connect::Destination::mqtt(&broker.target),
            &cmd.connect_load,
            cmd.connect_rate,
            broker.pid,
        )
        .await
        .with_context(|| format!("{name} connect"))?;
        eprintln!("{name}: {}", result.summary_line());
        Some(result)
    } else {
        None
    };
    let qos0 = pubsub::run(&broker.target, &cmd.load, QoS::AtMostOnce)
        .await
        .with_context(|| format!("{name} qos0"))?;
    eprintln!("{name}: {}", qos0.summary_line());
    let qos1 = pubsub::run(&broker.target, &cmd.load, QoS::AtLeastOnce)
        .await
        .with_context(|| format!("{name} qos1"))?;
    eprintln!("{name}: {}", qos1.summary_line());
    Ok(SideRun {
        round,
        side: broker.side,
        qos0,
        qos1,
        paced_qos0: None,
        paced_qos1: None,
        connect,
    })
}

/// The brokers in round `round`'s order: flipped every round so that neither side always goes
/// first.
fn alternating(brokers: &[Broker], round: u32) -> Vec<&Broker> {
    if round % 2 == 1 {
        brokers.iter().collect()
    } else {
        brokers.iter().rev().collect()
    }
}

/// QoS 0 and QoS 1 at the paced rates (messages per second in all), into `run`.
async fn run_paced(
    cmd: &CompareCmd,
    broker: &Broker,
    (qos0_rate, qos1_rate): (u64, u64),
    run: &mut SideRun,
) -> Result<()> {
    let name = format!("round {} {} paced", run.round, broker.side.as_str());
    for (qos, rate, slot) in [
        (QoS::AtMostOnce, qos0_rate, &mut run.paced_qos0),
        (QoS::AtLeastOnce, qos1_rate, &mut run.paced_qos1),
    ] {
        let load = PubsubLoad {
            rate: rate.div_ceil(u64::from(cmd.load.publishers)).max(1),
            ..cmd.load.clone()
        };
        let result = pubsub::run(&broker.target, &load, qos)
            .await
            .with_context(|| format!("{name} {qos:?}"))?;
        eprintln!("{name}: {}", result.summary_line());
        *slot = Some(result);
    }
    Ok(())
}

/// The compared metrics: name and how to read it from one run.
type Metric = (&'static str, fn(&SideRun) -> Option<f64>);

const METRICS: [Metric; 14] = [
    ("qos0 delivered msg/s", |r| Some(r.qos0.delivered_rate)),
    ("qos0 p99 latency µs", |r| {
        Some(r.qos0.latency_us.p99_us as f64)
    }),
    ("qos1 delivered msg/s", |r| Some(r.qos1.delivered_rate)),
    ("qos1 p99 latency µs", |r| {
        Some(r.qos1.latency_us.p99_us as f64)
    }),
    ("paced qos0 delivered msg/s", |r| {
        r.paced_qos0.as_ref().map(|p| p.delivered_rate)
    }),
    ("paced qos0 p99 latency µs", |r| {
        r.paced_qos0.as_ref().map(|p| p.latency_us.p99_us as f64)
    }),
    ("paced qos1 delivered msg/s", |r| {
        r.paced_qos1.as_ref().map(|p| p.delivered_rate)
    }),
    ("paced qos1 p99 latency µs", |r| {
        r.paced_qos1.as_ref().map(|p| p.latency_us.p99_us as f64)
    }),
    ("qos0 broker cpu cores", |r| r.qos0.broker_cpu_cores),
    ("qos0 loadtest cpu cores", |r| r.qos0.loadtest_cpu_cores),
    ("qos1 broker cpu cores", |r| r.qos1.broker_cpu_cores),
    ("qos1 loadtest cpu cores", |r| r.qos1.loadtest_cpu_cores),
    ("connect rate conn/s", |r| {
        r.connect.as_ref().map(|c| c.connect_rate)
    }),
    ("bytes per idle connection (round 1)", |r| {
        let connect = r.connect.as_ref().filter(|_| r.round == 1)?;
        connect.bytes_per_connection
    }),
];

fn summarize(runs: &[SideRun]) -> Vec<SummaryRow> {
    let values = |side: Side, read: fn(&SideRun) -> Option<f64>| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.side == side)
            .filter_map(read)
            .collect()
    };
    METRICS
        .iter()
        .map(|&(metric, read)| {
            summary_row(
                metric,
                values(Side::Gateway, read),
                values(Side::Mosquitto, read),
            )
        })
        .filter(|row| row.gateway.is_some() || row.mosquitto.is_some())
        .collect()
}

/// Each stage's p99 per scenario, median over the gateway's rounds, stages in path order.
fn stage_medians(runs: &[SideRun]) -> Vec<StageRow> {
    let gateway: Vec<&SideRun> = runs.iter().filter(|r| r.side == Side::Gateway).collect();
    let mut stages: Vec<&str> = Vec::new();
    for run in &gateway {
        for (_, scenario) in SCENARIOS {
            for stage in scenario(run).iter().flat_map(|r| &r.stages) {
                if !stages.contains(&stage.stage.as_str()) {
                    stages.push(&stage.stage);
                }
            }
        }
    }
    (stages.into_iter())
        .map(|stage| StageRow {
            stage: stage.to_owned(),
            p99_us: SCENARIOS.map(|(_, scenario)| {
                let p99s = (gateway.iter())
                    .filter_map(|run| scenario(run))
                    .flat_map(|result| &result.stages)
                    .filter(|s| s.stage == stage)
                    .map(|s| s.p99_us)
                    .collect();
                median(p99s)
            }),
        })
        .collect()
}

fn summary_row(metric: &'static str, gateway: Vec<f64>, mosquitto: Vec<f64>) -> SummaryRow {
    let (gateway, mosquitto) = (median(gateway), median(mosquitto));
    let ratio = match (gateway, mosquitto) {
        (Some(g), Some(m)) if m != 0.0 => Some(g / m),
        _ => None,
    };
    SummaryRow {
        metric,
        gateway,
        mosquitto,
        ratio,
    }
}

impl Outcome for CompareResult {
    fn print(&self) {
        let mut runs = Table::default();
        for run in &self.runs {
            let mut cells = vec![
                format!("round {}", run.round),
                run.side.as_str().to_owned(),
                run.qos0.summary_line(),
                run.qos1.summary_line(),
            ];
            for paced in [&run.paced_qos0, &run.paced_qos1].into_iter().flatten() {
                cells.push(format!("paced {}", paced.summary_line()));
            }
            cells.extend(run.connect.as_ref().map(ConnectResult::summary_line));
            runs.row(cells);
        }
        print!("{}", runs.render());
        println!();
        println!("medians over {} round(s):", self.rounds);
        // Small values (CPU cores) keep their decimals.
        let value = |v: Option<f64>| match v {
            Some(v) if v.abs() < 100.0 => format!("{v:.2}"),
            Some(v) => thousands(v),
            None => "-".to_owned(),
        };
        let mut table = Table::default();
        table.row(["metric", "gateway", "mosquitto", "gateway/mosquitto"]);
        for row in &self.summary {
            table.row([
                row.metric.to_owned(),
                value(row.gateway),
                value(row.mosquitto),
                row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
            ]);
        }
        print!("{}", table.render());
        if !self.gateway_stages.is_empty() {
            println!();
            println!(
                "the gateway's p99 per stage of the durable path, µs (medians over the rounds):"
            );
            let mut stages = Table::default();
            let mut header = vec!["stage".to_owned()];
            header.extend(SCENARIOS.map(|(name, _)| name.to_owned()));
            stages.row(header);
            for row in &self.gateway_stages {
                let mut cells = vec![row.stage.clone()];
                cells.extend(row.p99_us.map(|p99| p99.map_or("-".to_owned(), thousands)));
                stages.row(cells);
            }
            print!("{}", stages.render());
        }
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_gateway_over_mosquitto_medians() {
        let row = summary_row("m", vec![100.0, 300.0, 200.0], vec![50.0, 60.0, 1000.0]);
        assert_eq!(row.gateway, Some(200.0));
        assert_eq!(row.mosquitto, Some(60.0));
        assert_eq!(row.ratio, Some(200.0 / 60.0));
    }

    #[test]
    fn one_sided_rows_have_no_ratio() {
        let row = summary_row("m", vec![], vec![5.0]);
        assert_eq!(
            (row.gateway, row.mosquitto, row.ratio),
            (None, Some(5.0), None)
        );
        assert_eq!(summary_row("m", vec![1.0], vec![0.0]).ratio, None);
    }
}
