//! Playing one recorded session on a connected transport: each step at its scaled time, every
//! answer checked, and the session closed once its answers are in.
//!
//! The transports differ only in how they send a step and read what comes back ([`Link`]); the
//! timing, the waiting for answers and the accounting are here, once.

use super::script::{scaled, Action, SessionScript};
use super::tally::Tally;
use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// When the replay's time 0 is, and how fast it runs.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub start: Instant,
    pub speed: f64,
}

impl Clock {
    /// The instant at which an event recorded at `at_ms` is due.
    pub fn due(&self, at_ms: u64) -> Instant {
        self.start + scaled(at_ms, self.speed)
    }
}

/// A request sent and not yet answered: its kind and what it was, for failures.
#[derive(Debug, Clone)]
pub struct Pending {
    pub kind: &'static str,
    pub what: String,
}

impl Pending {
    pub fn of(action: &Action) -> Self {
        let what = match action {
            Action::Subscribe { topic, .. } => format!("subscribe to {topic}"),
            Action::Unsubscribe { topic } => format!("unsubscribe from {topic}"),
            Action::Publish { topic, .. } => format!("publish on {topic}"),
        };
        Self {
            kind: action.kind(),
            what,
        }
    }
}

/// Why a connection ended before the replay closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The gateway closed it because a newer connection of the same device took over.
    TakenOver,
    /// Anything else, in words.
    Lost(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TakenOver => f.write_str("taken over by a newer connection of the device"),
            Self::Lost(why) => f.write_str(why),
        }
    }
}

impl From<String> for Ended {
    fn from(why: String) -> Self {
        Self::Lost(why)
    }
}

/// A connected session's transport.
pub trait Link: Send {
    /// Sends one step without waiting for its answer.
    fn send(&mut self, action: &Action) -> impl Future<Output = Result<(), String>> + Send;
    /// Reads the next thing from the gateway and checks it (answers, messages); `Err` when the
    /// connection ended. Must be cancel-safe: it races the clock.
    fn receive(&mut self, tally: &Tally) -> impl Future<Output = Result<(), Ended>> + Send;
    /// Requests sent and still unanswered.
    fn outstanding(&self) -> Vec<Pending>;
    /// Ends the session as a client does.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Plays `session`'s steps on `link`, then closes it at the recorded disconnect (or at the end
/// of the recording, `end_ms`), after waiting up to `patience` for the answers still due. A
/// session the recording shows taken over by a newer connection of its device ends when the
/// gateway closes it for that.
pub async fn play(
    mut link: impl Link,
    session: &SessionScript,
    end_ms: u64,
    clock: Clock,
    tally: &Tally,
    patience: Duration,
) {
    let end = clock.due(session.disconnect_ms.unwrap_or(end_ms));
    match drive(&mut link, session, end, clock, tally, patience).await {
        Ok(()) => {}
        Err(Ended::TakenOver) if session.taken_over => {}
        Err(ended) => return tally.fail("connection", format!("{}: {ended}", session.name())),
    }
    for pending in link.outstanding() {
        tally.fail(
            pending.kind,
            format!(
                "{}: no answer to {} within {patience:?}",
                session.name(),
                pending.what
            ),
        );
    }
    if session.disconnect_ms.is_some() {
        tally.fire("disconnect", end);
    }
    link.close().await;
}

/// Sends the steps at their times, reads until `end`, then waits for the answers still due.
async fn drive(
    link: &mut impl Link,
    session: &SessionScript,
    end: Instant,
    clock: Clock,
    tally: &Tally,
    patience: Duration,
) -> Result<(), Ended> {
    for step in &session.steps {
        let due = clock.due(step.at_ms);
        receive_until(link, due, Until::Deadline, tally).await?;
        tally.fire(step.action.kind(), due);
        if let Err(e) = link.send(&step.action).await {
            tally.fail(step.action.kind(), format!("{}: {e}", session.name()));
        }
    }
    receive_until(link, end, Until::Deadline, tally).await?;
    receive_until(link, Instant::now() + patience, Until::Answered, tally).await
}

/// How long [`receive_until`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Until the deadline.
    Deadline,
    /// Until every request is answered, or the deadline.
    Answered,
}

/// Reads from the gateway (checking what comes) as long as `until` says; early only when the
/// connection ends.
async fn receive_until(
    link: &mut impl Link,
    deadline: Instant,
    until: Until,
    tally: &Tally,
) -> Result<(), Ended> {
    let deadline = sleep_until(deadline);
    tokio::pin!(deadline);
    while until == Until::Deadline || !link.outstanding().is_empty() {
        tokio::select! {
            biased;
            () = &mut deadline => return Ok(()),
            received = link.receive(tally) => received?,
        }
    }
    Ok(())
}
