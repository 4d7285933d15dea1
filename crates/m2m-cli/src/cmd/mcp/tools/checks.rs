//! Arguments as a client sends them, checked again whatever the schema said, and refusals
//! as one sentence the model can act on.

use m2m_agent::{Map, Value};
use rmcp::model::JsonObject;
use serde::de::DeserializeOwned;

use super::*;

/// A sentence starts with a capital and ends with a full stop.
pub(super) fn sentence(text: &str) -> String {
    let mut chars = text.trim().chars();
    let mut s: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "Unknown error".to_owned(),
    };
    if !s.ends_with(['.', '!', '?']) {
        s.push('.');
    }
    s
}

pub(super) fn refuse(text: impl AsRef<str>) -> ToolError {
    ToolError(sentence(text.as_ref()))
}

/// The arguments of tool `name` as `T`, or a sentence saying what is wrong with them.
pub(super) fn parse<T: DeserializeOwned>(
    name: &str,
    args: Option<JsonObject>,
) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| refuse(format!("invalid arguments for {name}: {e}")))
}

pub(super) fn name_arg(what: &str, value: &str) -> Result<(), ToolError> {
    if value.trim().is_empty() {
        return Err(refuse(format!("{what} must not be empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(refuse(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    Ok(())
}

pub(super) fn in_range(what: &str, value: u32, min: u32, max: u32) -> Result<(), ToolError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(refuse(format!(
            "{what} must be between {min} and {max}, not {value}"
        )))
    }
}

/// A payload argument: absent is `{}`; a string that starts like JSON must be JSON (the
/// same rule as the command line, so a model that JSON-encodes its payload gets it sent as
/// JSON, and a typo is reported with line and column instead of sent as text).
pub(super) fn payload(value: Option<Value>) -> Result<Value, ToolError> {
    let value = match value {
        None => return Ok(Value::Object(Map::new())),
        Some(Value::String(text)) => {
            crate::payload::parse(&text, "payload").map_err(|e| refuse(e.message))?
        }
        Some(other) => other,
    };
    let len = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
    // The envelope (base64 of the ciphertext and the JSON around it) must fit in one frame.
    let max = m2m_proto::limits::MAX_FRAME_LEN / 2;
    if len > max {
        return Err(refuse(format!(
            "payload is {len} bytes as JSON; the most one message carries is {max}"
        )));
    }
    Ok(value)
}
