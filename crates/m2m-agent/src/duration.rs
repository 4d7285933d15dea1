//! Durations as people type them for an agent's timeouts and intervals: `30s`, `500ms`,
//! `2m`, `1h`, `1.5s`, or a bare number of seconds.
//!
//! One grammar for every program of the workspace (the `m2m` command line, the benches),
//! so `--timeout 2m` means the same everywhere. Whether zero makes sense depends on the
//! setting (a warm-up of `0s` is none; a timeout of `0s` would fail every request), so the
//! caller says which with [`Zero`].

use std::time::Duration;

/// Whether a duration of zero is a meaningful value for the setting being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// `0s` means "none" (a warm-up, a pause between runs).
    Allowed,
    /// Zero would make the setting useless (a timeout, a deadline, an interval).
    Refused,
}

/// The longest duration accepted: a year. Longer is a typo, and `Duration::from_secs_f64`
/// cannot hold every number the grammar can write.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Parses `text` (`30s`, `500ms`, `2m`, `1h`, `1.5s`, `30`); the error is a sentence for
/// the user that names the text.
pub fn parse(text: &str, zero: Zero) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ))
        }
    };
    let usable = seconds.is_finite()
        && seconds <= MAX.as_secs_f64()
        && (seconds > 0.0 || (zero == Zero::Allowed && seconds == 0.0));
    if !usable {
        return Err(format!("`{text}` is not a usable duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        for zero in [Zero::Allowed, Zero::Refused] {
            assert_eq!(parse("30s", zero), Ok(Duration::from_secs(30)));
            assert_eq!(parse("30", zero), Ok(Duration::from_secs(30)));
            assert_eq!(parse(" 30 secs ", zero), Ok(Duration::from_secs(30)));
            assert_eq!(parse("500ms", zero), Ok(Duration::from_millis(500)));
            assert_eq!(parse("2m", zero), Ok(Duration::from_secs(120)));
            assert_eq!(parse("2min", zero), Ok(Duration::from_secs(120)));
            assert_eq!(parse("1h", zero), Ok(Duration::from_secs(3600)));
            assert_eq!(parse("1.5s", zero), Ok(Duration::from_millis(1500)));
            assert_eq!(parse("365h", zero), Ok(Duration::from_secs(365 * 3600)));
        }
    }

    #[test]
    fn zero_only_where_allowed() {
        assert_eq!(parse("0", Zero::Allowed), Ok(Duration::ZERO));
        assert_eq!(parse("0ms", Zero::Allowed), Ok(Duration::ZERO));
        assert!(parse("0s", Zero::Refused).is_err());
        assert!(parse("0.0", Zero::Refused).is_err());
    }

    #[test]
    fn refusals() {
        for zero in [Zero::Allowed, Zero::Refused] {
            for bad in ["", "s", "abc", "10x", "5y", "-1s", "1.2.3s", "9000000h"] {
                assert!(parse(bad, zero).is_err(), "{bad}");
            }
        }
        let huge = "9".repeat(400);
        assert!(parse(&huge, Zero::Allowed).is_err());
    }
}
