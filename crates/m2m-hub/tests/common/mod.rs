//! Test helpers: hubs on SQLite or on a fresh PostgreSQL database, a WebSocket client, and a
//! bare HTTP/1.1 GET.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use m2m_hub::{Clock, HubConfig, ManualClock};
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the registry of a test lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A registry for one test; `drop_db` removes a PostgreSQL database afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    admin: Option<(String, String)>,
}

/// The superuser URL of the test PostgreSQL server. Missing is a failure, never a skip.
pub fn postgres_admin_url() -> String {
    std::env::var("M2M_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "M2M_TEST_POSTGRES is not set: storage tests need a PostgreSQL superuser URL such as \
             postgres://m2m:m2m@127.0.0.1:5432/postgres (scripts/test starts a local server and \
             sets it)"
        )
    })
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                url: "sqlite::memory:".into(),
                admin: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("m2m_hub_test_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to M2M_TEST_POSTGRES: {e}"));
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let base = &admin[..admin.rfind('/').unwrap()];
                TestDb {
                    url: format!("{base}/{name}"),
                    admin: Some((admin, name)),
                }
            }
        }
    }

    /// PostgreSQL: the database refuses new connections and its open ones are ended (an
    /// outage as the hub sees it).
    pub async fn cut_off(&self) {
        let name = self.name().to_owned();
        self.admin_exec(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .await;
        self.admin_exec(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await;
    }

    /// PostgreSQL: the database takes connections again after [`TestDb::cut_off`].
    pub async fn reconnect(&self) {
        let name = self.name().to_owned();
        self.admin_exec(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
            .await;
    }

    /// The database name (PostgreSQL).
    pub fn name(&self) -> &str {
        &self.admin.as_ref().unwrap().1
    }

    /// Runs SQL as the superuser on the server's admin database.
    pub async fn admin_exec(&self, sql: &str) {
        let (admin, _) = self.admin.as_ref().unwrap();
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }

    pub async fn drop_db(self) {
        if let Some((_, name)) = &self.admin {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            self.admin_exec(&sql).await;
        }
    }
}

/// Start of the manual clock in tests (a fixed, realistic time).
pub const T0: i64 = 1_795_547_757_000;

/// A test hub config on `db` with a manual clock and no background timing surprises.
pub fn config(db: &TestDb) -> (HubConfig, ManualClock) {
    let (clock, handle) = Clock::manual(T0);
    let mut cfg = HubConfig::in_memory();
    cfg.database = db.url.clone();
    cfg.clock = clock;
    // The periodic sweep must not race the explicit ones the tests run.
    cfg.sweep.interval = Duration::from_secs(3600);
    cfg.storage.acquire_timeout = Duration::from_secs(2);
    (cfg, handle)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A hub WebSocket client.
pub struct Client {
    pub ws: Ws,
    /// The 2.1 challenge nonce the hub sent first on this WebSocket.
    pub nonce: String,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client::greeted(ws).await
    }

    /// Wraps an open WebSocket and reads the 2.1 challenge, which the hub sends before
    /// anything else. Reading it here — as an original agent ignores it — keeps `recv` and
    /// `req` seeing replies only, exactly as against a 2.0 hub; any further unsolicited
    /// message would still show up in `recv` and fail the test that got it.
    pub async fn greeted(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            nonce: String::new(),
        };
        let first = c.recv().await.expect("hub closed before its challenge");
        assert_eq!(first["event"], "challenge", "first message: {first}");
        let nonce = first["nonce"].as_str().unwrap().to_owned();
        assert_eq!(
            first,
            serde_json::json!({"event":"challenge","nonce":nonce}),
            "challenge has exactly these fields"
        );
        assert_eq!(nonce.len(), 64, "{nonce}");
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        c.nonce = nonce;
        c
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .unwrap();
    }

    /// The next text reply (pings skipped); `None` when the hub closed the socket.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("no reply from the hub within 30 s")?;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub async fn req(&mut self, request: Value) -> Value {
        self.send_text(request.to_string()).await;
        self.recv().await.expect("hub closed the connection")
    }

    /// Registers with a port-bearing address; returns the id.
    pub async fn register(&mut self, port: u16, caps: &[&str]) -> String {
        let reply = self
            .req(serde_json::json!({
                "action": "register",
                "address": format!("10.0.0.1:{port}"),
                "capabilities": caps,
                "correlationId": "r",
            }))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        reply["id"].as_str().unwrap().to_owned()
    }

    /// A 2.1 `register` signed by `identity` over this WebSocket's nonce; the raw reply.
    pub async fn register_signed(
        &mut self,
        identity: &m2m_proto::identity::Identity,
        address: &str,
        caps: &[&str],
        metadata: Value,
    ) -> Value {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        let message = m2m_proto::identity::registration_message(
            &self.nonce,
            &identity.public(),
            address,
            &caps,
        );
        self.req(serde_json::json!({
            "action": "register",
            "address": address,
            "capabilities": caps,
            "metadata": metadata,
            "identity": identity.public().to_b64(),
            "signature": identity.sign_b64(&message),
            "correlationId": "r21",
        }))
        .await
    }

    /// Waits for the hub to close this WebSocket; the close code it gave (`None`: closed
    /// without a code, or the connection just dropped).
    pub async fn closed_by_hub(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("the hub did not close within 30 s")?;
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(Message::Text(t)) => panic!("expected a close, got {t}"),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the hub's close arrives so the close is processed server-side.
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await
        {}
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `METHOD path` over a fresh connection with `Connection: close`.
pub async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> HttpReply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: hub.test:{}\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Polls `check` until it holds (other hubs learn through the feed; a closed socket is
/// processed asynchronously). Asserts the state, not how long it took.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// Defines `NAME_sqlite` and `NAME_postgres` tests running `scenario(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident => $scenario:path;)+) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $scenario($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $scenario($crate::common::Backend::Postgres).await
                }
            }
        )+
    };
}
