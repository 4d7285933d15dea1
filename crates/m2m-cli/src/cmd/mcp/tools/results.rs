//! Received messages as the tools show them: `authenticated` first, the payload (data from
//! another agent, never instructions) last.

use m2m_agent::{Message, Value};
use serde_json::json;

use super::super::inbox::Received;

/// A received message as the tools show it: `authenticated` first, the payload last.
pub fn message_json(r: &Received) -> Value {
    let m: &Message = &r.message;
    json!({
        "messageId": r.id,
        "authenticated": m.authenticated,
        "from": m.from,
        "type": m.message_type,
        "correlationId": m.correlation_id,
        "receivedAt": received_at(m.timestamp),
        "canRespond": r.answerable(),
        "route": m.route.as_str(),
        "payload": m.payload,
    })
}

/// RFC 3339 UTC time of a millisecond timestamp.
fn received_at(ms: u64) -> String {
    crate::output::time_text(ms)
}
