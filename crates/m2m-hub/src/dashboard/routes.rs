//! The dashboard's HTTP routes: the page and its assets, the event stream, the query API.
//! Every response carries a strict Content-Security-Policy: the page loads only its own
//! script and stylesheet, runs no inline code, and cannot be framed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::Serialize;

use super::push::sse_event;
use super::query::{self, AgentQuery};
use crate::defaults::dashboard::{MAX_STREAM_LIFETIME, RETRY_MS, STATS_INTERVAL};
use crate::state::HubState;

/// No inline script or style, nothing from elsewhere, no framing, no plugins, no forms.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The dashboard's routes, to be merged into the hub's router (after its CORS layers: the
/// dashboard is same-origin only).
pub fn router(state: Arc<HubState>) -> Router {
    Router::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route("/dashboard/events", get(events))
        .route("/dashboard/api/stats", get(stats))
        .route("/dashboard/api/history", get(history))
        .route("/dashboard/api/agents", get(agents))
        .route("/dashboard/api/agents/{id}", get(agent))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Embedded in this binary: the same URL changes content only with a new hub.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "serialization_failed"),
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::json!({"status": "error", "error": code}).to_string(),
    )
        .into_response()
}

async fn stats(State(state): State<Arc<HubState>>) -> Response {
    json(&state.dashboard.figures(&state))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryBody {
    interval_ms: u128,
    points: Vec<super::history::Point>,
}

async fn history(State(state): State<Arc<HubState>>) -> Response {
    json(&HistoryBody {
        interval_ms: STATS_INTERVAL.as_millis(),
        points: state.dashboard.history.lock().points(),
    })
}

async fn agents(
    State(state): State<Arc<HubState>>,
    q: Result<Query<AgentQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "invalid_query");
    };
    match state.dashboard.views.query(&state.directory, &q) {
        Ok(page) => json(&page),
        Err(_) => error(StatusCode::BAD_REQUEST, "search_too_long"),
    }
}

async fn agent(State(state): State<Arc<HubState>>, Path(id): Path<String>) -> Response {
    match query::detail(&state.directory, &id) {
        Some(d) => json(&d),
        None => error(StatusCode::NOT_FOUND, "agent_not_found"),
    }
}

/// `text/event-stream`: `retry`, the current figures, then whatever the sampler pushes,
/// until the client is dropped, the stream has lived [`MAX_STREAM_LIFETIME`], or the hub
/// shuts down (graceful shutdown waits for open responses, so streams must end then).
async fn events(State(state): State<Arc<HubState>>) -> Response {
    let dash = &state.dashboard;
    let Ok(sub) = dash.push.subscribe() else {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "too_many_dashboards");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let figures = serde_json::to_string(&dash.figures(&state)).unwrap_or_default();
    let first = Bytes::from(format!(
        "retry: {RETRY_MS}\n\n{}",
        sse_event("stats", &figures)
    ));
    let shutdown = state.shutdown.clone();
    let deadline = tokio::time::Instant::now() + MAX_STREAM_LIFETIME;
    let stream = futures_util::stream::unfold((sub, Some(first)), move |(mut sub, first)| {
        let shutdown = shutdown.clone();
        async move {
            if let Some(bytes) = first {
                return Some((Ok::<_, Infallible>(bytes), (sub, None)));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => None,
                () = tokio::time::sleep_until(deadline) => None,
                next = sub.next() => next.map(|bytes| (Ok(bytes), (sub, None))),
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            // Reverse proxies that buffer responses would hold events back.
            (
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
