//! Shared bits of the single-server examples.

/// Sets up `tracing` output for an example (`RUST_LOG` overrides the `info` default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
