//! Options and outcome of events sent with a reply expected.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::ser::SerializeStruct;
use serde::Serialize;

use crate::error::{ErrorCode, RequestError};
use crate::event::Payload;

/// Per-request options of [`Client::request`](crate::Client::request) and
/// [`Client::emit_with_callback`](crate::Client::emit_with_callback).
///
/// ```
/// use std::time::Duration;
/// use crosswire_client::EmitOptions;
///
/// let options = EmitOptions::new()
///     .with_callback_timeout(Duration::from_secs(1))
///     .on_pending(|| tracing::info!("requesting..."));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EmitOptions {
    /// How long to wait for the reply. Default: `None`, the client's
    /// [`callback_timeout`](crate::ClientConfig::callback_timeout) (5 s).
    pub callback_timeout: Option<Duration>,
    /// How long to wait before calling [`on_pending`](Self::on_pending). Default: `None`, the
    /// client's [`pending_timeout`](crate::ClientConfig::pending_timeout) (100 ms).
    pub pending_timeout: Option<Duration>,
    /// Called once if no reply came within the pending timeout, e.g. to show a spinner.
    /// Default: none.
    pub on_pending: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl EmitOptions {
    /// Default options: the client's timeouts, no pending hook.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`callback_timeout`](Self::callback_timeout).
    pub fn with_callback_timeout(mut self, timeout: Duration) -> Self {
        self.callback_timeout = Some(timeout);
        self
    }

    /// Sets [`pending_timeout`](Self::pending_timeout).
    pub fn with_pending_timeout(mut self, timeout: Duration) -> Self {
        self.pending_timeout = Some(timeout);
        self
    }

    /// Sets [`on_pending`](Self::on_pending).
    pub fn on_pending(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_pending = Some(Arc::new(hook));
        self
    }
}

impl fmt::Debug for EmitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmitOptions")
            .field("callback_timeout", &self.callback_timeout)
            .field("pending_timeout", &self.pending_timeout)
            .field("on_pending", &self.on_pending.is_some())
            .finish()
    }
}

/// Outcome of [`Client::request`](crate::Client::request): the seed's
/// `{success: true, data}` or `{success: false, error, errorCode}`.
///
/// Serialises to exactly that JSON shape.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Response<T = Payload> {
    /// The server replied.
    Success {
        /// The reply.
        data: T,
    },
    /// No usable reply.
    Failure {
        /// What went wrong, for a person.
        error: String,
        /// What went wrong, for the program (`WS_NOT_OPEN`, `CALLBACK_TIMEOUT`, ...).
        error_code: ErrorCode,
    },
}

impl<T> Response<T> {
    pub(crate) fn failure(error_code: ErrorCode, error: impl Into<String>) -> Self {
        Response::Failure {
            error: error.into(),
            error_code,
        }
    }

    /// Whether the server replied (`success` in the seed's JavaScript).
    pub fn is_success(&self) -> bool {
        matches!(self, Response::Success { .. })
    }

    /// The reply, if any.
    pub fn data(&self) -> Option<&T> {
        match self {
            Response::Success { data } => Some(data),
            Response::Failure { .. } => None,
        }
    }

    /// The error code of a failure.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Response::Success { .. } => None,
            Response::Failure { error_code, .. } => Some(*error_code),
        }
    }

    /// The error message of a failure.
    pub fn error(&self) -> Option<&str> {
        match self {
            Response::Success { .. } => None,
            Response::Failure { error, .. } => Some(error),
        }
    }

    /// The outcome as a `Result`, for `?`.
    pub fn into_result(self) -> Result<T, RequestError> {
        match self {
            Response::Success { data } => Ok(data),
            Response::Failure { error, error_code } => Err(RequestError::new(error_code, error)),
        }
    }

    pub(crate) fn from_result(result: Result<T, RequestError>) -> Self {
        match result {
            Ok(data) => Response::Success { data },
            Err(e) => Response::Failure {
                error: e.message,
                error_code: e.code,
            },
        }
    }
}

impl Response<Payload> {
    /// Deserialises a successful reply into `T`; a reply that does not fit becomes a failure
    /// with [`ErrorCode::InvalidReply`].
    pub fn parse<T: DeserializeOwned>(self) -> Response<T> {
        match self {
            Response::Success { data } => match data.parse() {
                Ok(data) => Response::Success { data },
                Err(e) => Response::failure(ErrorCode::InvalidReply, e.to_string()),
            },
            Response::Failure { error, error_code } => Response::Failure { error, error_code },
        }
    }
}

impl<T: Serialize> Serialize for Response<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Response::Success { data } => {
                let mut s = serializer.serialize_struct("Response", 2)?;
                s.serialize_field("success", &true)?;
                s.serialize_field("data", data)?;
                s.end()
            }
            Response::Failure { error, error_code } => {
                let mut s = serializer.serialize_struct("Response", 3)?;
                s.serialize_field("success", &false)?;
                s.serialize_field("error", error)?;
                s.serialize_field("errorCode", error_code.as_str())?;
                s.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_the_seed() {
        let ok: Response = Response::Success {
            data: Payload::from_json(r#"{"a":1}"#).unwrap(),
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"success":true,"data":{"a":1}}"#
        );
        let err: Response = Response::failure(ErrorCode::CallbackTimeout, "late");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"success":false,"error":"late","errorCode":"CALLBACK_TIMEOUT"}"#
        );
        assert_eq!(err.error_code(), Some(ErrorCode::CallbackTimeout));
        assert!(!err.is_success());
    }

    #[test]
    fn parse_typed() {
        let ok: Response = Response::Success {
            data: Payload::from_json("5").unwrap(),
        };
        assert_eq!(ok.clone().parse::<u8>().data(), Some(&5));
        assert_eq!(
            ok.parse::<String>().error_code(),
            Some(ErrorCode::InvalidReply)
        );
    }
}
