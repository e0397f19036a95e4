//! Where the gateway's time went during a run: its per-stage histograms of the durable path
//! (`gateway_durable_stage_seconds{stage}` on `/metrics`), read before and after the run, and
//! each stage's percentiles over what the run added.
//!
//! The gateway's buckets grow 1.5× each, so a percentile is the upper bound of the bucket it
//! falls in: at most 1.5× the true value.

use anyhow::{Context, Result};
use gateway::infra::latency_budget::Stage;
use serde::Serialize;
use std::collections::BTreeMap;

const FAMILY: &str = "gateway_durable_stage_seconds";

/// Cumulative bucket counts per stage, as one scrape found them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageSnapshot {
    /// Stage → (bucket upper bound in seconds, cumulative count), ascending bounds.
    buckets: BTreeMap<String, Vec<(f64, u64)>>,
    /// Stage → (sum of seconds, count).
    totals: BTreeMap<String, (f64, u64)>,
}

/// One stage over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageLatency {
    pub stage: String,
    /// Observations in the run: messages, or deliveries for `delivered` and `acknowledged`.
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl StageSnapshot {
    /// Reads the stage histograms out of a `/metrics` text.
    pub fn parse(text: &str) -> Self {
        let mut snapshot = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else {
                continue;
            };
            let Some((kind, rest)) = rest.split_once('{') else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let Some(stage) = label(labels, "stage") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            match kind {
                "_bucket" => {
                    let bound = match label(labels, "le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(bound) => match bound.parse() {
                            Ok(bound) => bound,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    let buckets = snapshot.buckets.entry(stage.to_string()).or_default();
                    buckets.push((bound, value as u64));
                }
                "_sum" => snapshot.totals.entry(stage.to_string()).or_default().0 = value,
                "_count" => snapshot.totals.entry(stage.to_string()).or_default().1 = value as u64,
                _ => {}
            }
        }
        for buckets in snapshot.buckets.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        snapshot
    }

    /// Each stage's figures over what was observed since `before`, in path order; stages with
    /// nothing observed are left out.
    pub fn since(&self, before: &Self) -> Vec<StageLatency> {
        let mut stages: Vec<&String> = self.buckets.keys().collect();
        // In the order a message goes through them; any this build does not know come after.
        let rank = |stage: &str| {
            (Stage::ALL.iter())
                .position(|s| s.name() == stage)
                .unwrap_or(Stage::ALL.len())
        };
        stages.sort_by_key(|stage| (rank(stage), stage.to_string()));
        let mut out = Vec::new();
        for stage in stages {
            let earlier = before.buckets.get(stage.as_str());
            let added: Vec<(f64, u64)> = (self.buckets[stage].iter())
                .map(|&(bound, count)| {
                    let was = earlier
                        .and_then(|b| b.iter().find(|(b, _)| *b == bound))
                        .map_or(0, |(_, c)| *c);
                    (bound, count.saturating_sub(was))
                })
                .collect();
            let (sum, count) = self.totals.get(stage.as_str()).copied().unwrap_or_default();
            let (sum_before, count_before) = (before.totals.get(stage.as_str()))
                .copied()
                .unwrap_or_default();
            let count = count.saturating_sub(count_before);
            if count == 0 {
                continue;
            }
            out.push(StageLatency {
                stage: stage.clone(),
                count,
                mean_us: (sum - sum_before) / count as f64 * 1e6,
                p50_us: quantile(&added, count, 0.50) * 1e6,
                p99_us: quantile(&added, count, 0.99) * 1e6,
            });
        }
        out
    }
}

/// The upper bound of the bucket holding the `q` quantile of `count` observations, the last
/// finite bound when it lies beyond them all.
fn quantile(cumulative: &[(f64, u64)], count: u64, q: f64) -> f64 {
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let last_finite = (cumulative.iter().rev())
        .find(|(bound, _)| bound.is_finite())
        .map_or(0.0, |(bound, _)| *bound);
    (cumulative.iter()).find(|(_, seen)| *seen >= rank).map_or(
        last_finite,
        |(bound, _)| match bound.is_finite() {
            true => *bound,
            false => last_finite,
        },
    )
}

/// The value of label `name` in `a="x",b="y"`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// Reads the stage histograms from the gateway's `/metrics` at `url`.
pub async fn scrape(http: &reqwest::Client, url: &reqwest::Url) -> Result<StageSnapshot> {
    let response = http
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let response = crate::report::successful(response, &format!("GET {url}")).await?;
    Ok(StageSnapshot::parse(&response.text().await?))
}

/// `queued 120 · sealed 40 · …`: each stage's p99 in µs, for a report line.
pub fn p99_line(stages: &[StageLatency]) -> String {
    (stages.iter())
        .map(|s| format!("{} {:.0}", s.stage, s.p99_us))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(queued: [u64; 3], sum: f64) -> String {
        format!(
            "# TYPE gateway_durable_stage_seconds histogram\n\
             gateway_durable_stage_seconds_sum{{stage=\"queued\"}} {sum}\n\
             gateway_durable_stage_seconds_count{{stage=\"queued\"}} {}\n\
             gateway_durable_stage_seconds_bucket{{le=\"0.001\",stage=\"queued\"}} {}\n\
             gateway_durable_stage_seconds_bucket{{le=\"0.002\",stage=\"queued\"}} {}\n\
             gateway_durable_stage_seconds_bucket{{le=\"+Inf\",stage=\"queued\"}} {}\n\
             gateway_durable_stage_seconds_count{{stage=\"fsynced\"}} 0\n\
             gateway_durable_stage_seconds_bucket{{le=\"+Inf\",stage=\"fsynced\"}} 0\n\
             gateway_store_commit_seconds_count 7\n",
            queued[2], queued[0], queued[1], queued[2]
        )
    }

    #[test]
    fn a_run_is_what_the_histograms_gained_during_it() {
        let before = StageSnapshot::parse(&text([10, 10, 10], 0.005));
        let after = StageSnapshot::parse(&text([10, 108, 110], 0.205));
        let stages = after.since(&before);
        assert_eq!(stages.len(), 1, "a stage with nothing observed is left out");
        let queued = &stages[0];
        assert_eq!((queued.stage.as_str(), queued.count), ("queued", 100));
        assert!((queued.mean_us - 2000.0).abs() < 1e-6);
        assert_eq!(queued.p50_us, 2000.0);
        // The 99th of 100 is among the two past the last finite bound.
        assert_eq!(queued.p99_us, 2000.0);
        assert_eq!(p99_line(&stages), "queued 2000");
    }
}
