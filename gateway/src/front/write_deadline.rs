//! Writes to a client under a deadline, with the link's close watched meanwhile.
//!
//! A client that stops reading fills its socket's buffers, and the next write to it waits for
//! as long as the client likes. Every write a connection makes goes through [`watched`], so such
//! a client is dropped after `limits.write_timeout`, and a kick, a takeover or shutdown reaches
//! its connection while the write waits rather than after it.

use crate::live::link::CloseReason;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// How long the last writes of a closing connection (its DISCONNECT or close frame, the
/// answers still due) may take: the peer is going anyway.
pub const CLOSING_WRITE: Duration = Duration::from_secs(1);

/// How a watched write ended.
#[derive(Debug)]
pub enum Watched<T> {
    /// The write finished, with its own result.
    Finished(T),
    /// It did not finish by the deadline.
    TimedOut,
    /// The link was closed first. `started`: the write had begun, so the stream may hold part
    /// of what it was writing, and nothing more may be written to a byte stream after it.
    Closed { reason: CloseReason, started: bool },
}

/// Runs `write` until it finishes, `deadline` passes or `closed` resolves, whichever is first; a
/// close that is already due wins before the write starts.
pub async fn watched<W: Future>(
    write: W,
    deadline: Instant,
    mut closed: Pin<&mut impl Future<Output = CloseReason>>,
) -> Watched<W::Output> {
    let write = tokio::time::timeout_at(deadline, write);
    tokio::pin!(write);
    let mut started = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(reason) = closed.as_mut().poll(cx) {
            return Poll::Ready(Watched::Closed { reason, started });
        }
        started = true;
        write.as_mut().poll(cx).map(|written| match written {
            Ok(output) => Watched::Finished(output),
            Err(_) => Watched::TimedOut,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::envelope::DisconnectReason;

    fn kicked() -> CloseReason {
        CloseReason::new(DisconnectReason::Kicked, "kicked")
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_ends_times_out() {
        let closed = std::future::pending::<CloseReason>();
        tokio::pin!(closed);
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = watched(std::future::pending::<()>(), deadline, closed.as_mut()).await;
        assert!(matches!(written, Watched::TimedOut));
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_due_before_the_write_wins_and_nothing_was_started() {
        let closed = std::future::ready(kicked());
        tokio::pin!(closed);
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = watched(std::future::ready(()), deadline, closed.as_mut()).await;
        assert!(matches!(written, Watched::Closed { started: false, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_close_while_the_write_waits_ends_it() {
        let closed = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            kicked()
        };
        tokio::pin!(closed);
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = watched(std::future::pending::<()>(), deadline, closed.as_mut()).await;
        match written {
            Watched::Closed { reason, started } => {
                assert!(started);
                assert_eq!(reason.kind, DisconnectReason::Kicked);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_finishes_gives_its_result() {
        let closed = std::future::pending::<CloseReason>();
        tokio::pin!(closed);
        let deadline = Instant::now() + Duration::from_secs(30);
        let written = watched(async { 7 }, deadline, closed.as_mut()).await;
        assert!(matches!(written, Watched::Finished(7)));
    }
}
