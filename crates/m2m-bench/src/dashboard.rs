//! Open hub dashboards, as load: each holds `GET /dashboard/events` open and reads every
//! event, and queries its page (`/dashboard/api/agents?limit=50`) when told the directory
//! changed and every 10 s, as the page does. Used by `m2m bench hub --dashboards N` to run
//! each action phase with and without N of them open, in one run.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::defaults::{DASHBOARD_ANSWER_TIMEOUT, DASHBOARD_PAGE_REFRESH as PAGE_REFRESH};

/// N open dashboards; dropping it closes them.
#[derive(Debug)]
pub struct Dashboards {
    _tasks: JoinSet<()>,
    /// Events read by all of them.
    pub events: Arc<AtomicU64>,
    /// Page queries made by all of them.
    pub queries: Arc<AtomicU64>,
}

/// Opens `n` dashboards on the hub at `addr`; returns once every stream has sent its first
/// event.
pub async fn open(addr: SocketAddr, n: usize) -> anyhow::Result<Dashboards> {
    let events = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let mut tcp = TcpStream::connect(addr).await?;
        let req =
            "GET /dashboard/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n";
        tcp.write_all(req.as_bytes()).await?;
        let mut first = vec![0u8; 4096];
        let got = tokio::time::timeout(DASHBOARD_ANSWER_TIMEOUT, tcp.read(&mut first))
            .await
            .with_context(|| format!("dashboard {i}: no answer"))??;
        let head = String::from_utf8_lossy(&first[..got]);
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "dashboard {i}: {} (is the hub's dashboard on?)",
                head.lines().next().unwrap_or("")
            );
        }
        let (events, queries) = (events.clone(), queries.clone());
        tasks.spawn(async move {
            let _ = read_stream(tcp, addr, &events, &queries).await;
        });
    }
    Ok(Dashboards {
        _tasks: tasks,
        events,
        queries,
    })
}

async fn read_stream(
    mut tcp: TcpStream,
    addr: SocketAddr,
    events: &AtomicU64,
    queries: &AtomicU64,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut refresh = tokio::time::interval(PAGE_REFRESH);
    loop {
        tokio::select! {
            n = tcp.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&buf[..n]);
                events.fetch_add(text.matches("event: ").count() as u64, Ordering::Relaxed);
                if text.contains("event: changed") {
                    query_page(addr).await?;
                    queries.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = refresh.tick() => {
                query_page(addr).await?;
                queries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn query_page(addr: SocketAddr) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    let req = "GET /dashboard/api/agents?q=&capability=&status=&offset=0&limit=50 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    tcp.write_all(req.as_bytes()).await?;
    let mut sink = Vec::new();
    tcp.read_to_end(&mut sink).await?;
    Ok(())
}
