//! Shared bits of the WebSocket cluster examples.

/// Sets up `tracing` output (`RUST_LOG` overrides the `info` default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// A JSON value as the seed's `String(value)` would have it: strings as they are, numbers
/// and the rest as their JSON text; `None` for null or a missing value.
pub fn as_id(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
