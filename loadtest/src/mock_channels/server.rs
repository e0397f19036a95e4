//! What both doubles share: a real HTTP server on a local port that stops when its handle is
//! dropped, a per-path call counter, queued failure and delay injection, and random ids.
//!
//! The doubles are real servers (not trait mocks) so that the gateway's actual HTTP client,
//! timeouts, retries and JSON handling are exercised exactly as against the providers.

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running server; dropping it stops accepting connections and closes idle ones.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0 for any free port) and serves `router` on it in a spawned task.
    pub(crate) async fn start(addr: SocketAddr, router: Router) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                // An error means the handle is gone, which also means stop.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits (at most 5 s, for calls still being answered) until it is gone.
    pub(crate) async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // The graceful shutdown finishes calls in flight; the listener itself is closed as soon
        // as the serving task notices, so a dropped double frees its port promptly.
    }
}

/// HTTP calls per path, counted before any handler runs (so failed and rejected calls count too).
#[derive(Debug, Default, Clone)]
pub(crate) struct CallCounter(Arc<Mutex<HashMap<String, u64>>>);

impl CallCounter {
    /// Wraps `router` so that every request is counted under its path (without the query).
    pub(crate) fn layer(&self, router: Router) -> Router {
        router.layer(middleware::from_fn_with_state(self.clone(), count))
    }

    pub(crate) fn get(&self, path: &str) -> u64 {
        lock(&self.0).get(path).copied().unwrap_or(0)
    }
}

async fn count(State(counter): State<CallCounter>, request: Request, next: Next) -> Response {
    *lock(&counter.0)
        .entry(request.uri().path().to_owned())
        .or_default() += 1;
    next.run(request).await
}

/// Failures and delays queued by a test for the next send calls, consumed in order.
#[derive(Debug, Default)]
pub struct Injection {
    failures: VecDeque<i64>,
    delays: VecDeque<Duration>,
}

impl Injection {
    pub(crate) fn fail_next(&mut self, n: usize, code: i64) {
        self.failures.extend(std::iter::repeat_n(code, n));
    }

    pub(crate) fn delay_next(&mut self, n: usize, delay: Duration) {
        self.delays.extend(std::iter::repeat_n(delay, n));
    }

    /// The injected error code for this call, if one is queued.
    pub(crate) fn next_failure(&mut self) -> Option<i64> {
        self.failures.pop_front()
    }

    /// How long to hold this call's answer back (zero when nothing is queued).
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.delays.pop_front().unwrap_or_default()
    }
}

/// Locks a mutex, ignoring poisoning: a panicking test thread must not hide the double's state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `len` random lowercase hex digits.
pub(crate) fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// What a provider double's state gives the handle both doubles share ([`Double`]).
pub trait Provider: std::fmt::Debug + Send + 'static {
    type Config: Clone + Default;
    /// The provider's name, for messages.
    const NAME: &'static str;
    fn new(config: Self::Config) -> Self;
    fn config(&mut self) -> &mut Self::Config;
    fn injection(&mut self) -> &mut Injection;
    /// The provider's API, serving `state`.
    fn routes(state: Arc<Mutex<Self>>) -> Router;
}

/// A running provider double on a local port; dropping it stops the server.
#[derive(Debug)]
pub struct Double<P> {
    pub(crate) state: Arc<Mutex<P>>,
    calls: CallCounter,
    server: Server,
}

impl<P: Provider> Double<P> {
    /// Starts with the default configuration on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no local port can be bound (a test cannot go on without its double).
    pub async fn start() -> Self {
        Self::start_with(P::Config::default()).await
    }

    /// Starts with `config` on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no local port can be bound.
    pub async fn start_with(config: P::Config) -> Self {
        Self::bind(([127, 0, 0, 1], 0).into(), config)
            .await
            .unwrap_or_else(|e| panic!("binding the {} double to a local port: {e}", P::NAME))
    }

    /// Starts with `config` on `addr`.
    pub async fn bind(addr: SocketAddr, config: P::Config) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(P::new(config)));
        let calls = CallCounter::default();
        let server = Server::start(addr, calls.layer(P::routes(state.clone()))).await?;
        Ok(Self {
            state,
            calls,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`: what the gateway's `base_url` for the channel should be.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> P::Config {
        lock(&self.state).config().clone()
    }

    /// Changes the configuration while running.
    pub fn configure(&self, change: impl FnOnce(&mut P::Config)) {
        change(lock(&self.state).config());
    }

    /// The next `n` send calls answer the provider's error `code` and send nothing.
    pub fn fail_next(&self, n: usize, code: i64) {
        lock(&self.state).injection().fail_next(n, code);
    }

    /// The next `n` send calls are carried out but answered only after `delay`, so that a
    /// client with a shorter timeout gives up on a send that did happen.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        lock(&self.state).injection().delay_next(n, delay);
    }

    /// HTTP calls to the full `path`, failed ones included.
    pub(crate) fn counted(&self, path: &str) -> u64 {
        self.calls.get(path)
    }

    /// Stops the server, waiting for calls being answered.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
