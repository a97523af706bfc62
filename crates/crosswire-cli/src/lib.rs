//! The relay application that `crosswire serve` runs (SPEC §4), as a library so tests and
//! embedders can install it on any [`crosswire::Server`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let server = crosswire::Server::new(crosswire::ServerConfig::default())?;
//! crosswire_cli::relay::install(&server);
//! let addr = server.listen("127.0.0.1:0").await?;
//! # let _ = addr;
//! # server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod admin;
pub mod demo;
pub mod http;
pub mod relay;
mod token;
