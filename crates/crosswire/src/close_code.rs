//! Close codes crosswire uses or reserves.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// The client broke RFC 6455.
pub const PROTOCOL_ERROR: u16 = 1002;
/// The client broke a policy: over its rate limit, or not bound to an id in time.
pub const POLICY_VIOLATION: u16 = 1008;
/// The socket's send queue was full (a client too slow to read).
pub const SEND_QUEUE_FULL: u16 = 1008;
/// A message larger than the configured maximum.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// A handler panicked while handling this socket's event; the socket was closed and
/// cleaned up.
pub const INTERNAL_ERROR: u16 = 1011;
/// The client closed on purpose (seed clients' `manualClose`).
pub const CLIENT_MANUAL: u16 = 4001;
/// The client saw a heartbeat timeout.
pub const CLIENT_HEARTBEAT_TIMEOUT: u16 = 4002;
/// Application: forced logout (convention).
pub const FORCED_LOGOUT: u16 = 4010;
/// Application: authentication failed (convention).
pub const AUTH_FAILED: u16 = 4011;
/// The id was bound by a newer connection (a concurrent login). Default takeover code.
pub const TAKEN_OVER: u16 = 4012;
