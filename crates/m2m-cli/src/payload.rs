//! Message payloads as users type them: on the command line, on stdin (`-`), or in the
//! terminal agent's compose box.
//!
//! The rule is the one scripts can rely on: text that parses as JSON is sent as that JSON;
//! text that does not is sent as a JSON string — except text that *starts* like a JSON
//! object or array (`{` or `[`), which must parse, so a typo in a JSON payload is reported
//! with serde_json's line and column instead of being sent as a string nobody expects.

use std::io::Read;

use serde_json::Value;

pub use crate::defaults::MAX_STDIN_PAYLOAD;

/// Why a payload was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadError {
    /// A sentence saying what is wrong and where.
    pub message: String,
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PayloadError {}

/// Parses payload text by the rule above. `source` names where it came from in errors
/// (`"the payload"`, `"stdin"`).
pub fn parse(text: &str, source: &str) -> Result<Value, PayloadError> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(trimmed).map_err(|e| PayloadError {
            message: format!(
                "{source} looks like JSON but is not valid JSON: {} at line {}, column {}",
                describe(&e),
                e.line(),
                e.column()
            ),
        });
    }
    Ok(serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(text.to_owned())))
}

/// serde_json's message without its trailing " at line L column C" (we say it our way).
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The payload of a one-shot command: absent → `{}`, `-` → stdin, else the argument.
pub fn from_arg(arg: Option<&str>) -> Result<Value, PayloadError> {
    match arg {
        None => Ok(Value::Object(Default::default())),
        Some("-") => {
            let text = read_stdin(std::io::stdin().lock(), MAX_STDIN_PAYLOAD)?;
            parse(&text, "the payload read from stdin")
        }
        Some(text) => parse(text, "the payload"),
    }
}

/// Reads at most `max` bytes of UTF-8 text; more is an error rather than a silent cut.
fn read_stdin(reader: impl Read, max: usize) -> Result<String, PayloadError> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| PayloadError {
            message: format!("could not read the payload from stdin: {e}"),
        })?;
    if bytes.len() > max {
        return Err(PayloadError {
            message: format!("the payload on stdin is larger than {max} bytes"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| PayloadError {
        message: format!(
            "the payload on stdin is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    // A trailing newline from `echo` is not part of a string payload.
    Ok(text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_text_is_json() {
        assert_eq!(parse(r#"{"a":1}"#, "p").unwrap(), json!({"a":1}));
        assert_eq!(parse(" [1, 2] ", "p").unwrap(), json!([1, 2]));
        assert_eq!(parse("42", "p").unwrap(), json!(42));
        assert_eq!(parse("true", "p").unwrap(), json!(true));
        assert_eq!(parse("null", "p").unwrap(), json!(null));
        assert_eq!(parse(r#""quoted""#, "p").unwrap(), json!("quoted"));
    }

    #[test]
    fn other_text_is_a_string() {
        assert_eq!(parse("hello world", "p").unwrap(), json!("hello world"));
        assert_eq!(parse("", "p").unwrap(), json!(""));
        assert_eq!(parse("12abc", "p").unwrap(), json!("12abc"));
        // Kept as typed, spaces included.
        assert_eq!(parse(" hi ", "p").unwrap(), json!(" hi "));
    }

    #[test]
    fn broken_json_says_where() {
        let err = parse("{\"a\": 1,\n \"b\" 2}", "the payload").unwrap_err();
        assert!(
            err.message.starts_with("the payload looks like JSON"),
            "{err}"
        );
        assert!(err.message.contains("line 2, column 6"), "{err}");
        let err = parse("[1, 2", "stdin").unwrap_err();
        assert!(err.message.contains("EOF while parsing a list"), "{err}");
        assert!(err.message.contains("line 1, column 5"), "{err}");
    }

    #[test]
    fn stdin_is_bounded_and_trimmed_of_one_newline() {
        assert_eq!(read_stdin(&b"hi\n"[..], 10).unwrap(), "hi");
        assert_eq!(read_stdin(&b"hi\r\n"[..], 10).unwrap(), "hi");
        assert_eq!(read_stdin(&b"hi\n\n"[..], 10).unwrap(), "hi\n");
        assert!(read_stdin(&b"0123456789x"[..], 10)
            .unwrap_err()
            .message
            .contains("larger than 10 bytes"));
        assert!(read_stdin(&[0xff, 0xfe][..], 10)
            .unwrap_err()
            .message
            .contains("not UTF-8"));
    }

    #[test]
    fn absent_payload_is_an_empty_object() {
        assert_eq!(from_arg(None).unwrap(), json!({}));
        assert_eq!(from_arg(Some("x")).unwrap(), json!("x"));
    }
}
