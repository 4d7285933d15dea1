//! The hub's HTTP API through its real router (`m2m_hub::router`): any request target
//! (path and query string: `/agents?limit=…&offset=…&capability=…&status=…`), method and
//! headers. Every answer carries `Access-Control-Allow-Origin: *` (but the dashboard's own,
//! which are same-origin and carry its Content-Security-Policy), none is a 500, and every
//! JSON answer is JSON. The input is a method byte, then lines: the request target, then
//! `name: value` headers.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use m2m_fuzz::hub::with_hub;
use m2m_hub::{router, ClientAddr};
use tower::ServiceExt;

/// Replies are small; this only bounds a bug.
const MAX_BODY: usize = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = match m % 8 {
        0 => Method::POST,
        1 => Method::OPTIONS,
        2 => Method::HEAD,
        3 => Method::DELETE,
        _ => Method::GET,
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    // What hyper would hand the router: a request target it could parse.
    let mut builder = Request::builder().method(method).uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        builder = builder.header(&line[..colon], value);
    }
    let Ok(mut request) = builder.body(Body::empty()) else {
        return;
    };
    request
        .extensions_mut()
        .insert(ConnectInfo(ClientAddr(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            40000,
        )))));
    let dashboard = request.uri().path().starts_with("/dashboard");
    with_hub(|state| async move {
        let response = router(state)
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let any_origin = response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.as_bytes());
        // The dashboard is same-origin only: its own answers carry no CORS header and do carry
        // its Content-Security-Policy. Every other answer is the API's, open to any origin.
        let dashboard_own = any_origin.is_none()
            && dashboard
            && response
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY);
        assert!(
            dashboard_own || any_origin == Some(&b"*"[..]),
            "{status} answer without Access-Control-Allow-Origin: *"
        );
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        // The dashboard's event stream never ends by itself: its head is checked above, its
        // body is the push tests' (m2m-hub dashboard::push) to bound.
        let stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if stream {
            return;
        }
        let body = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .expect("a body within bounds");
        if json && !body.is_empty() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                "{status} answer is not JSON: {}",
                String::from_utf8_lossy(&body)
            );
        }
    });
});
