//! The two providers, WeChat and 球球, run as test doubles in this process, and how the run
//! watches them: call counts for the progress line, and waiting until the pushes stop coming.

use super::{LOCALHOST, NO_QUOTA};
use crate::progress::Counter;
use crate::stop::stopped;
use anyhow::{Context, Result};
use loadtest::mock_channels::qiuqiu::QiuQiuDouble;
use loadtest::mock_channels::wechat::WeChatDouble;
use loadtest::mock_channels::{QiuQiuConfig, WeChatConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The doubles' per-call path counters.
const WECHAT_SEND: &str = "/cgi-bin/message/template/send";
const QIUQIU_PUSH: &str = "/push/single/cid";
/// How often the delivery phase and the progress line look at the doubles.
const POLL: Duration = Duration::from_millis(100);

/// The two providers, in this process.
pub(super) struct Doubles {
    pub(super) wechat: WeChatDouble,
    pub(super) qiuqiu: QiuQiuDouble,
}

impl Doubles {
    pub(super) async fn start(port: Option<u16>) -> Result<Self> {
        let (wechat_port, qiuqiu_port) = port.map_or((0, 0), |p| (p, p + 1));
        let wechat = WeChatDouble::bind(
            SocketAddr::new(LOCALHOST, wechat_port),
            WeChatConfig {
                daily_quota: NO_QUOTA,
                ..WeChatConfig::default()
            },
        )
        .await
        .with_context(|| format!("starting the WeChat double on port {wechat_port}"))?;
        let qiuqiu = QiuQiuDouble::bind(
            SocketAddr::new(LOCALHOST, qiuqiu_port),
            QiuQiuConfig::default(),
        )
        .await
        .with_context(|| format!("starting the 球球 double on port {qiuqiu_port}"))?;
        Ok(Self { wechat, qiuqiu })
    }

    /// Provider calls so far, failed ones included: cheap, for progress and for "still busy".
    pub(super) fn calls(&self) -> (u64, u64) {
        (
            self.wechat.calls(WECHAT_SEND),
            self.qiuqiu.calls(QIUQIU_PUSH),
        )
    }
}

/// Copies the doubles' call counts into progress counters until told to stop.
pub(super) fn watch_calls(
    doubles: Arc<Doubles>,
    wechat: Arc<Counter>,
    qiuqiu: Arc<Counter>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (w, q) = doubles.calls();
            wechat.add(w.saturating_sub(wechat.get()));
            qiuqiu.add(q.saturating_sub(qiuqiu.get()));
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    })
}

/// Waits until the doubles got the expected calls, or got none for `idle`, or the deadline.
/// Returns whether it ended before the deadline, and when the last call was seen.
pub(super) async fn drain(
    doubles: &Doubles,
    expected: (u64, u64),
    idle: Duration,
    deadline: Instant,
) -> (bool, Instant) {
    let mut seen = doubles.calls();
    let mut last_change = Instant::now();
    loop {
        if seen.0 >= expected.0 && seen.1 >= expected.1 {
            return (true, last_change);
        }
        if last_change.elapsed() >= idle {
            return (true, last_change);
        }
        if Instant::now() >= deadline {
            return (false, last_change);
        }
        tokio::time::sleep(POLL).await;
        let now = doubles.calls();
        if now != seen {
            seen = now;
            last_change = Instant::now();
        }
    }
}
