//! Error types, one per operation.

use std::fmt;

/// Why [`Client::connect`](crate::Client::connect) refused a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse. Fix the configured URL.
    #[error("invalid url: {0}")]
    InvalidUrl(#[from] url::ParseError),
    /// The URL's scheme is neither `ws` nor `wss`.
    #[error("unsupported url scheme `{0}`: use ws:// or wss://")]
    UnsupportedScheme(String),
    /// `connect` was called outside a Tokio runtime; call it from within one.
    #[error("Client::connect must be called from within a Tokio runtime")]
    NoRuntime,
}

/// Why [`Client::emit`](crate::Client::emit) did not send a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The connection is not open (still connecting, reconnecting, closed). Wait for the
    /// `open` event or drop the message; nothing was queued.
    #[error("WebSocket is not open")]
    NotOpen,
    /// The payload could not be serialised to JSON.
    #[error("payload is not serialisable: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Why [`Client::wait_open`](crate::Client::wait_open) gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The connection did not open in time; the client keeps trying in the background.
    #[error("connection not open within {0:?}")]
    Timeout(std::time::Duration),
    /// The client was closed with [`Client::manual_close`](crate::Client::manual_close) and
    /// will never open again.
    #[error("client was closed")]
    Closed,
}

/// Machine-readable reason of a failed request, as the seed clients report it
/// (`errorCode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `WS_NOT_OPEN`: the connection was not open when the request was made, or closed for
    /// good before the reply came.
    WsNotOpen,
    /// `CALLBACK_TIMEOUT`: no reply within the callback timeout.
    CallbackTimeout,
    /// `ENCODE_ERROR`: the request payload could not be serialised to JSON.
    EncodeError,
    /// `INVALID_REPLY`: the reply did not deserialise into the requested type.
    InvalidReply,
}

impl ErrorCode {
    /// The code as the seed protocol spells it, e.g. `"CALLBACK_TIMEOUT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::WsNotOpen => "WS_NOT_OPEN",
            ErrorCode::CallbackTimeout => "CALLBACK_TIMEOUT",
            ErrorCode::EncodeError => "ENCODE_ERROR",
            ErrorCode::InvalidReply => "INVALID_REPLY",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request: its [`ErrorCode`] and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// What went wrong, for the program.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl RequestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Why [`Client::join`](crate::Client::join) or [`Client::leave`](crate::Client::leave)
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The request itself failed: the connection was not open (`WS_NOT_OPEN`), no reply came
    /// in time (`CALLBACK_TIMEOUT`), or the reply was not `{"ok": bool, ...}`
    /// (`INVALID_REPLY`).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The server refused: it replied `{"ok": false, "error": <this>}` (`"refused"` when the
    /// reply had no error text).
    #[error("refused: {0}")]
    Refused(String),
}
