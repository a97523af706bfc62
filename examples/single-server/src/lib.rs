//! Shared bits of the single-server examples.

use std::io::IsTerminal;

/// Sets up `tracing` output for an example (`RUST_LOG` overrides the `info` default), in
/// colour on a terminal and plain when piped to a file or another program.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}
