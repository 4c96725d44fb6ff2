//! Durations as the configuration file writes them: a whole number and a unit, `"30s"`, `"10m"`,
//! `"6h"`, `"14d"`, or several of those in a row (`"1h30m"`). Written back the same way by
//! `config show`, so the output parses again.

use std::time::Duration;

/// The units a duration may use, longest suffix first so `ms` is not read as `m` + garbage.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses `"10m"`, `"1h30m"`, `"0s"`, `"250ms"`. The error says what is expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{text:?} is not a duration: write a whole number and a unit (ms, s, m, h or d), \
             e.g. \"30s\", \"10m\" or \"1h30m\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS.iter().find(|(unit, _)| rest.starts_with(unit)).ok_or_else(invalid)?;
        // `m` must not swallow the `m` of `ms`, which the order of UNITS already prevents.
        rest = &rest[unit.len()..];
        total_ms = number.checked_mul(*scale).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(invalid)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// The shortest exact spelling of `duration` (to the millisecond) that [`parse_duration`] reads.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, scale) in UNITS.iter().rev() {
        if ms >= *scale {
            out.push_str(&format!("{}{unit}", ms / scale));
            ms %= scale;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (text, seconds) in [("30s", 30), ("10m", 600), ("1h30m", 5400), ("14d", 14 * 86_400), ("0s", 0)] {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(seconds), "{text}");
            assert_eq!(format_duration(Duration::from_secs(seconds)), text);
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(format_duration(Duration::from_millis(90_250)), "1m30s250ms");
        assert_eq!(parse_duration("1m30s250ms").unwrap(), Duration::from_millis(90_250));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in ["", "10", "m", "10 m", "-1s", "1.5h", "10x", "1h 30m", "99999999999999999999d"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains("10m"), "{text:?}: {error}");
        }
    }
}
