//! Sizes as the configuration file writes them: a whole number and a unit, `"512kB"`, `"32MB"`,
//! `"1GB"`, `"2TB"`, or a bare number of bytes. Units are PostgreSQL's (`kB`, `MB`, `GB`, `TB`,
//! powers of 1024), so a threshold reads the way `pg_size_pretty` prints a table's size. Written
//! back the same way by `config show`.

/// The units a size may use, longest first so `kB` is not read as a bare `B`.
const UNITS: &[(&str, u64)] = &[("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)];

/// Parses `"32MB"`, `"1GB"`, `"0"`. The error says what is expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!(
            "{text:?} is not a size: write a whole number and a unit (B, kB, MB, GB or TB), e.g. \"32MB\" or \"1GB\""
        )
    };
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(invalid());
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| invalid())?;
    let unit = trimmed[digits..].trim_start();
    let scale = match unit {
        "" => 1,
        _ => UNITS.iter().find(|(name, _)| *name == unit).map(|(_, scale)| *scale).ok_or_else(invalid)?,
    };
    number.checked_mul(scale).ok_or_else(invalid)
}

/// The largest unit that spells `bytes` exactly, so the output parses back to the same number.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_owned();
    }
    let (unit, scale) = UNITS.iter().find(|(_, scale)| bytes.is_multiple_of(*scale)).copied().unwrap_or(("B", 1));
    format!("{}{unit}", bytes / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_back() {
        for (text, bytes) in [("32MB", 32 << 20), ("1GB", 1 << 30), ("512kB", 512 << 10), ("0", 0), ("1500", 1500)] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{text}");
        }
        assert_eq!(format_size(3 << 30), "3GB");
        assert_eq!(format_size(1500), "1500B");
    }

    #[test]
    fn bad_sizes_name_the_expected_form() {
        for text in ["", "MB", "12 parsecs", "1.5GB", "-1MB", "99999999999999999999TB"] {
            let error = parse_size(text).unwrap_err();
            assert!(error.contains("is not a size") && error.contains("\"32MB\""), "{text}: {error}");
        }
    }
}
