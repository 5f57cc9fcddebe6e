//! Bot identifiers: validated once, at the edge ("parse, don't validate").
//!
//! A bot id is 1 to 64 characters from `a-z`, `0-9`, `-` and `_`, starting
//! with a letter or a digit. It is how operators name bots (`ventas-mx`); it
//! never appears in clear in the vault files (keys are blind indexes).

use crate::error::{Error, Result};
use std::fmt;

/// Longest bot id accepted.
pub const MAX_LEN: usize = 64;

/// A validated bot id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BotId(String);

impl BotId {
    /// Validates `s` as a bot id.
    pub fn parse(s: &str) -> Result<BotId> {
        let ok_len = !s.is_empty() && s.len() <= MAX_LEN;
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let ok_start = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok_len && ok_chars && ok_start {
            Ok(BotId(s.to_owned()))
        } else {
            Err(Error::Usage(format!(
                "invalid bot id {s:?}: use 1 to {MAX_LEN} characters from a-z, 0-9, '-' and '_', starting with a letter or digit"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BotId({})", self.0)
    }
}

impl std::str::FromStr for BotId {
    type Err = Error;
    fn from_str(s: &str) -> Result<BotId> {
        BotId::parse(s)
    }
}

impl TryFrom<String> for BotId {
    type Error = Error;
    fn try_from(s: String) -> Result<BotId> {
        BotId::parse(&s)
    }
}

impl From<BotId> for String {
    fn from(b: BotId) -> String {
        b.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_charset() {
        for ok in ["a", "ventas-mx", "bot_1", "9lives", &"x".repeat(64)] {
            assert!(BotId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "-a",
            "_a",
            "Ventas",
            "a b",
            "a/b",
            "é",
            &"x".repeat(65),
            "a.b",
        ] {
            assert!(matches!(BotId::parse(bad), Err(Error::Usage(_))), "{bad}");
        }
    }
}
