//! The envelope that crosses the broker between nodes, encoded as MessagePack.
//!
//! A client-bound delivery carries the complete, already encoded WebSocket frame: the
//! receiving node hands those bytes to its local sockets without parsing the payload.
//! Every envelope names its origin node and a per-origin sequence number, so a node can drop
//! its own echo and a receiver can drop duplicates when messages travel more than one path.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the envelope format; a node refuses envelopes of another version.
pub const ENVELOPE_VERSION: u8 = 2;

/// First byte of an encoded envelope: plain MessagePack follows.
pub const MARKER_PLAIN: u8 = 0x01;
/// First byte of an encoded envelope: LZ4-compressed MessagePack follows (size-prefixed).
pub const MARKER_LZ4: u8 = 0x02;

/// Largest decompressed size a [`Codec`] accepts by default: 64 MiB.
///
/// A compressed envelope states its decompressed size in its first four bytes; a peer could
/// claim up to 4 GiB there, and the buffer is allocated from that claim, so it is checked
/// against this limit first. Envelopes larger than the limit are sent uncompressed.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 << 20;

/// The most an LZ4 block can expand: every byte of a match-length extension stands for at
/// most 255 bytes of output, so `n` compressed bytes never decompress to more than `255 * n`.
const LZ4_MAX_RATIO: usize = 255;

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
    /// The envelope is compressed but this node has compression off: every node of a cluster
    /// must use the same compression setting.
    #[error("received a compressed envelope but compression is off on this node; all nodes must agree on the compression setting")]
    CompressionMismatch,
    /// Compressed data that does not decompress.
    #[error("corrupt compressed envelope: {0}")]
    Decompress(String),
    /// A compressed envelope claims a decompressed size above the codec's limit
    /// ([`Codec::max_decompressed`]); it is refused before any buffer is allocated. Drop it:
    /// a node with the same limit never compresses envelopes that large.
    #[error("compressed envelope claims {claimed} bytes decompressed, the limit is {max}")]
    TooLarge {
        /// Decompressed size claimed by the sender.
        claimed: u64,
        /// The codec's limit.
        max: usize,
    },
    /// Neither a plain nor a compressed envelope.
    #[error("unknown envelope marker {0:#04x}")]
    Marker(u8),
    /// Empty message.
    #[error("empty envelope")]
    Empty,
}

/// How envelopes are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Codec {
    /// Compress envelopes whose MessagePack form is at least this many bytes; `None`
    /// disables compression (and makes compressed envelopes an error). Default: `None`.
    pub compress_above: Option<usize>,
    /// Largest decompressed size accepted from a compressed envelope (checked before
    /// allocating), and largest envelope this codec compresses: bigger ones go uncompressed.
    /// Capped at 4 GiB, the most the size prefix can state. Default:
    /// [`DEFAULT_MAX_DECOMPRESSED`] (64 MiB).
    pub max_decompressed: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            compress_above: None,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

impl Codec {
    /// A codec compressing envelopes of at least `threshold` bytes with LZ4.
    pub fn compressed(threshold: usize) -> Self {
        Self {
            compress_above: Some(threshold),
            ..Self::default()
        }
    }

    /// Sets [`Codec::max_decompressed`].
    pub fn with_max_decompressed(mut self, bytes: usize) -> Self {
        self.max_decompressed = bytes;
        self
    }

    /// The effective decompression limit: the configured one, within what the 4-byte size
    /// prefix can state.
    fn decompressed_limit(&self) -> usize {
        self.max_decompressed.min(u32::MAX as usize)
    }

    /// Encodes an envelope: a marker byte, then MessagePack, compressed when large enough.
    pub fn encode(&self, envelope: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(64);
        out.push(MARKER_PLAIN);
        rmp_serde::encode::write(&mut out, envelope)?;
        match self.compress_above {
            Some(threshold)
                if out.len() > threshold && out.len() - 1 <= self.decompressed_limit() =>
            {
                let mut compressed = Vec::with_capacity(out.len() / 2 + 8);
                compressed.push(MARKER_LZ4);
                compressed.extend_from_slice(&lz4_flex::compress_prepend_size(&out[1..]));
                Ok(compressed)
            }
            _ => Ok(out),
        }
    }

    /// Decodes what [`Codec::encode`] produced, checking the version and the compression
    /// setting.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let (&marker, rest) = bytes.split_first().ok_or(EnvelopeError::Empty)?;
        let envelope: Envelope = match marker {
            MARKER_PLAIN => rmp_serde::from_slice(rest)?,
            MARKER_LZ4 => {
                if self.compress_above.is_none() {
                    return Err(EnvelopeError::CompressionMismatch);
                }
                let plain = self.decompress(rest)?;
                rmp_serde::from_slice(&plain)?
            }
            other => return Err(EnvelopeError::Marker(other)),
        };
        if envelope.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version {
                found: envelope.v,
                expected: ENVELOPE_VERSION,
            });
        }
        Ok(envelope)
    }

    /// Decompresses a size-prefixed LZ4 block, checking the claimed size against the limit
    /// and against what the compressed bytes can hold before allocating the buffer.
    fn decompress(&self, input: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let Some((size, block)) = input.split_first_chunk::<4>() else {
            return Err(EnvelopeError::Decompress("missing size prefix".into()));
        };
        let claimed = u32::from_le_bytes(*size);
        let max = self.decompressed_limit();
        let Ok(claimed_len) = usize::try_from(claimed) else {
            return Err(EnvelopeError::TooLarge {
                claimed: claimed.into(),
                max,
            });
        };
        if claimed_len > max {
            return Err(EnvelopeError::TooLarge {
                claimed: claimed.into(),
                max,
            });
        }
        if claimed_len > block.len().saturating_mul(LZ4_MAX_RATIO) {
            return Err(EnvelopeError::Decompress(format!(
                "{} compressed bytes cannot hold the {claimed} bytes claimed",
                block.len()
            )));
        }
        let plain = lz4_flex::decompress(block, claimed_len)
            .map_err(|e| EnvelopeError::Decompress(e.to_string()))?;
        if plain.len() != claimed_len {
            return Err(EnvelopeError::Decompress(format!(
                "decompressed to {} bytes, {claimed} claimed",
                plain.len()
            )));
        }
        Ok(plain)
    }
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub v: u8,
    /// Name of the node that published it.
    pub origin: String,
    /// Identifies one run of the origin node (a restarted node starts a new incarnation and
    /// its sequence numbers start again).
    pub incarnation: u64,
    /// Sequence number, increasing per origin incarnation.
    pub seq: u64,
    /// What it carries.
    pub body: Body,
}

/// Who receives a client-bound delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every socket on every node, except the sockets bound to some ids.
    All {
        /// Ids that must not receive it.
        except: Vec<String>,
    },
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
    /// `id` was bound on the origin node: any other node holding a socket for it closes it,
    /// and every node records where `id` lives. Two binds of one id that cross (the same
    /// user logging in on two nodes at once) are settled by their claims: the greater
    /// `(claim, node, conn)` keeps its socket, the other closes, so exactly one remains.
    Takeover {
        /// The id that moved.
        id: String,
        /// When it was bound, in milliseconds since the Unix epoch, raised above every claim
        /// of the id the origin had seen (so a later bind wins even across clock skew);
        /// 0 from a node that predates claims (its takeover always wins).
        #[serde(default)]
        claim: u64,
        /// The bound connection's number on the origin node (the last tie-break).
        #[serde(default)]
        conn: u64,
    },
    /// `id` is no longer bound on the origin node.
    Gone {
        /// The id.
        id: String,
    },
    /// Remove a room on every node (without delivering anything).
    RemoveRoom {
        /// Room namespace.
        namespace: String,
        /// Room id.
        room: String,
    },
    /// A server-to-server event.
    ServerEvent {
        /// Event name.
        event: String,
        /// JSON payload.
        #[serde(with = "serde_bytes_compat")]
        payload: Bytes,
        /// Set when the sender waits for replies.
        request: Option<u64>,
        /// The nodes it is for; empty means every node.
        targets: Vec<String>,
    },
    /// A reply to a [`Body::ServerEvent`] request.
    ServerReply {
        /// The request's id on its origin node.
        request: u64,
        /// The node that sent the request.
        to: String,
        /// JSON payload.
        #[serde(with = "serde_bytes_compat")]
        payload: Bytes,
    },
    /// The origin node is alive (sent periodically and when it starts).
    Announce {
        /// Milliseconds after which receivers may consider it gone if silent.
        ttl_ms: u64,
        /// Whether the origin compresses envelopes (all nodes must agree).
        compression: bool,
        /// Set when the origin just started or saw a new node: receivers answer with their
        /// own announce so it learns the node set at once.
        hello: bool,
    },
    /// The origin node is shutting down.
    Leave,
    /// An id joined or left a room of a namespace whose presence is tracked (sent on the
    /// namespace's channel, which every node tracking it subscribes to). Last, so that the
    /// variants before it keep their numbers.
    Presence {
        /// Room namespace.
        namespace: String,
        /// Room id.
        room: String,
        /// The member.
        id: String,
        /// Joined (true) or left.
        joined: bool,
    },
}

impl Envelope {
    /// Builds an envelope of the current version.
    pub fn new(origin: impl Into<String>, incarnation: u64, seq: u64, body: Body) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            origin: origin.into(),
            incarnation,
            seq,
            body,
        }
    }

    /// Encodes it as uncompressed MessagePack (with the plain marker byte).
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        Codec::default().encode(self)
    }

    /// Decodes an uncompressed envelope, checking the version.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Codec::default().decode(bytes)
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

    fn deliver() -> Envelope {
        Envelope::new(
            "node-a",
            7,
            42,
            Body::Deliver {
                target: Target::Room {
                    namespace: "chat".into(),
                    room: "1000".into(),
                    except: vec!["7".into()],
                    destroy: false,
                },
                frame: Bytes::from_static(b"\x81\x05hello"),
            },
        )
    }

    #[test]
    fn round_trip_and_compact() {
        let env = deliver();
        let bytes = env.encode().unwrap();
        assert_eq!(bytes[0], MARKER_PLAIN);
        // The frame travels as a bin, not as 7 integers.
        assert!(bytes.windows(7).any(|w| w == b"\x81\x05hello"));
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn compression_round_trip_and_mismatch() {
        let mut env = deliver();
        if let Body::Deliver { frame, .. } = &mut env.body {
            *frame = Bytes::from(vec![b'a'; 10_000]);
        }
        let on = Codec::compressed(1024);
        let bytes = on.encode(&env).unwrap();
        assert_eq!(bytes[0], MARKER_LZ4);
        assert!(bytes.len() < 1000);
        assert_eq!(on.decode(&bytes).unwrap(), env);
        // Small envelopes stay plain and decode anywhere.
        let small = on.encode(&deliver()).unwrap();
        assert_eq!(small[0], MARKER_PLAIN);
        assert_eq!(Codec::default().decode(&small).unwrap(), deliver());
        // A node with compression off refuses compressed envelopes clearly.
        assert!(matches!(
            Codec::default().decode(&bytes),
            Err(EnvelopeError::CompressionMismatch)
        ));
        let mut corrupt = bytes.clone();
        corrupt.truncate(bytes.len() / 2);
        assert!(matches!(
            on.decode(&corrupt),
            Err(EnvelopeError::Decompress(_))
        ));
    }

    #[test]
    fn hostile_claimed_size_is_refused_before_allocating() {
        // A 6-byte envelope claiming 4 GiB of decompressed data. The decoder used to allocate
        // a zeroed buffer of the claimed size before looking at the data (lz4_flex's
        // `decompress_size_prepended`); now the claim is refused from the size prefix alone,
        // with its own error, before any buffer exists.
        let hostile = [MARKER_LZ4, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(matches!(
            Codec::compressed(1024).decode(&hostile),
            Err(EnvelopeError::TooLarge {
                claimed: 0xffff_ffff,
                max: DEFAULT_MAX_DECOMPRESSED,
            })
        ));
        // Within the limit but more than the compressed bytes can expand to: refused too.
        let mut overclaim = vec![MARKER_LZ4];
        overclaim.extend_from_slice(&1_000_000u32.to_le_bytes());
        overclaim.extend_from_slice(&[0x00; 8]);
        assert!(matches!(
            Codec::compressed(1024).decode(&overclaim),
            Err(EnvelopeError::Decompress(_))
        ));
        // A genuine envelope whose stated size is off by one is corrupt.
        let mut env = deliver();
        if let Body::Deliver { frame, .. } = &mut env.body {
            *frame = Bytes::from(vec![b'a'; 10_000]);
        }
        let codec = Codec::compressed(1024);
        let good = codec.encode(&env).unwrap();
        let mut bumped = good.clone();
        let size = u32::from_le_bytes([good[1], good[2], good[3], good[4]]);
        bumped[1..5].copy_from_slice(&(size + 1).to_le_bytes());
        assert!(matches!(
            codec.decode(&bumped),
            Err(EnvelopeError::Decompress(_))
        ));
        // A lower limit refuses what a default codec accepts.
        assert!(matches!(
            codec.with_max_decompressed(1000).decode(&good),
            Err(EnvelopeError::TooLarge { max: 1000, .. })
        ));
    }

    #[test]
    fn envelopes_above_the_limit_travel_uncompressed() {
        let mut env = deliver();
        if let Body::Deliver { frame, .. } = &mut env.body {
            *frame = Bytes::from(vec![b'a'; 10_000]);
        }
        let small_limit = Codec::compressed(16).with_max_decompressed(1000);
        let bytes = small_limit.encode(&env).unwrap();
        assert_eq!(bytes[0], MARKER_PLAIN);
        assert_eq!(small_limit.decode(&bytes).unwrap(), env);
        // The best case of LZ4 (a long run of one byte) stays within the expansion bound.
        if let Body::Deliver { frame, .. } = &mut env.body {
            *frame = Bytes::from(vec![0; 4 << 20]);
        }
        let codec = Codec::compressed(1024);
        let bytes = codec.encode(&env).unwrap();
        assert_eq!(bytes[0], MARKER_LZ4);
        assert_eq!(codec.decode(&bytes).unwrap(), env);
    }

    #[test]
    fn refuses_garbage_and_other_versions() {
        assert!(matches!(Envelope::decode(b""), Err(EnvelopeError::Empty)));
        assert!(matches!(
            Envelope::decode(b"\x07abc"),
            Err(EnvelopeError::Marker(7))
        ));
        assert!(matches!(
            Envelope::decode(b"\x01\xc1nonsense"),
            Err(EnvelopeError::Decode(_))
        ));
        let mut env = Envelope::new(
            "a",
            1,
            1,
            Body::Takeover {
                id: "x".into(),
                claim: 1,
                conn: 2,
            },
        );
        env.v = 9;
        let mut bytes = vec![MARKER_PLAIN];
        bytes.extend(rmp_serde::to_vec(&env).unwrap());
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::Version { found: 9, .. })
        ));
    }
}
