//! Turning measurements into what people and scripts read: latency percentiles, aligned text
//! tables on stdout, and the full result as JSON.

use crate::procfs::{Usage, UsageWatch};
use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Latencies are recorded in microseconds from 1 µs to one hour with 3 significant digits,
/// which bounds the histogram's memory whatever the run throws at it.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One latency histogram written by many tasks: sharded so that thousands of receiving
/// devices rarely wait on each other, merged once at the end. (A histogram per device would
/// cost tens of KiB each: a gigabyte at 30,000 devices.)
pub struct SharedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl SharedHistogram {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
        }
    }

    /// Records `us` in the shard picked by `hint` (e.g. the recording task's index).
    pub fn record(&self, hint: usize, us: u64) {
        self.shards[hint % self.shards.len()]
            .lock()
            .expect("histogram poisoned")
            .saturating_record(us);
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for shard in &self.shards {
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&*shard.lock().expect("histogram poisoned"));
        }
        all
    }
}

/// End-to-end latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    /// A table row: `label`, then p50, p90, p99, p99.9 and max in µs.
    pub fn cells(&self, label: &str) -> [String; 6] {
        [
            label.to_owned(),
            format!("p50 {}", self.p50_us),
            format!("p90 {}", self.p90_us),
            format!("p99 {}", self.p99_us),
            format!("p99.9 {}", self.p999_us),
            format!("max {}", self.max_us),
        ]
    }

    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// How often one kind of error happened.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    /// The first error of this kind, verbatim.
    pub first: String,
}

/// Errors by kind, shared by the load tasks: a count each and the first one verbatim, so that
/// a run with thousands of failures still reports a handful of readable lines.
#[derive(Default)]
pub struct ErrorTally(Mutex<BTreeMap<String, ErrorCount>>);

impl ErrorTally {
    pub fn record(&self, kind: impl Into<String>, detail: impl ToString) {
        self.0
            .lock()
            .expect("error tally poisoned")
            .entry(kind.into())
            .or_insert_with(|| ErrorCount {
                count: 0,
                first: detail.to_string(),
            })
            .count += 1;
    }

    pub fn add(&self, failure: Failure) {
        self.record(failure.kind, failure.detail);
    }

    pub fn snapshot(&self) -> BTreeMap<String, ErrorCount> {
        self.0.lock().expect("error tally poisoned").clone()
    }
}

/// Why one operation of a load task failed: `kind` groups it in the report (e.g.
/// `tcp_connect: ConnectionRefused`), `detail` is kept for the first of each kind.
pub struct Failure {
    pub kind: String,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: impl Into<String>, detail: impl ToString) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.to_string(),
        }
    }

    /// An I/O error at `step`, grouped by the error's kind.
    pub fn io(step: &str, error: std::io::Error) -> Self {
        Self::new(format!("{step}: {:?}", error.kind()), error)
    }
}

/// `kind ×count (first: …)` for each kind, joined for one failed-check line.
pub fn describe_errors(errors: &BTreeMap<String, ErrorCount>) -> String {
    errors
        .iter()
        .map(|(kind, e)| format!("{kind} ×{} (first: {})", e.count, e.first))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A result that can be printed for people, serialized for scripts, and that says whether the
/// run's checks passed.
pub trait Outcome: Serialize {
    fn print(&self);
    fn passed(&self) -> bool;
    /// What `--plot` draws; `None` for scenarios without a latency distribution.
    fn plot(&self) -> Option<crate::plot::PlotData<'_>> {
        None
    }
}

/// What a run writes besides its table on stdout, and the processes whose CPU and memory it
/// reports.
pub struct Files<'a> {
    pub json: Option<&'a Path>,
    pub plot: Option<&'a Path>,
    pub watch: RunWatch,
}

/// CPU and memory of the broker under test and of the load generator itself over a run: the
/// table says which of the two ran out of CPU.
pub struct RunWatch {
    broker: Option<UsageWatch>,
    own: Option<UsageWatch>,
}

/// What [`RunWatch`] measured.
#[derive(Serialize)]
pub struct Resources {
    pub broker: Option<Usage>,
    pub loadtest: Option<Usage>,
}

impl RunWatch {
    /// Watches the process listening on `broker_port` (when found) and this one.
    pub fn start(broker_port: Option<u16>) -> Self {
        let broker = broker_port
            .and_then(crate::procfs::pid_listening_on)
            .and_then(|pid| UsageWatch::start(pid).ok());
        Self {
            broker,
            own: UsageWatch::start(std::process::id()).ok(),
        }
    }

    pub fn finish(&self) -> Resources {
        let usage = |watch: &Option<UsageWatch>| watch.as_ref().and_then(|w| w.finish().ok());
        Resources {
            broker: usage(&self.broker),
            loadtest: usage(&self.own),
        }
    }
}

impl Resources {
    fn print(&self) {
        let mut table = Table::default();
        table.row([
            "process",
            "pid",
            "cpu cores",
            "cpu s",
            "rss MiB",
            "peak MiB",
        ]);
        for (name, usage) in [("broker", &self.broker), ("loadtest", &self.loadtest)] {
            if let Some(u) = usage {
                let mib = |b: u64| format!("{:.1}", b as f64 / 1_048_576.0);
                table.row([
                    name.to_owned(),
                    u.pid.to_string(),
                    format!("{:.2}", u.cpu_cores),
                    format!("{:.1}", u.cpu_seconds),
                    mib(u.rss_bytes),
                    mib(u.peak_rss_bytes),
                ]);
            }
        }
        print!("{}", table.render());
    }
}

impl Files<'_> {
    /// Prints `result` and the resources used, writes them as JSON and the plot when asked, and
    /// returns whether the result's checks passed.
    pub fn finish(&self, result: &impl Outcome) -> Result<bool> {
        result.print();
        let resources = self.watch.finish();
        resources.print();
        if let Some(path) = self.json {
            let mut value = serde_json::to_value(result).context("serializing the result")?;
            if let Some(object) = value.as_object_mut() {
                let resources = serde_json::to_value(&resources).context("the resources")?;
                object.insert("resources".to_owned(), resources);
            }
            let text = serde_json::to_string_pretty(&value).context("serializing the result")?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = self.plot {
            let data = result
                .plot()
                .context("--plot: this scenario has no latency distribution to draw")?;
            crate::plot::write_svg(path, &data)?;
            println!("plot: {}", path.display());
        }
        Ok(result.passed())
    }
}

/// `result: PASS`, or `result: FAIL` with one line per failed check.
pub fn print_verdict(failed_checks: &[String]) {
    if failed_checks.is_empty() {
        println!("result: PASS");
    } else {
        println!("result: FAIL");
        for check in failed_checks {
            println!("  - {check}");
        }
    }
}

/// Rows of cells printed with each column padded to its widest cell.
#[derive(Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(|c| c.to_string()).collect());
    }

    /// `label  amount  in S s  R unit`: how much happened, how long it took, how fast.
    pub fn rate_row(&mut self, label: &str, amount: String, seconds: f64, rate: f64, unit: &str) {
        self.row([
            label.to_owned(),
            amount,
            format!("in {seconds:.2} s"),
            format!("{} {unit}", thousands(rate)),
        ]);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// `response` when its status is 2xx; otherwise an error naming `request`, the status and
/// the start of the body, which is where the gateway says what was wrong.
pub async fn successful(response: reqwest::Response, request: &str) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    anyhow::bail!("{request}: {status}: {body}")
}

/// The median of `values`, `None` when empty; the mean of the middle two for an even count.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// A rate or count with thousands separators, for tables.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut histogram = latency_histogram();
        for us in 1..=1_000 {
            histogram.record(us).unwrap();
        }
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.count, 1_000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p90_us, 900);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.p999_us, 999);
        assert_eq!(summary.max_us, 1_000);
        assert!((summary.mean_us - 500.5).abs() < 0.5);
    }

    #[test]
    fn percentiles_show_the_tail() {
        let mut histogram = latency_histogram();
        histogram.record_n(100, 985).unwrap();
        histogram.record_n(50_000, 15).unwrap();
        let summary = LatencySummary::from_histogram(&histogram);
        assert_eq!(summary.p50_us, 100);
        assert!(
            (49_950..=50_050).contains(&summary.p99_us),
            "{}",
            summary.p99_us
        );
        assert!(summary.max_us >= 50_000);
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        assert_eq!(
            LatencySummary::from_histogram(&latency_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::default();
        table.row(["a", "bb", "c"]);
        table.row(["ccc", "d", "e"]);
        assert_eq!(table.render(), "a    bb  c\nccc  d   e\n");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1_000.0), "-1,000");
    }
}
