//! The envelope that crosses the broker between nodes, encoded as MessagePack.
//!
//! A client-bound delivery carries the complete, already encoded WebSocket frame: the
//! receiving node hands those bytes to its local sockets without parsing the payload.
//! Every envelope names its origin node and a per-origin sequence number, so a node can drop
//! its own echo and a receiver can drop duplicates when messages travel more than one path.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the envelope format; a node refuses envelopes of another version.
pub const ENVELOPE_VERSION: u8 = 1;

/// Why an envelope could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a MessagePack envelope of this format.
    #[error("undecodable envelope: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// Could not be encoded (should not happen for well-formed values).
    #[error("unencodable envelope: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// Encoded by a node speaking another envelope version.
    #[error("envelope version {found}, this node speaks {expected}")]
    Version {
        /// Version found in the envelope.
        found: u8,
        /// Version this node speaks.
        expected: u8,
    },
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub v: u8,
    /// Name of the node that published it.
    pub origin: String,
    /// Sequence number, increasing per origin node.
    pub seq: u64,
    /// What it carries.
    pub body: Body,
}

/// Who receives a client-bound delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every socket on every node.
    All,
    /// The socket bound to this id.
    Id(String),
    /// The sockets bound to these ids.
    Ids(Vec<String>),
    /// Every member of a room, except some ids.
    Room {
        /// Room namespace.
        namespace: String,
        /// Room id within the namespace.
        room: String,
        /// Ids that must not receive it.
        except: Vec<String>,
        /// Remove the room on every node after delivering.
        destroy: bool,
    },
}

/// The contents of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// A complete WebSocket frame for the sockets named by `target`.
    Deliver {
        /// Recipients.
        target: Target,
        /// The encoded frame, shared as is with every local recipient.
        #[serde(with = "serde_bytes_compat")]
        frame: Bytes,
    },
    /// `id` was bound on the origin node: any other node holding a socket for it closes it.
    Takeover {
        /// The id that moved.
        id: String,
    },
    /// Remove a room on every node (without delivering anything).
    RemoveRoom {
        /// Room namespace.
        namespace: String,
        /// Room id.
        room: String,
    },
}

impl Envelope {
    /// Builds an envelope of the current version.
    pub fn new(origin: impl Into<String>, seq: u64, body: Body) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            origin: origin.into(),
            seq,
            body,
        }
    }

    /// Encodes it as MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(rmp_serde::to_vec(self)?)
    }

    /// Decodes MessagePack bytes, checking the version.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Self = rmp_serde::from_slice(bytes)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version {
                found: env.v,
                expected: ENVELOPE_VERSION,
            });
        }
        Ok(env)
    }
}

/// Serialises `Bytes` as a MessagePack bin (not an array of integers).
mod serde_bytes_compat {
    use bytes::Bytes;
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::copy_from_slice(v))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes::from(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_compact() {
        let frame = Bytes::from_static(b"\x81\x05hello");
        let env = Envelope::new(
            "node-a",
            42,
            Body::Deliver {
                target: Target::Room {
                    namespace: "chat".into(),
                    room: "1000".into(),
                    except: vec!["7".into()],
                    destroy: false,
                },
                frame: frame.clone(),
            },
        );
        let bytes = env.encode().unwrap();
        // The frame travels as a bin, not as 7 integers.
        assert!(bytes.windows(frame.len()).any(|w| w == &frame[..]));
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(matches!(
            Envelope::decode(b"\xc1nonsense"),
            Err(EnvelopeError::Decode(_))
        ));
        let mut env = Envelope::new("a", 1, Body::Takeover { id: "x".into() });
        env.v = 9;
        let bytes = rmp_serde::to_vec(&env).unwrap();
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::Version { found: 9, .. })
        ));
    }
}
