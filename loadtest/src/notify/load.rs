//! The run itself, once the doubles and the gateway are up: the users set up, the
//! notifications submitted by `--concurrency` loops, the deliveries waited for, and what the
//! doubles received measured against what the gateway queued.

use super::api::Api;
use super::doubles::{drain, watch_calls, Doubles};
use super::rate_check::RateCheck;
use super::report::{Delivery, Submission};
use super::submitter::Submitter;
use super::tally::Tally;
use super::{user, Mode, NotifyCmd};
use crate::procfs::UsageWatch;
use crate::progress::{spawn_reporter, Counter};
use anyhow::Result;
use futures_util::{stream, StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Setup seconds, then what the submitters and the doubles saw.
type Measured = (f64, Submission, Delivery, Option<RateCheck>);

/// Sets the users up, submits, waits for the deliveries and measures them.
pub(super) async fn load(
    cmd: &NotifyCmd,
    api: &Api,
    doubles: &Arc<Doubles>,
    deadline: Instant,
    gateway_pid: Option<u32>,
) -> Result<Measured> {
    let setup = Instant::now();
    let ready = Counter::new("users");
    let (stop_tx, stop_rx) = watch::channel(false);
    let reporter = spawn_reporter("notify setup".into(), vec![ready.clone()], stop_rx);
    stream::iter(0..u64::from(cmd.users))
        .map(|i| {
            let ready = ready.clone();
            async move {
                api.reachable_user(&user(i)).await?;
                ready.add(1);
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(cmd.concurrency as usize)
        .try_collect::<()>()
        .await?;
    let _ = stop_tx.send(true);
    reporter.await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let accepted = Counter::new("202");
    let failed = Counter::new("errors");
    let (wechat_seen, qiuqiu_seen) = (Counter::new("wechat"), Counter::new("qiuqiu"));
    let reporter = spawn_reporter(
        format!("notify {}", cmd.mode.name()),
        vec![
            accepted.clone(),
            failed.clone(),
            wechat_seen.clone(),
            qiuqiu_seen.clone(),
        ],
        stop_rx.clone(),
    );
    let watcher = watch_calls(doubles.clone(), wechat_seen, qiuqiu_seen, stop_rx);
    let (limit, end) = match cmd.mode {
        Mode::Decisions => (u64::MAX, (Instant::now() + cmd.duration).min(deadline)),
        Mode::Burst => (cmd.count, deadline),
    };
    let run = format!("{:x}", crate::payload::now_ns());
    let gateway = gateway_pid.and_then(|pid| UsageWatch::start(pid).ok());
    let submitted = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let submitters: Vec<JoinHandle<Tally>> = (0..cmd.concurrency)
        .map(|_| {
            let submitter = Submitter {
                api: api.clone(),
                mode: cmd.mode,
                users: u64::from(cmd.users),
                batch: u64::from(cmd.batch),
                run: run.clone(),
                next: next.clone(),
                limit,
                end,
                accepted: accepted.clone(),
                failed: failed.clone(),
            };
            tokio::spawn(submitter.submit_all())
        })
        .collect();
    let mut tally = Tally::default();
    for submitter in submitters {
        tally.merge(submitter.await?)?;
    }
    let seconds = submitted.elapsed().as_secs_f64();
    let mut submission = tally.into_submission(seconds);
    submission.gateway = gateway.and_then(|watch| watch.finish().ok());
    let expected = |route: &str| {
        submission
            .routes
            .get(route)
            .and_then(|statuses| statuses.get("queued"))
            .copied()
            .unwrap_or(0)
    };
    let (expected_wechat, expected_qiuqiu) = (expected("wechat"), expected("qiuqiu"));
    let waited = !(cmd.skip_deliveries && cmd.mode == Mode::Decisions);
    let (settled, last_call) = if waited {
        drain(
            doubles,
            (expected_wechat, expected_qiuqiu),
            cmd.drain_idle,
            deadline,
        )
        .await
    } else {
        (true, Instant::now())
    };
    let _ = stop_tx.send(true);
    reporter.await?;
    watcher.await?;

    let sends = doubles.wechat.sends();
    let pushes = doubles.qiuqiu.pushes();
    let (wechat_calls, qiuqiu_calls) = doubles.calls();
    let delivery = Delivery {
        expected_wechat,
        expected_qiuqiu,
        wechat_sends: sends.len() as u64,
        wechat_unique: sends
            .iter()
            .filter_map(|send| send.client_msg_id.as_deref())
            .collect::<HashSet<_>>()
            .len() as u64,
        qiuqiu_pushes: pushes.len() as u64,
        qiuqiu_unique: pushes
            .iter()
            .map(|push| push.request_id.as_str())
            .collect::<HashSet<_>>()
            .len() as u64,
        wechat_calls,
        qiuqiu_calls,
        wechat_token_calls: doubles.wechat.token_calls(),
        qiuqiu_auth_calls: doubles.qiuqiu.auth_calls(),
        seconds_after_submitting: last_call.saturating_duration_since(submitted).as_secs_f64()
            - seconds,
        settled,
        waited,
    };
    let rate_check = (cmd.mode == Mode::Burst).then(|| {
        let mut at: Vec<f64> = pushes
            .iter()
            .map(|push| push.at.saturating_duration_since(submitted).as_secs_f64())
            .collect();
        at.sort_by(f64::total_cmp);
        let total = at.last().copied().unwrap_or(0.0);
        RateCheck::new(&at, cmd.rate(), total, cmd.jitter)
    });
    Ok((setup_seconds, submission, delivery, rate_check))
}
