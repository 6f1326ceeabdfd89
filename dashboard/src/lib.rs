//! The AuditFlow dashboard: the browser UI, with its assets compiled into the binary, talking
//! only to the aggregator's public API. This crate is the library; `main.rs` is a thin binary
//! around it.
//!
//! * [`assets`] is the UI itself: `/` and `/assets/*`, compiled in, with a strict
//!   Content-Security-Policy. The aggregator mounts it in embedded mode.
//! * [`serve`] is `auditflow-dashboard`: the assets plus a reverse proxy of `/api/v1/*` to the
//!   aggregator, so the browser talks to one origin (no CORS, and the token never leaves the
//!   `Authorization` header).

pub mod config;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
pub use config::Config;
use tokio_util::sync::CancellationToken;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON: &str = include_str!("../assets/favicon.svg");

/// Scripts, styles and connections only from this origin, no inline script or style, no
/// framing: even if event-derived text were ever put into the page as markup, it could not run.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'";

/// Largest request body passed to the API (the API's own limit).
const MAX_BODY: usize = 1 << 20;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files; revalidate so that an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The UI: `/`, `/index.html` and `/assets/*`, for any router state.
pub fn assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let index = || async { asset("text/html; charset=utf-8", INDEX) };
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
}

/// Where the API is: host, port and path prefix of `api_url` (plain HTTP inside the cluster).
#[derive(Clone, Debug)]
struct Upstream {
    host: String,
    port: u16,
    prefix: String,
}

impl Upstream {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .context("api_url must be an http:// URL (the dashboard speaks plain HTTP to the aggregator inside the cluster)")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().context("api_url: bad port")?),
            None => (authority, 80),
        };
        anyhow::ensure!(!host.is_empty(), "api_url: no host");
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: format!("/{}", path.trim_end_matches('/')).trim_end_matches('/').to_owned(),
        })
    }
}

fn bad_gateway(message: String) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        axum::Json(serde_json::json!({ "error": "bad_gateway", "message": message })),
    )
        .into_response()
}

/// Sends one request to the aggregator over a fresh connection; the answer's body streams
/// through (the live stream stays open as long as the browser keeps it).
async fn forward(
    up: &Upstream,
    method: Method,
    path_and_query: &str,
    headers: &axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    let where_ = format!("{}:{}", up.host, up.port);
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((up.host.as_str(), up.port)),
    )
    .await
    .map_err(|_| format!("the aggregator at {where_} did not answer within 5 s"))?
    .map_err(|e| format!("the aggregator at {where_} is not reachable: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP to the aggregator failed: {e}"))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path_and_query}", up.prefix))
        .header(header::HOST, where_.as_str());
    // Only what the API reads; cookies and the like stay here.
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("the aggregator did not answer: {e}"))?;
    let (parts, incoming) = resp.into_parts();
    let mut out = Response::new(Body::new(incoming));
    *out.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(out)
}

async fn proxy(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({
                    "error": "payload_too_large",
                    "message": "request bodies are limited to 1 MiB",
                })),
            )
                .into_response();
        }
    };
    match forward(&up, parts.method, &path, &parts.headers, body).await {
        Ok(r) => r,
        Err(message) => {
            tracing::warn!(%message, "API request failed");
            bad_gateway(message)
        }
    }
}

/// Ready when the aggregator answers its `/readyz` with 200.
async fn readyz(State(up): State<Upstream>) -> (StatusCode, String) {
    match forward(&up, Method::GET, "/readyz", &axum::http::HeaderMap::new(), Bytes::new()).await {
        Ok(r) if r.status() == StatusCode::OK => (StatusCode::OK, "ready\n".into()),
        Ok(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the aggregator is not ready ({})\n", r.status()),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// The standalone dashboard's router: the UI, `/api/v1/*` forwarded to the aggregator,
/// `/healthz` and `/readyz`.
pub fn router(config: &Config) -> anyhow::Result<Router> {
    let up = Upstream::parse(&config.api_url)?;
    Ok(assets()
        .route("/api/v1/{*rest}", any(proxy))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "not_found", "message": "no such page"})),
            )
        })
        .with_state(up))
}

/// Runs `auditflow-dashboard` until `cancel` fires.
pub async fn serve(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let app = router(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("bind {} (is the port taken?)", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, api = %config.api_url, "dashboard serving");
    // The dashboard has no metrics port: connections refused over the cap are logged only.
    runtime::http::serve(listener, app, runtime::http::Limits::default(), cancel)
        .await
        .context("serve")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = Upstream::parse("http://auditflow-aggregator:8000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("auditflow-aggregator", 8000, "")
        );
        let u = Upstream::parse("http://10.0.0.5/auditflow/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("10.0.0.5", 80, "/auditflow"));
        assert!(Upstream::parse("https://x:8000").is_err());
        assert!(Upstream::parse("http://:8000").is_err());
        assert!(Upstream::parse("http://x:port").is_err());
    }

    #[test]
    fn assets_are_compiled_in_and_load_no_outside_resource() {
        for text in [INDEX, APP_JS, APP_CSS] {
            assert!(!text.contains("https://"), "no CDN or outside URL in the assets");
        }
        assert!(INDEX.contains("assets/app.js") && INDEX.contains("assets/app.css"));
        // Data is never parsed as HTML.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("insertAdjacentHTML"));
        assert!(!INDEX.contains("<script>"), "no inline script: the CSP forbids it");
    }
}
