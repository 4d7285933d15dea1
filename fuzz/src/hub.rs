//! A throw-away hub (SQLite in memory) for the hub fuzz targets, on a current-thread
//! runtime that the target drives input by input.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use m2m_fuzz_seeds::masked_text;
use m2m_hub::{HubConfig, HubState};
use tokio::runtime::Runtime;

use crate::ws_io::ScriptedIo;

/// Inputs served by one hub before it is replaced by an empty one: registrations pile up
/// in the registry, and a fuzzer that runs for hours must not grow without bound.
const RUNS_PER_HUB: u32 = 20_000;

struct Hub {
    runtime: Runtime,
    state: Arc<HubState>,
    runs: u32,
}

thread_local! {
    static HUB: RefCell<Option<Hub>> = const { RefCell::new(None) };
}

fn config() -> HubConfig {
    let mut config = HubConfig::in_memory();
    // Small message limits, so that inputs of a few KiB reach both the `message_too_large`
    // reply and the close over the hard limit.
    config.limits.max_message_bytes = 1024;
    config.limits.hard_max_message_bytes = 2048;
    config
}

fn open() -> Hub {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let state = runtime
        .block_on(HubState::open(config()))
        .expect("an in-memory hub opens");
    // A few agents that stay connected, so that listings and lookups have rows to page
    // through and filter.
    for caps in [r#"["chat"]"#, r#"["chat","code"]"#, "[]"] {
        let register = format!(
            r#"{{"action":"register","address":"10.0.0.1:4100","capabilities":{caps},"metadata":{{"name":"seed"}}}}"#
        );
        // Leaked: a few bytes per hub, and the connection outlives this function.
        let input: &'static [u8] = Box::leak(masked_text(register.as_bytes()).into_boxed_slice());
        let state = state.clone();
        runtime.spawn(async move {
            let io = ScriptedIo::held_open(input);
            m2m_hub::fuzzing::serve_websocket(state, io, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)))
                .await;
        });
    }
    // Let them register.
    runtime.block_on(async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    });
    Hub {
        runtime,
        state,
        runs: 0,
    }
}

/// Runs `f` on the hub's runtime with its state.
pub fn with_hub<F, Fut, R>(f: F) -> R
where
    F: FnOnce(Arc<HubState>) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    HUB.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_some_and(|h| h.runs >= RUNS_PER_HUB) {
            if let Some(old) = slot.take() {
                old.runtime.block_on(m2m_hub::fuzzing::close(&old.state));
            }
        }
        let hub = slot.get_or_insert_with(open);
        hub.runs += 1;
        hub.runtime.block_on(f(hub.state.clone()))
    })
}
