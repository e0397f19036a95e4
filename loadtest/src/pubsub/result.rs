//! What a `pubsub` run found: throughput, latency and losses, the checks they must pass, and
//! how they print (also one line of `compare`'s progress).

use super::subscriber::{Losses, SeqRef};
use crate::progress::Timeline;
use crate::report::{print_verdict, thousands, LatencySummary, Outcome, Table};
use crate::stages::{p99_line, StageLatency};
use crate::target::TargetKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::SocketAddr;

#[derive(Debug, Serialize)]
pub struct PubsubResult {
    pub target: TargetKind,
    pub addr: SocketAddr,
    /// `messages` (stored), `signals` (live) or `plain` (a plain broker's topic).
    pub path: &'static str,
    pub qos: u8,
    pub publishers: u32,
    pub subscribers: u32,
    pub messages_per_publisher: u64,
    pub size: usize,
    pub rate_per_publisher: u64,
    /// Handed to the MQTT clients.
    pub published: u64,
    /// Written to the socket (QoS 0) or acknowledged by the broker (QoS 1).
    pub publish_completed: u64,
    pub publish_seconds: f64,
    pub publish_rate: f64,
    /// Distinct messages of this run that reached their subscriber.
    pub delivered: u64,
    /// From the first to the last delivery.
    pub delivery_seconds: f64,
    pub delivered_rate: f64,
    pub latency_us: LatencySummary,
    pub losses: Losses,
    pub timeline: Timeline,
    #[serde(skip)]
    pub latency: Histogram<u64>,
    pub client_errors: u64,
    pub first_client_error: Option<String>,
    /// Some publisher stopped early at `--duration-limit`.
    pub stopped_by_duration_limit: bool,
    /// CPU of the broker (the process listening on its port) and of this tool from the first
    /// publish until the last delivery: which of the two ran out.
    pub broker_cpu_cores: Option<f64>,
    pub loadtest_cpu_cores: Option<f64>,
    /// The gateway's own account of where a stored message's time went during the run, stage
    /// by stage (empty for a plain broker, and for messages the gateway does not store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageLatency>,
    pub failed_checks: Vec<String>,
}

impl PubsubResult {
    /// The checks this run failed, each as a sentence; none when it passed.
    pub(super) fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.client_errors > 0 {
            failed.push(format!(
                "{} client connection errors, first: {}",
                self.client_errors,
                self.first_client_error.as_deref().unwrap_or("?")
            ));
        }
        if self.published > 0 && self.delivered == 0 {
            failed.push("nothing was delivered".to_owned());
        }
        if self.qos == 0 {
            return failed;
        }
        let l = &self.losses;
        let at = |r: Option<SeqRef>| {
            r.map_or("?".to_owned(), |r| {
                format!("publisher {} seq {}", r.publisher, r.seq)
            })
        };
        if l.missing > 0 {
            failed.push(format!(
                "{} messages lost, first missing: {}",
                l.missing,
                at(l.first_missing)
            ));
        }
        if l.duplicates > 0 {
            failed.push(format!(
                "{} duplicates, first: {}",
                l.duplicates,
                at(l.first_duplicate)
            ));
        }
        if l.out_of_order > 0 {
            failed.push(format!(
                "{} out of order, first: {}",
                l.out_of_order,
                at(l.first_out_of_order)
            ));
        }
        if self.publish_completed < self.published {
            failed.push(format!(
                "{} publishes never acknowledged",
                self.published - self.publish_completed
            ));
        }
        let strays = l.out_of_range + l.undecodable + l.misrouted;
        if strays > 0 {
            failed.push(format!(
                "{strays} unexpected messages (out of range {}, undecodable {}, misrouted {})",
                l.out_of_range, l.undecodable, l.misrouted
            ));
        }
        failed
    }

    /// One line for `compare`'s progress output.
    pub fn summary_line(&self) -> String {
        format!(
            "qos{} delivered {} msg/s, p99 {} µs, missing {}, errors {}",
            self.qos,
            thousands(self.delivered_rate),
            self.latency_us.p99_us,
            self.losses.missing,
            self.client_errors
        )
    }
}

impl Outcome for PubsubResult {
    fn plot(&self) -> Option<crate::plot::PlotData<'_>> {
        Some(crate::plot::PlotData {
            title: "pubsub: end-to-end latency",
            latency: &self.latency,
            timeline: &self.timeline,
            rate_series: "recv",
        })
    }

    fn print(&self) {
        let rate = if self.rate_per_publisher == 0 {
            "max".to_owned()
        } else {
            format!("{}/s", thousands(self.rate_per_publisher as f64))
        };
        println!(
            "pubsub qos{} against {} {} ({}): {} publishers -> {} subscribers, {} msgs each, {} B, rate {rate}",
            self.qos,
            self.target.as_str(),
            self.addr,
            self.path,
            self.publishers,
            self.subscribers,
            thousands(self.messages_per_publisher as f64),
            self.size,
        );
        let l = &self.losses;
        let t = &self.latency_us;
        let mut table = Table::default();
        table.rate_row(
            "published",
            thousands(self.publish_completed as f64),
            self.publish_seconds,
            self.publish_rate,
            "msg/s",
        );
        table.rate_row(
            "delivered",
            thousands(self.delivered as f64),
            self.delivery_seconds,
            self.delivered_rate,
            "msg/s",
        );
        table.row(t.cells("latency µs"));
        table.row([
            "losses".to_owned(),
            format!("missing {}", l.missing),
            format!("duplicates {}", l.duplicates),
            format!("out-of-order {}", l.out_of_order),
            format!("foreign {}", l.foreign),
        ]);
        table.row(["client errors".to_owned(), self.client_errors.to_string()]);
        let cores = |cores: Option<f64>| cores.map_or("-".to_owned(), |c| format!("{c:.2}"));
        table.row([
            "cpu cores".to_owned(),
            format!("broker {}", cores(self.broker_cpu_cores)),
            format!("loadtest {}", cores(self.loadtest_cpu_cores)),
        ]);
        print!("{}", table.render());
        if !self.stages.is_empty() {
            println!("gateway p99 by stage, µs: {}", p99_line(&self.stages));
        }
        if self.stopped_by_duration_limit {
            println!("publishing stopped at --duration-limit");
        }
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
