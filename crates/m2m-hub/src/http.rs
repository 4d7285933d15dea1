//! The HTTP API of PROTOCOL.md A3 (`/`, `/info`, `/health`, `/agents`, `/stats`, JSON 404),
//! plus `/metrics`, and the router that also mounts `/ws`. Every response is JSON with
//! `Access-Control-Allow-Origin: *` (metrics excepted: Prometheus text).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::connect_info::Connected;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::map_response_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use m2m_proto::hub::{self as proto, ErrorReply, Reply};
use m2m_proto::limits::{self, PROTOCOL_VERSION};
use serde_json::{json, Value};
use tower_http::cors::CorsLayer;

use crate::directory::{AgentsPageView, Filter};
use crate::metered::ChargedBody;
use crate::metrics::Refusal;
use crate::server::LocalAddr;
use crate::state::HubState;
use m2m_proto::hub::errors;

/// The remote address of a connection, for plain TCP and TLS listeners alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// The hub's routes. Tests can drive it with `tower::ServiceExt::oneshot` (the `/ws` route
/// needs [`ClientAddr`] connect info, which `serve` supplies).
pub fn router(state: Arc<HubState>) -> Router {
    let dashboard = state.config.dashboard.then(|| {
        crate::dashboard::router(state.clone())
            .layer(map_response_with_state(state.clone(), charge_response))
    });
    let api = Router::new()
        .route("/", get(info))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/agents", get(agents))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/ws", get(crate::ws::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(map_response_with_state(state.clone(), charge_response))
        .layer(axum::middleware::map_response(allow_any_origin))
        .layer(CorsLayer::permissive())
        .with_state(state);
    // Merged after the CORS layers: the dashboard is same-origin only.
    match dashboard {
        Some(d) => api.merge(d),
        None => api,
    }
}

/// Charges a response body to the reply share of the memory budget until it is written
/// ([`ChargedBody`]), as a WebSocket's queued replies are; a body the share cannot hold now
/// is refused with 503 `overloaded` (`m2m_hub_refused_total{limit="memory_reply"}`).
/// Streamed bodies (the dashboard's event stream, bounded by its own byte budget) and
/// bodies within the allowance pass as they are.
async fn charge_response(State(state): State<Arc<HubState>>, response: Response) -> Response {
    let Some(len) = response.body().size_hint().exact() else {
        return response;
    };
    let cost = ChargedBody::cost(usize::try_from(len).unwrap_or(usize::MAX));
    if cost == 0 {
        return response;
    }
    let Some(charge) = state.admission.memory.replies.charge(cost) else {
        state.metrics.refused(Refusal::MemoryReply);
        return json_error(StatusCode::SERVICE_UNAVAILABLE, errors::OVERLOADED);
    };
    let (parts, body) = response.into_parts();
    // A whole body (its size is exact) is ready at once.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Response::from_parts(parts, Body::new(ChargedBody::new(bytes, charge))),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "serialization_failed"),
    }
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A 200 JSON body indented by two spaces: the original sends `/`, `/info`, `/agents` and
/// `/stats` as `JSON.stringify(data, null, 2)`, and serde_json's pretty printer writes the
/// same bytes (two-space indent, `"key": value`, `[]` and `{}` for empty containers).
struct Pretty<T>(T);

impl<T: serde::Serialize> IntoResponse for Pretty<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec_pretty(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "serialization_failed"),
        }
    }
}

/// A 4xx/5xx JSON error `{"status":"error","error":code}`.
pub(crate) fn json_error(status: StatusCode, code: &str) -> Response {
    (status, Json(ErrorReply::new(code, None))).into_response()
}

/// This hub's WebSocket URL: configured (`--public-url`), or the address the client
/// connected to. Never the request's `Host`: the client chooses that, and a page or cache
/// that shows `/info` would then point other agents wherever the client liked.
pub(crate) fn websocket_url(state: &HubState, local: Option<LocalAddr>) -> String {
    if let Some(url) = &state.config.public_url {
        return url.clone();
    }
    let scheme = if state.config.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let host = local.map_or(state.config.bind, |LocalAddr(addr)| addr);
    format!("{scheme}://{host}/ws")
}

/// `/` and `/info`: the original's document, key for key (clients may read it); the
/// URLs are this hub's and the quickstart speaks of this project.
async fn info(
    State(state): State<Arc<HubState>>,
    local: Option<Extension<LocalAddr>>,
) -> Pretty<Value> {
    let ws = websocket_url(&state, local.map(|Extension(l)| l));
    let counts = state.directory.counts();
    let s = state.stats();
    Pretty(json!({
        "protocol": {
            "name": "M2M - Molt To Molt",
            "version": PROTOCOL_VERSION,
            "description": "Decentralized P2P encrypted communication protocol for AI agents",
            "encryption": "X25519 + AES-256-GCM",
            "websocket": ws,
            "github": "https://github.com/m2mai",
            "twitter": "https://x.com/m2m_ai",
        },
        "hub": {
            "status": "running",
            "uptime": s.hub.uptime,
            "activeConnections": s.hub.active_connections,
        },
        "agents": {
            "online": counts.online,
            "idle": counts.idle,
            "total": counts.total,
        },
        "quickstart": {
            "1_install": "cargo install --path crates/m2m-cli",
            "2_code": format!("m2m agent --hub {ws} --port 4000 --capabilities chat"),
            "3_discover": format!("m2m discover --hub {ws}"),
            "4_send": format!("m2m send --hub {ws} <peer-id> hello '{{\"msg\":\"Hi!\"}}'"),
            "5_receive": "m2m agent prints every message it receives",
        },
        "api": {
            "http": {
                "GET /": "This protocol info",
                "GET /health": "Health check",
                "GET /agents": "List agents (?capability=x&status=online&limit=100&offset=0)",
                "GET /stats": "Hub statistics",
            },
            "websocket": {
                "url": ws,
                "actions": {
                    "register": { "params": "address, capabilities[], metadata{}", "returns": "id, address" },
                    "discover": { "params": "capabilities[], status, limit, offset", "returns": "agents[]" },
                    "find": { "params": "capability", "returns": "agents[]" },
                    "lookup": { "params": "id", "returns": "agent" },
                    "heartbeat": { "params": "id", "returns": "timestamp" },
                    "disconnect": { "params": "id", "returns": "ok" },
                },
            },
        },
        "example": {
            "connect": "let agent = m2m_agent::Agent::builder().port(4000).capabilities([\"chat\"]).connect().await?;",
            "send": "agent.send(&peer_id, \"task\", json!({\"action\": \"process\"})).await?;",
            "receive": "while let Some(msg) = agent.next_message().await { agent.respond(&msg, json!({\"result\": \"done\"})).await?; }",
            "broadcast": "agent.broadcast(\"alert\", json!({\"msg\": \"Hello all!\"}), BroadcastOptions::default()).await?;",
        },
    }))
}

/// `/health`: 200 `healthy` while the registry takes writes; 503 `degraded` while it does
/// not (reads are still served from memory, writes fail `unavailable`).
async fn health(State(state): State<Arc<HubState>>) -> Response {
    let writable = state.health.writable(&*state.registry).await;
    let now = chrono::DateTime::from_timestamp_millis(state.now_ms()).unwrap_or_default();
    let (code, status) = if writable {
        (StatusCode::OK, "healthy")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    let body = proto::Health {
        status: status.to_owned(),
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        version: PROTOCOL_VERSION.to_owned(),
    };
    (code, Json(body)).into_response()
}

async fn agents(
    State(state): State<Arc<HubState>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return json_error(StatusCode::BAD_REQUEST, errors::INVALID_QUERY);
    };
    let as_value = |k: &str| query.get(k).map(|v| Value::String(v.clone()));
    let (limit, offset) = match proto::page(
        &as_value("limit"),
        &as_value("offset"),
        limits::DEFAULT_DISCOVER_LIMIT,
    ) {
        Ok(p) => p,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.code()),
    };
    let capability: Vec<String> = query
        .get("capability")
        .filter(|c| !c.is_empty())
        .cloned()
        .into_iter()
        .collect();
    let filter = Filter {
        exclude: None,
        capabilities: &capability,
        status: query
            .get("status")
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        limit: limit as usize,
        offset,
    };
    let agents = state.directory.list(state.now_ms(), &filter);
    Pretty(AgentsPageView {
        count: agents.len(),
        total: state.directory.listable(),
        limit,
        offset,
        agents,
    })
    .into_response()
}

async fn stats(State(state): State<Arc<HubState>>) -> Pretty<Reply<proto::Stats>> {
    Pretty(Reply::ok(state.stats(), None))
}

async fn metrics(State(state): State<Arc<HubState>>) -> Response {
    let mut body = state.metrics.render(&state.gauges());
    state
        .mailbox
        .counters
        .render(&mut body, state.mailbox.subscriptions());
    if state.config.dashboard {
        state.dashboard.render_metrics(&mut body);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found(
    State(state): State<Arc<HubState>>,
    local: Option<Extension<LocalAddr>>,
) -> Response {
    let body = json!({
        "error": "Not found",
        "endpoints": ["/", "/health", "/agents", "/stats"],
        "websocket": websocket_url(&state, local.map(|Extension(l)| l)),
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
}
