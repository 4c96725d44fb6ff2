//! Positions in the WAL: [`Lsn`] (a byte position, written `16/B374D848` as PostgreSQL prints it)
//! and [`Timeline`] (a history branch, written as 8 hex digits in WAL file names).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A log sequence number: a byte position in the WAL stream. Printed and parsed as PostgreSQL
/// does, `<high 32 bits>/<low 32 bits>` in upper-case hex without leading zeros (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an LSN (expected two hex numbers of at most 8 digits, e.g. 16/B374D848)")]
pub struct InvalidLsn {
    pub text: String,
}

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = InvalidLsn;

    fn from_str(text: &str) -> Result<Lsn, InvalidLsn> {
        let invalid = || InvalidLsn { text: text.to_owned() };
        let (high, low) = text.split_once('/').ok_or_else(invalid)?;
        let part = |digits: &str| -> Result<u64, InvalidLsn> {
            if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            u64::from_str_radix(digits, 16).map_err(|_| invalid())
        };
        Ok(Lsn((part(high)? << 32) | part(low)?))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline id. PostgreSQL starts at 1 and creates a new timeline at every promotion or
/// point-in-time recovery; 0 is never valid. Printed as 8 upper-case hex digits, as in WAL file
/// names (`00000002`), which is also how it names directories in the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeline(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a timeline (expected 8 hex digits other than 00000000, e.g. 00000001)")]
pub struct InvalidTimeline {
    pub text: String,
}

impl Timeline {
    /// The timeline of a freshly initialised cluster.
    pub const FIRST: Timeline = Timeline(1);

    /// `None` for 0, which PostgreSQL never uses.
    pub fn new(id: u32) -> Option<Timeline> {
        (id != 0).then_some(Timeline(id))
    }

    pub fn id(self) -> u32 {
        self.0
    }

    /// Parses exactly 8 hex digits (either case), as in a WAL file name.
    pub fn from_hex(text: &str) -> Result<Timeline, InvalidTimeline> {
        let invalid = || InvalidTimeline { text: text.to_owned() };
        let value = parse_hex8(text).ok_or_else(invalid)?;
        Timeline::new(value).ok_or_else(invalid)
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl Serialize for Timeline {
    /// As a number: JSON readers (and people) know timelines as 1, 2, 3.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Timeline {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = u32::deserialize(deserializer)?;
        Timeline::new(id).ok_or_else(|| serde::de::Error::custom("timeline 0 does not exist"))
    }
}

/// Exactly 8 hex digits (either case) as a u32.
pub(crate) fn parse_hex8(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_and_parse_like_postgresql() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
        assert_eq!(Lsn::ZERO.to_string(), "0/0");
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        assert_eq!("0/1000000".parse::<Lsn>().unwrap().to_string(), "0/1000000");
        // Leading zeros and lower case are accepted on input, printed canonically.
        assert_eq!("00000016/b374d848".parse::<Lsn>().unwrap(), lsn);
    }

    #[test]
    fn lsns_order_numerically_not_textually() {
        let small: Lsn = "9/FFFFFFFF".parse().unwrap();
        let large: Lsn = "A/0".parse().unwrap();
        assert!(small < large);
        assert!("0/2".parse::<Lsn>().unwrap() < "0/10".parse::<Lsn>().unwrap());
    }

    #[test]
    fn malformed_lsns_are_refused() {
        for text in ["", "/", "16/", "/B374D848", "16B374D848", "1/2/3", "123456789/0", "0/123456789", "G/0", "-1/0"] {
            assert!(text.parse::<Lsn>().is_err(), "{text:?} accepted");
        }
        let message = "x".parse::<Lsn>().unwrap_err().to_string();
        assert!(message.contains("16/B374D848"), "{message}");
    }

    #[test]
    fn lsns_serialise_as_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(serde_json::to_string(&lsn).unwrap(), "\"16/B374D848\"");
        assert_eq!(serde_json::from_str::<Lsn>("\"16/B374D848\"").unwrap(), lsn);
    }

    #[test]
    fn timelines_are_eight_hex_digits_and_never_zero() {
        assert_eq!(Timeline::FIRST.to_string(), "00000001");
        assert_eq!(Timeline::from_hex("0000000A").unwrap().id(), 10);
        assert_eq!(Timeline::from_hex("0000000a").unwrap().to_string(), "0000000A");
        assert_eq!(Timeline::from_hex("FFFFFFFF").unwrap().id(), u32::MAX);
        for text in ["00000000", "1", "0000001", "000000001", "0000000G", "+0000001", ""] {
            assert!(Timeline::from_hex(text).is_err(), "{text:?} accepted");
        }
        assert!(Timeline::new(0).is_none());
        assert!(Timeline::new(2).unwrap() > Timeline::FIRST);
        assert_eq!(serde_json::to_string(&Timeline::new(3).unwrap()).unwrap(), "3");
        assert!(serde_json::from_str::<Timeline>("0").is_err());
    }
}
