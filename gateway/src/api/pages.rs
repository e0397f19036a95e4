//! The gateway's own web pages and the JavaScript client they are built on, taken into the
//! binary when it is built (so building the gateway needs no Node), and served from memory: the
//! demo chat at `/` (`web.demo`) and the operations console at `/console` (`web.console`).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use broker_config::Web;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where the JavaScript client (`clients/js`) is served, as one ES module a page imports.
pub const CLIENT_BUNDLE_PATH: &str = "/client/gateway-client.js";

/// One file of a page, served as it is.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static str) -> Self {
        Self {
            path,
            content_type,
            body,
        }
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The JavaScript client, built from `clients/js` into `gateway/assets` (`npm run bundle`; the
/// client's tests check that it is up to date), and the stylesheet of the pages.
const SHARED: &[Asset] = &[
    Asset::new(
        CLIENT_BUNDLE_PATH,
        JS,
        include_str!("../../assets/gateway-client.js"),
    ),
    Asset::new(
        "/web/style.css",
        CSS,
        include_str!("../../assets/web/style.css"),
    ),
];

const DEMO: &[Asset] = &[
    Asset::new("/", HTML, include_str!("../../assets/web/demo.html")),
    Asset::new("/web/demo.js", JS, include_str!("../../assets/web/demo.js")),
];

const CONSOLE: &[Asset] = &[
    Asset::new(
        "/console",
        HTML,
        include_str!("../../assets/web/console.html"),
    ),
    Asset::new(
        "/web/console.js",
        JS,
        include_str!("../../assets/web/console.js"),
    ),
];

/// The routes of the pages `web` turns on.
pub fn routes<S: Clone + Send + Sync + 'static>(web: &Web) -> Router<S> {
    let mut assets: Vec<&'static Asset> = SHARED.iter().collect();
    if web.demo() {
        assets.extend(DEMO);
    }
    if web.console {
        assets.extend(CONSOLE);
    }
    assets.into_iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || serve(asset)))
    })
}

/// Revalidated on every load: the paths stay when the gateway is upgraded.
async fn serve(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
}

/// Logs where the pages are, for a person who just started the gateway: an address bound to
/// every interface is shown as loopback, which a browser on the same machine can open.
pub fn announce(web: &Web, http: SocketAddr) {
    let shown = match http.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http.port()),
        _ => http,
    };
    if web.demo() {
        tracing::info!("demo at http://{shown}/");
    }
    if web.dev_mode() {
        tracing::warn!(
            "dev mode: POST /dev/tokens signs anyone in as any user; set web.dev_mode = false (or run with a configuration file) where others can reach this port"
        );
    }
    if web.console {
        tracing::info!("operations console at http://{shown}/console");
    }
}
