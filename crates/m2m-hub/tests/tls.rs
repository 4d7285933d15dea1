//! `wss://` served by the hub itself (tokio-rustls), with a self-signed certificate.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Client;
use m2m_hub::{Hub, HubConfig, TlsConfig};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio_tungstenite::Connector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_works_without_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();

    let mut cfg = HubConfig::in_memory();
    cfg.tls = Some(TlsConfig {
        cert_path,
        key_path,
    });
    let hub = Hub::start(cfg).await.unwrap();
    assert!(hub.ws_url().starts_with("wss://"));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws", hub.local_addr().port());
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        false,
        Some(Connector::Rustls(Arc::new(client))),
    )
    .await
    .unwrap();
    let mut c = Client::greeted(ws).await;
    let reply = c
        .req(json!({"action":"register","address":"me:4000","correlationId":"t"}))
        .await;
    assert_eq!(reply["status"], "ok");
    assert_eq!(reply["address"], "127.0.0.1:4000");

    // A plain-text client is not served (and does not stall the hub).
    let plain =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", hub.local_addr().port()))
            .await;
    assert!(plain.is_err());
    let stats = c.req(json!({"action":"stats"})).await;
    assert_eq!(stats["hub"]["activeConnections"], 1);

    c.close().await;
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tls_files_are_a_clear_start_error() {
    let mut cfg = HubConfig::in_memory();
    cfg.tls = Some(TlsConfig {
        cert_path: "/nonexistent/cert.pem".into(),
        key_path: "/nonexistent/key.pem".into(),
    });
    let err = Hub::start(cfg).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
