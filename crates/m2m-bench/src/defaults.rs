//! Every limit, timeout and retry delay of the benches, with the reason for its value. The
//! options a user sets (durations, counts) have their defaults in the option structs and
//! the command line; these are the numbers the generators need to run at all.

use std::time::Duration;

// ---- the hub under test ----

/// How long a started hub has to accept WebSockets (migrations, loading the registry).
pub const HUB_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between attempts to reach a starting hub: short against its start-up time, long
/// enough not to spin.
pub const HUB_READY_RETRY: Duration = Duration::from_millis(50);
/// How long a stopping hub may take (it marks every agent offline first).
pub const HUB_STOP_GRACE: Duration = Duration::from_secs(60);

// ---- the hub load generator ----

/// Connections one source address can open to one destination (the ephemeral port range
/// 32768–60999 holds 28k ports; keep a margin).
pub const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;
/// Client read buffer per connection (it grows for a larger reply): replies are small, and
/// 100k connections × 128 KiB (tungstenite's default) would be 12 GiB.
pub const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// Parse one discover reply in this many to count the agents returned: parsing every one
/// would make the generator, not the hub, the bound.
pub const DISCOVER_SAMPLE_EVERY: u64 = 1_000;
/// How often the hub's RSS is sampled during `--hold`: the memory of 100k idle agents moves
/// slowly, and a sample reads /proc.
pub const HOLD_RSS_SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Largest handshake response the raw WebSocket client accepts (a hub's is ~200 bytes).
pub const MAX_WS_HANDSHAKE: usize = 16 * 1024;
/// Largest message the raw WebSocket client accepts from the hub (discover pages of 500
/// agents stay far below).
pub const MAX_WS_MESSAGE: usize = 64 * 1024 * 1024;

// ---- dashboards during the hub bench ----

/// How often a page queries its rows without being told (app.js: `setInterval(refresh,
/// 10000)`).
pub const DASHBOARD_PAGE_REFRESH: Duration = Duration::from_secs(10);
/// How long the hub has to answer a dashboard's event stream request: it answers at once,
/// so this only stops a wedged hub from hanging the bench.
pub const DASHBOARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

// ---- the P2P bench ----

/// How long the peer process has to start and register.
pub const PEER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the peer process may take to stop (it disconnects from the hub).
pub const PEER_STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest frame the raw initiator accepts (acks are tiny).
pub const FRESH_MAX_LINE: usize = 64 * 1024;

// ---- the machine's limits ----

/// How long the loopback echo process has to connect back.
pub const ECHO_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between non-blocking accepts while waiting for the echo process: it connects
/// within milliseconds of starting.
pub const ECHO_ACCEPT_RETRY: Duration = Duration::from_millis(5);
/// How long the echo process may take to stop (it only closes a socket).
pub const ECHO_STOP_GRACE: Duration = Duration::from_secs(5);
/// Size of the loopback ping-pong records: a small request, as an ack or a hub reply.
pub const PING_PONG_BYTES: usize = 200;
/// Loopback throughput chunk: the size of the P2P frames of a bulk transfer.
pub const THROUGHPUT_CHUNK: usize = 64 * 1024;
/// Unmeasured start of a throughput test (at most a quarter of it): TCP's window grows
/// during the first round trips.
pub const THROUGHPUT_WARMUP: Duration = Duration::from_millis(200);

// ---- the relay bench ----

/// Queued bytes after which a relay bench sender writes (one `write` per batch of DATA
/// frames): 64 KiB is one bulk frame, or ~300 small ones — few system calls per window of
/// credit (256 KiB), and still several writes per window so the hub reads while it comes.
pub const RELAY_WRITE_BATCH: usize = 64 * 1024;

// ---- the hubs bench ----

/// Pause after both hubs started (B's doorbell listener connects, start-up reads end) and
/// after they stopped (the server counts an exiting backend's work in `pg_stat_database`).
pub const HUBS_SETTLE: Duration = Duration::from_secs(1);
/// How often the watcher looks at hub B's mirror: tokio's timer granularity, so the
/// figures are at most about this much above the propagation itself.
pub const HUBS_WATCH_EVERY: Duration = Duration::from_millis(1);
/// A change not visible on hub B this long after A acknowledged it fails the bench
/// (polling at 500 ms shows one within about a second).
pub const HUBS_VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);

// ---- the mailbox bench ----

/// Silence from the hub this long while a mailbox bench waits for a reply or an event
/// fails the bench: a store or a push takes milliseconds, so this only stops a wedged or
/// refusing hub (a delivery that stopped) from hanging it.
pub const MAIL_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most messages one mailbox bench run stores: they are sealed before the store is timed
/// and held in memory as `mail` requests (~830 bytes each at 200 payload bytes, 166 MB at
/// this count). The bench hub's mailbox quotas are raised to the run's count.
pub const MAIL_MAX_MESSAGES: usize = 200_000;
/// Sealed-size allowance per message when the bench raises the hub's byte quotas: the
/// payload plus the body's other fields, signature, identity and HPKE overhead (~400 bytes
/// at 200 payload bytes), with a margin.
pub const MAIL_QUOTA_OVERHEAD: usize = 1024;
/// The hub's default pushed-and-unacked messages per subscription (docs/MAILBOX.md,
/// `MAIL_IN_FLIGHT`): an ack batch larger than this would wait for a push that waits for
/// the ack, so it is the ceiling of `--ack-batch`.
pub const MAIL_IN_FLIGHT: usize = 256;
