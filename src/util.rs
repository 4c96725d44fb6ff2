//! Small helpers several modules share, each written once: byte counts and numbers for people,
//! rounding and durations for reports, SQL identifier quoting, percent-encoding for connection URLs, shell quoting for the commands
//! PostgreSQL runs, and whether a process is alive.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// `1.55 GiB`, `312.0 MiB`, `8.0 KiB`, `17 B`.
/// The first non-blank line of `text`, trimmed (a statement or message shown in one line).
pub fn first_line(text: &str) -> &str {
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("")
}

pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `1234567` → `1,234,567`.
pub fn group_thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `name` as a PostgreSQL quoted identifier: in double quotes, with double quotes doubled.
/// `value` rounded to `decimals` places, so a report does not print 0.30000000000000004.
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Seconds from `start` to `stop`; 0 when the clock went backwards.
pub fn seconds_between(start: chrono::DateTime<chrono::Utc>, stop: chrono::DateTime<chrono::Utc>) -> f64 {
    (stop - start).to_std().map_or(0.0, |duration| duration.as_secs_f64())
}

pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// For a component of a connection URL: every byte but the RFC 3986 unreserved characters is
/// encoded.
pub const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping `/`: for a socket directory in a query value, which stays readable.
pub const URL_PATH: &AsciiSet = &URL_COMPONENT.remove(b'/');

/// `bytes` percent-encoded (upper-case hex) but for what `set` lets through.
pub fn percent_encode(bytes: &[u8], set: &'static AsciiSet) -> String {
    percent_encoding::percent_encode(bytes, set).to_string()
}

/// `text` as one word for the POSIX shell: in single quotes, each single quote written `'\''`.
///
/// Written here rather than taken from `shlex`: that crate quotes only when it must and switches
/// between quoting styles, while a command lifeboat puts in `restore_command` should read the same
/// whatever the path.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether `pid` names a live process on this host (a zombie, dead but not yet reaped, counts as
/// gone).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let exists =
        unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // /proc/<pid>/stat is "pid (comm) state ..."; comm may contain spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_the_asked_decimals() {
        assert_eq!(round_to(0.1 + 0.2, 3), 0.3);
        assert_eq!(round_to(2.345_67, 2), 2.35);
        assert_eq!(round_to(1234.5, 0), 1235.0);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(format_bytes(17), "17 B");
        assert_eq!(format_bytes(8192), "8.0 KiB");
        assert_eq!(format_bytes(1_668_032_204), "1.6 GiB");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("orders"), "\"orders\"");
        assert_eq!(quote_identifier("Mixed \"Case\""), "\"Mixed \"\"Case\"\"\"");
        assert_eq!(quote_identifier("a.b; drop"), "\"a.b; drop\"");
    }

    #[test]
    fn urls_encode_the_socket_directory() {
        assert_eq!(percent_encode(b"/tmp/lifeboat-pg-ab12/sock", URL_PATH), "/tmp/lifeboat-pg-ab12/sock");
        assert_eq!(percent_encode(b"/tmp/a b&c", URL_PATH), "/tmp/a%20b%26c");
        assert_eq!(percent_encode("p@ss/wörd~-_.".as_bytes(), URL_COMPONENT), "p%40ss%2Fw%C3%B6rd~-_.");
    }

    #[test]
    fn shell_words_survive_quotes() {
        assert_eq!(shell_quote("/usr/bin/lifeboat"), "'/usr/bin/lifeboat'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
