//! Durations as typed on the command line: `30s`, `500ms`, `2m`, `1h`, `1.5s`, or a bare
//! number of seconds ([`m2m_agent::duration`], the grammar the benches share). Every
//! duration the CLI takes is a timeout, a deadline or an interval, so zero is refused.

use std::time::Duration;

use m2m_agent::duration::Zero;

/// Parses a duration for clap (`value_parser = duration::parse`).
pub fn parse(text: &str) -> Result<Duration, String> {
    m2m_agent::duration::parse(text, Zero::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn refusals() {
        for bad in ["", "s", "abc", "10x", "0s", "-1s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
