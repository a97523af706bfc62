//! Shared bits of the WebSocket cluster examples.

use std::fmt;
use std::io::IsTerminal;

use serde::{Deserialize, Deserializer};

/// Sets up `tracing` output (`RUST_LOG` overrides the `info` default), in colour on a
/// terminal and plain when piped (e.g. to `tee clients.log`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// A player or room id in a payload, as the seed's `String(value)` has it: a string as it
/// is, a number as its digits (`"13"` and `13` are the same id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(pub String);

impl Id {
    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Id> for String {
    fn from(id: Id) -> Self {
        id.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(serde_json::Number),
        }
        let id = match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Number(n) => n.to_string(),
        };
        if id.is_empty() {
            return Err(serde::de::Error::custom("an id cannot be empty"));
        }
        Ok(Id(id))
    }
}

#[cfg(test)]
mod tests {
    use super::Id;

    #[test]
    fn ids_are_strings_or_numbers() {
        let ids: Vec<Id> = serde_json::from_str(r#"["13", 13, "abc"]"#).unwrap();
        assert_eq!(ids, [Id("13".into()), Id("13".into()), Id("abc".into())]);
        assert!(serde_json::from_str::<Id>(r#""""#).is_err());
        assert!(serde_json::from_str::<Id>("null").is_err());
    }
}
