//! What a run found: the submission's and the deliveries' numbers, the checks they must pass,
//! and how they print.

use super::rate_check::RateCheck;
use super::Mode;
use crate::procfs::Usage;
use crate::report::{print_verdict, thousands, LatencySummary, Outcome, Table};
use serde::Serialize;
use std::collections::BTreeMap;

/// One run of the scenario: what it printed and what `--json` writes.
#[derive(Debug, Serialize)]
pub struct NotifyResult {
    pub mode: Mode,
    pub gateway: String,
    pub started_gateway: bool,
    pub users: u32,
    pub concurrency: u32,
    /// Notifications per request.
    pub batch: u32,
    /// `per_second` of both channels (the started gateway's; what --rate said otherwise).
    pub rate: u32,
    pub setup_seconds: f64,
    /// burst: notifications asked for.
    pub count: Option<u64>,
    pub submission: Submission,
    pub delivery: Delivery,
    pub rate_check: Option<RateCheck>,
    pub failed_checks: Vec<String>,
}

/// Submission statistics: decisions answered, their latency, and what went wrong.
#[derive(Debug, Serialize)]
pub struct Submission {
    /// 202 answers: routing decisions made.
    pub decisions: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub latency_us: LatencySummary,
    /// Failed submissions by HTTP status, or `timeout` / `connect` / `transport`.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Route → status → how many decisions said so (`queued` ones become provider calls).
    pub routes: BTreeMap<String, BTreeMap<String, u64>>,
    /// The gateway's CPU and memory while submitting, when its process was found.
    pub gateway: Option<Usage>,
}

/// What reached the providers, counted at the doubles.
#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Pushes the gateway's answers queued, per provider.
    pub expected_wechat: u64,
    pub expected_qiuqiu: u64,
    /// Sends the doubles accepted (a repeated idempotency key is not recorded twice).
    pub wechat_sends: u64,
    pub wechat_unique: u64,
    pub qiuqiu_pushes: u64,
    pub qiuqiu_unique: u64,
    /// HTTP calls, failed and repeated ones included.
    pub wechat_calls: u64,
    pub qiuqiu_calls: u64,
    pub wechat_token_calls: u64,
    pub qiuqiu_auth_calls: u64,
    /// From the end of submitting to the last provider call.
    pub seconds_after_submitting: f64,
    /// Deliveries stopped for `--drain-idle` or reached what was expected (not the timeout).
    pub settled: bool,
    /// Whether the run waited for the deliveries (not with --skip-deliveries).
    pub waited: bool,
}

impl NotifyResult {
    /// The checks this run failed, each as a sentence; none when it passed.
    pub(super) fn checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let (s, d) = (&self.submission, &self.delivery);
        let errors: u64 = s.errors.values().sum();
        if errors > 0 {
            failed.push(format!(
                "{errors} submissions failed ({:?}), first: {}",
                s.errors,
                s.first_error.as_deref().unwrap_or("?")
            ));
        }
        if s.decisions == 0 {
            failed.push("no notification was accepted".into());
        }
        if let Some(count) = self.count {
            if s.decisions != count {
                failed.push(format!("{} of {count} notifications accepted", s.decisions));
            }
        }
        if !d.settled {
            failed.push("deliveries still going on at --timeout".into());
        }
        for (provider, expected, delivered, unique) in [
            ("WeChat", d.expected_wechat, d.wechat_sends, d.wechat_unique),
            ("球球", d.expected_qiuqiu, d.qiuqiu_pushes, d.qiuqiu_unique),
        ] {
            let complete = delivered == expected || !d.waited;
            if !complete || delivered > expected || unique != delivered {
                failed.push(format!(
                    "{provider}: {expected} pushes queued, {delivered} delivered ({unique} distinct)"
                ));
            }
        }
        if let Some(check) = &self.rate_check {
            if check.max_window > check.window_allowed() {
                failed.push(format!(
                    "{} 球球 pushes in one 1-s window; at most {} allowed (2 × {}/s + {})",
                    check.max_window,
                    check.window_allowed(),
                    check.rate,
                    check.tolerance
                ));
            }
            if check.max_excess > check.excess_allowed() {
                failed.push(format!(
                    "{:.0} 球球 pushes beyond {}/s in one interval; the bucket allows {} (+ {})",
                    check.max_excess, check.rate, check.rate, check.tolerance
                ));
            }
        }
        failed
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl Outcome for NotifyResult {
    fn print(&self) {
        let (s, d) = (&self.submission, &self.delivery);
        println!(
            "notify {}: gateway {}{}, {} users, {} requests in flight of {} notifications, {}/s per channel, setup {:.1} s",
            self.mode.name(),
            self.gateway,
            if self.started_gateway {
                " (started)"
            } else {
                ""
            },
            self.users,
            self.concurrency,
            self.batch,
            thousands(f64::from(self.rate)),
            self.setup_seconds
        );
        let mut table = Table::default();
        table.row([
            "",
            "count",
            "seconds",
            "per second",
            "p50 ms",
            "p99 ms",
            "max ms",
        ]);
        table.row([
            "routing decisions (202)".to_owned(),
            thousands(s.decisions as f64),
            format!("{:.1}", s.seconds),
            thousands(s.per_second),
            ms(s.latency_us.p50_us),
            ms(s.latency_us.p99_us),
            ms(s.latency_us.max_us),
        ]);
        for (class, n) in &s.errors {
            table.row([format!("errors {class}"), thousands(*n as f64)]);
        }
        print!("\n{}", table.render());
        if let Some(g) = &s.gateway {
            println!(
                "gateway while submitting: {:.2} cores, {:.0} MiB resident (pid {})",
                g.cpu_cores,
                g.rss_bytes as f64 / 1_048_576.0,
                g.pid
            );
        }

        let mut table = Table::default();
        let statuses: Vec<&String> = s
            .routes
            .values()
            .flat_map(BTreeMap::keys)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        table.row(std::iter::once("route").chain(statuses.iter().map(|s| s.as_str())));
        for (route, counts) in &s.routes {
            table.row(
                std::iter::once(route.clone()).chain(
                    statuses
                        .iter()
                        .map(|status| thousands(counts.get(*status).copied().unwrap_or(0) as f64)),
                ),
            );
        }
        print!("\n{}", table.render());

        let mut table = Table::default();
        table.row([
            "provider",
            "queued",
            "delivered",
            "distinct",
            "HTTP calls",
            "token calls",
        ]);
        for (provider, expected, delivered, unique, calls, tokens) in [
            (
                "WeChat",
                d.expected_wechat,
                d.wechat_sends,
                d.wechat_unique,
                d.wechat_calls,
                d.wechat_token_calls,
            ),
            (
                "qiuqiu",
                d.expected_qiuqiu,
                d.qiuqiu_pushes,
                d.qiuqiu_unique,
                d.qiuqiu_calls,
                d.qiuqiu_auth_calls,
            ),
        ] {
            table.row([
                provider.to_owned(),
                thousands(expected as f64),
                thousands(delivered as f64),
                thousands(unique as f64),
                thousands(calls as f64),
                thousands(tokens as f64),
            ]);
        }
        print!("\n{}", table.render());
        if d.waited {
            println!(
                "deliveries went on {:.1} s after submitting{}",
                d.seconds_after_submitting,
                if d.settled { "" } else { " (cut by --timeout)" }
            );
        } else {
            println!("deliveries not waited for (--skip-deliveries): the rest stay queued");
        }

        if let Some(c) = &self.rate_check {
            let mut table = Table::default();
            table.row(["qiuqiu pushes at the double", "value", "allowed"]);
            table.row([
                "pushes".to_owned(),
                thousands(c.pushes as f64),
                String::new(),
            ]);
            table.row([
                "first to last push, s".to_owned(),
                format!("{:.1}", c.seconds),
                String::new(),
            ]);
            table.row([
                "first submission to last push, s".to_owned(),
                format!("{:.1}", c.total_seconds),
                String::new(),
            ]);
            table.row([
                "mean per second".to_owned(),
                thousands(c.mean_per_second),
                thousands(f64::from(c.rate)),
            ]);
            table.row([
                "max 1-s bucket".to_owned(),
                thousands(c.max_bucket as f64),
                String::new(),
            ]);
            table.row([
                "max 1-s window".to_owned(),
                thousands(c.max_window as f64),
                thousands(c.window_allowed() as f64),
            ]);
            table.row([
                "max beyond the rate".to_owned(),
                thousands(c.max_excess),
                thousands(c.excess_allowed()),
            ]);
            print!("\n{}", table.render());
        }
        println!();
        print_verdict(&self.failed_checks);
    }

    fn passed(&self) -> bool {
        self.failed_checks.is_empty()
    }
}
