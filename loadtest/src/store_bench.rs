//! Scenario `store`: durable appends per second of a message store, opened directly through the
//! gateway library (no network, no MQTT), with 1, 16, 256, … concurrent writers.
//!
//! Each writer does what the gateway does on a sender's task for every message: give it an id,
//! seal it (JSON, then SM4-GCM) for a random user's log, queue it with `Store::append` and wait
//! until it is durable. Sealing stays inside the measured loop because the gateway pays it on
//! the same cores as the commits.
//!
//! Every round of every writer count gets a fresh store: a new temporary directory for the
//! embedded store, and for Redis (which is never flushed) user names no earlier run used. Writer
//! counts alternate within each round, so slow drifts of the machine hit them all alike; the
//! table shows the median round and the spread.
//!
//! To explain a figure, the run also records what the store's writer did: the live fan-out is
//! called once per committed batch, so its calls give the batch sizes and the commit rate, and
//! the CPU time of the process and of the embedded store's `store-writer` thread show whether
//! that thread or the cores are the limit (rather than fsync, which costs time but no CPU).

use crate::progress::{spawn_reporter, Counter};
use crate::report::{latency_histogram, median, print_verdict, thousands, LatencySummary};
use crate::report::{Outcome, Table};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gateway::infra::cipher::KeyRing;
use gateway::infra::redis::Endpoint;
use gateway::store::clock::HybridClock;
use gateway::store::data_keys::DataKeys;
use gateway::store::embedded::EmbeddedStore;
use gateway::store::record::{self, Content};
use gateway::store::redis::RedisStore;
use gateway::store::{Appended, CommitFeed, Settings, SharedStore};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A fixed at-rest key: the figures do not depend on which key seals.
const TEST_KEY: &str = "bench:000102030405060708090a0b0c0d0e0f";
/// The sender named in every message.
const SENDER: &str = "loadtest";
/// Name of the embedded store's writer thread (see `gateway::store::embedded`).
const WRITER_THREAD: &str = "store-writer";
/// Linux reports thread CPU times in these ticks per second (`USER_HZ`, 100 on every
/// architecture Linux runs on with a stable ABI).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fjall in a fresh temporary directory per run.
    Embedded,
    /// A Redis server (`--redis-url`); nothing in it is removed.
    Redis,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Redis => "redis",
        }
    }
}

#[derive(Args, Debug)]
pub struct StoreCmd {
    /// The store to measure.
    #[arg(long, value_enum)]
    backend: Backend,
    /// The Redis to measure with `--backend redis`. Runs only add keys (under user names of
    /// their own), never remove any: use a throwaway server.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// `--redis-url` is a node of a Redis Cluster: measure the store on the whole cluster.
    #[arg(long)]
    redis_cluster: bool,
    /// Concurrent writers, one measurement each, e.g. 1,16,256.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    writers: Vec<u32>,
    /// How long each measurement appends.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measurements per writer count; the table shows their median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Users whose logs the messages go to, chosen at random for each message.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    users: u32,
    /// Size of each message's body text in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Most appends the store commits together (the gateway's `store.max_batch`).
    #[arg(long, default_value_t = 1024)]
    max_batch: usize,
}

/// One measurement: `writers` writers appending for `--duration` into a fresh store.
#[derive(Debug, Serialize)]
pub struct StoreRound {
    pub round: u32,
    /// Appends that were answered as durable.
    pub appends: u64,
    /// From the first append to the last answer.
    pub seconds: f64,
    pub appends_per_second: f64,
    pub latency_us: LatencySummary,
    /// Batches the store committed, and their size.
    pub commits: u64,
    pub commits_per_second: f64,
    pub mean_batch: f64,
    pub max_batch: u64,
    /// CPU used by this whole process (writers, store and all), in cores.
    pub process_cores: f64,
    /// CPU used by the embedded store's writer thread, in cores (none for Redis).
    pub writer_thread_cores: Option<f64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// All rounds of one writer count.
#[derive(Debug, Serialize)]
pub struct WriterSeries {
    pub writers: u32,
    pub median_appends_per_second: f64,
    pub min_appends_per_second: f64,
    pub max_appends_per_second: f64,
    /// The round with the median rate, whose latencies and batches the table shows.
    pub median_round: u32,
    pub rounds: Vec<StoreRound>,
}

#[derive(Debug, Serialize)]
pub struct StoreResult {
    pub backend: Backend,
    pub duration_seconds: f64,
    pub rounds: u32,
    pub users: u32,
    pub body_bytes: usize,
    pub max_batch: usize,
    pub series: Vec<WriterSeries>,
    pub failed_checks: Vec<String>,
}

pub async fn run_cmd(cmd: &StoreCmd) -> Result<StoreResult> {
    if cmd.writers.is_empty() {
        bail!("--writers needs at least one count");
    }
    let ring = Arc::new(KeyRing::new(&[TEST_KEY.to_owned()]).context("the test key")?);
    // As the gateway holds them: each user's data key, unwrapped once.
    let keys = Arc::new(DataKeys::new(ring, 100_000));
    let body = json!({ "text": "x".repeat(cmd.body_bytes) });
    let run_id = format!("{:x}", gateway::infra::time::unix_millis());
    let mut measured: Vec<Vec<StoreRound>> = cmd.writers.iter().map(|_| Vec::new()).collect();
    for round in 1..=cmd.rounds {
        for (series, &writers) in measured.iter_mut().zip(&cmd.writers) {
            let label = format!("store {} w{writers} r{round}", cmd.backend.as_str());
            let users: Vec<String> = (0..cmd.users)
                .map(|u| format!("sb{run_id}-r{round}-w{writers}-u{u}"))
                .collect();
            let batches = Arc::new(BatchLog::default());
            let scratch = tempfile::Builder::new()
                .prefix("loadtest-store-")
                .tempdir()
                .context("creating a temporary directory")?;
            let store = open(cmd, &keys, batches.clone(), scratch.path()).await?;
            let load = Load {
                store: &store,
                keys: &keys,
                users: &users,
                body: &body,
                writers,
                duration: cmd.duration,
                backend: cmd.backend,
            };
            let measurement = load.run(label, round, &batches).await;
            // The embedded store's writer thread ends once the store is dropped, before its
            // directory goes.
            drop(store);
            drop(scratch);
            series.push(measurement?);
        }
    }
    let series: Vec<WriterSeries> = cmd
        .writers
        .iter()
        .zip(measured)
        .map(|(&writers, rounds)| WriterSeries::of(writers, rounds))
        .collect();
    let mut result = StoreResult {
        backend: cmd.backend,
        duration_seconds: cmd.duration.as_secs_f64(),
        rounds: cmd.rounds,
        users: cmd.users,
        body_bytes: cmd.body_bytes,
        max_batch: cmd.max_batch,
        series,
        failed_checks: Vec::new(),
    };
    result.failed_checks = result.checks();
    Ok(result)
}

async fn open(
    cmd: &StoreCmd,
    keys: &Arc<DataKeys>,
    batches: Arc<BatchLog>,
    scratch: &std::path::Path,
) -> Result<SharedStore> {
    let clock = Arc::new(HybridClock::new());
    let settings = Settings {
        max_batch: cmd.max_batch,
        // The gateway's defaults, so that the store is measured as it runs.
        retention_count: broker_config::Roaming::default().retention_count,
        memtable_size: broker_config::Store::default().memtable_size,
        commit_seconds: None,
        budget: Default::default(),
        confirmation: Default::default(),
        max_queued_writes: 65_536,
    };
    Ok(match cmd.backend {
        Backend::Embedded => Arc::new(EmbeddedStore::open(
            scratch,
            keys.clone(),
            clock,
            batches,
            settings,
        )?),
        Backend::Redis => Arc::new(
            RedisStore::open(
                &match cmd.redis_cluster {
                    false => Endpoint::single(&cmd.redis_url),
                    true => Endpoint::cluster(vec![cmd.redis_url.clone()]),
                },
                keys.clone(),
                clock,
                batches,
                settings,
            )
            .await?,
        ),
    })
}

/// The live fan-out of the measured store: delivers nothing, and notes each committed batch's
/// size, which is the only view into the store's group commit from outside.
#[derive(Default)]
struct BatchLog {
    sizes: Mutex<Vec<u32>>,
}

impl CommitFeed for BatchLog {
    fn committed(&self, messages: &[Appended], _: std::time::Instant) {
        self.sizes
            .lock()
            .expect("batch log poisoned")
            .push(messages.len() as u32);
    }
}

impl BatchLog {
    fn take(&self) -> Vec<u32> {
        std::mem::take(&mut self.sizes.lock().expect("batch log poisoned"))
    }
}

/// One measurement's inputs.
struct Load<'a> {
    store: &'a SharedStore,
    keys: &'a Arc<DataKeys>,
    users: &'a [String],
    body: &'a Value,
    writers: u32,
    duration: Duration,
    backend: Backend,
}

/// What one writer task saw.
struct WriterTally {
    latency: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Load<'_> {
    async fn run(&self, label: String, round: u32, batches: &BatchLog) -> Result<StoreRound> {
        let appended = Counter::new("appends");
        let (stop_tx, stop_rx) = watch::channel(false);
        let reporter = spawn_reporter(label, vec![appended.clone()], stop_rx);
        batches.take();
        let cpu_before = CpuTimes::read();
        let start = Instant::now();
        let deadline = start + self.duration;
        let users: Arc<[String]> = self.users.into();
        let body = Arc::new(self.body.clone());
        let tasks: Vec<_> = (0..self.writers)
            .map(|_| {
                let writer = Writer {
                    store: self.store.clone(),
                    keys: self.keys.clone(),
                    users: users.clone(),
                    body: body.clone(),
                    deadline,
                    appended: appended.clone(),
                };
                tokio::spawn(writer.run())
            })
            .collect();
        let mut latency = latency_histogram();
        let (mut errors, mut first_error) = (0, None);
        for task in tasks {
            let tally = task.await?;
            latency.add(&tally.latency)?;
            errors += tally.errors;
            first_error = first_error.or(tally.first_error);
        }
        let seconds = start.elapsed().as_secs_f64();
        let cpu = CpuTimes::read().since(&cpu_before, seconds);
        let _ = stop_tx.send(true);
        reporter.await?;
        let sizes = batches.take();
        let commits = sizes.len() as u64;
        let appends = appended.get();
        Ok(StoreRound {
            round,
            appends,
            seconds,
            appends_per_second: appends as f64 / seconds,
            latency_us: LatencySummary::from_histogram(&latency),
            commits,
            commits_per_second: commits as f64 / seconds,
            mean_batch: sizes.iter().map(|&s| s as f64).sum::<f64>() / commits.max(1) as f64,
            max_batch: sizes.iter().copied().max().unwrap_or(0).into(),
            process_cores: cpu.process,
            writer_thread_cores: match self.backend {
                Backend::Embedded => cpu.writer_thread,
                Backend::Redis => None,
            },
            errors,
            first_error,
        })
    }
}

/// One concurrent writer: seal, append, wait until durable, again, until the deadline.
struct Writer {
    store: SharedStore,
    keys: Arc<DataKeys>,
    users: Arc<[String]>,
    body: Arc<Value>,
    deadline: Instant,
    appended: Arc<Counter>,
}

impl Writer {
    async fn run(self) -> WriterTally {
        let mut rng = StdRng::from_entropy();
        let mut tally = WriterTally {
            latency: latency_histogram(),
            errors: 0,
            first_error: None,
        };
        while Instant::now() < self.deadline {
            let began = Instant::now();
            let to = &self.users[rng.gen_range(0..self.users.len())];
            let id = uuid::Uuid::now_v7().to_string();
            let content = Content {
                id: &id,
                from: Some(SENDER),
                from_device: None,
                to,
                body: self.body.as_ref(),
            };
            let message = record::seal(&self.keys, to, &content, None);
            match self.store.append(vec![message], None).wait().await {
                Ok(_) => {
                    self.appended.add(1);
                    tally
                        .latency
                        .saturating_record(began.elapsed().as_micros() as u64);
                }
                Err(error) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(error.to_string());
                }
            }
        }
        tally
    }
}

/// CPU time used so far, in clock ticks: the whole process, and each thread by id with its
/// name. Names are only looked at in the later reading: a thread names itself once running, so
/// a writer thread just started may not be called `store-writer` yet.
struct CpuTimes {
    process: Option<u64>,
    threads: HashMap<String, (String, u64)>,
}

/// CPU used over an interval, in cores (1.0 = one core busy the whole time).
struct CpuUse {
    process: f64,
    /// `None` when no writer thread was seen.
    writer_thread: Option<f64>,
}

impl CpuTimes {
    fn read() -> Self {
        let mut threads = HashMap::new();
        for task in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
            let Ok(task) = task else { continue };
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if let Some(ticks) = busy_ticks(&stat) {
                let id = task.file_name().to_string_lossy().into_owned();
                threads.insert(id, (comm.trim_end().to_owned(), ticks));
            }
        }
        Self {
            process: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|stat| busy_ticks(&stat)),
            threads,
        }
    }

    fn since(&self, before: &Self, seconds: f64) -> CpuUse {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let writer_ticks: Vec<u64> = self
            .threads
            .iter()
            .filter(|(_, (name, _))| name == WRITER_THREAD)
            .map(|(id, (_, now))| now.saturating_sub(before.threads.get(id).map_or(0, |t| t.1)))
            .collect();
        CpuUse {
            process: match (self.process, before.process) {
                (Some(now), Some(then)) => cores(now.saturating_sub(then)),
                _ => 0.0,
            },
            writer_thread: (!writer_ticks.is_empty()).then(|| cores(writer_ticks.iter().sum())),
        }
    }
}

/// User plus system time, in clock ticks, from a `/proc/…/stat` line. The command name (in
/// parentheses) may hold spaces, so fields are counted after its closing parenthesis.
fn busy_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

impl WriterSeries {
    fn of(writers: u32, rounds: Vec<StoreRound>) -> Self {
        let rates: Vec<f64> = rounds.iter().map(|r| r.appends_per_second).collect();
        let median_rate = median(rates.clone()).unwrap_or(0.0);
        let median_round = rounds
            .iter()
            .min_by(|a, b| {
                let off = |r: &StoreRound| (r.appends_per_second - median_rate).abs();
                off(a).total_cmp(&off(b))
            })
            .map_or(0, |r| r.round);
        Self {
            writers,
            median_appends_per_second: median_rate,
            min_appends_per_second: rates.iter().copied().fold(f64::INFINITY, f64::min),
            max_appends_per_second: rates.iter().copied().fold(0.0, f64::max),
            median_round,
            rounds,
        }
    }

    fn median(&self) -> Option<&StoreRound> {
        self.rounds.iter().find(|r| r.round == self.median_round)
    }
}

impl StoreResult {
    fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for series in &self.series {
            for round in &series.rounds {
                let at = format!("{} writers, round {}", series.writers, round.round);
                if round.errors > 0 {
                    failed.push(format!(
                        "{at}: {} appends failed, first: {}",
                        round.errors,
                        round.first_error.as_deref().unwrap_or("?")
                    ));
                }
                if round.appends == 0 {
                    failed.push(format!("{at}: nothing was appended"));
                }
            }
        }
        failed
    }
}

impl Outcome for StoreResult {
    fn print(&self) {
        println!(
            "store {}: {} rounds x {:.1} s per writer count, {} users, {} B bodies, max batch {}",
            self.backend.as_str(),
            self.rounds,
            self.duration_seconds,
            thousands(self.users as f64),
            self.body_bytes,
            self.max_batch,
        );
        println!("(median round; latency is seal + append until durable)");
        let mut table = Table::default();
        table.row([
            "writers",
            "appends/s",
            "min",
            "max",
            "p50 µs",
            "p99 µs",
            "commits/s",
            "mean batch",
            "cpu cores",
            "writer thread",
        ]);
        for series in &self.series {
            let Some(round) = series.median() else {
                continue;
            };
            table.row([
                series.writers.to_string(),
                thousands(series.median_appends_per_second),
                thousands(series.min_appends_per_second),
                thousands(series.max_appends_per_second),
                round.latency_us.p50_us.to_string(),
                round.latency_us.p99_us.to_string(),
                thousands(round.commits_per_second),
                format!("{:.1}", round.mean_batch),
                format!("{:.2}", round.process_cores),
                round
                    .writer_thread_cores
                    .map_or("-".to_owned(), |cores| format!("{cores:.2}")),
            ]);
        }
        print!("{}", table.render());
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
    fn reads_busy_ticks_past_a_name_with_spaces() {
        let stat = "4242 (store writer) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0";
        assert_eq!(busy_ticks(stat), Some(290));
        assert_eq!(busy_ticks("garbage"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(CpuTimes::read().process.is_some());
    }
}
