//! Requests that must take effect one after another while the connection goes on reading (a
//! device's acks and syncs): each waits for the one before it to say it is done.

use tokio::sync::oneshot;

/// Requests that must take effect one after another, while the connection goes on reading:
/// each waits for the one before it to say it is done (or to be dropped).
#[derive(Default)]
pub struct InOrder {
    last: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// A request's place in an [`InOrder`] line.
pub struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl InOrder {
    pub fn take_turn(&self) -> Turn {
        let (done, next) = oneshot::channel();
        let previous = self.last.lock().expect("in-order lock").replace(next);
        Turn { previous, done }
    }
}

impl Turn {
    /// Waits for the previous request; the returned sender lets the next one go when dropped.
    pub async fn wait(self) -> oneshot::Sender<()> {
        if let Some(previous) = self.previous {
            let _ = previous.await;
        }
        self.done
    }
}
