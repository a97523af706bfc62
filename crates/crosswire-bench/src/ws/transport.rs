//! The byte stream under a client connection: plain TCP or TLS over TCP, counting the bytes
//! that cross the socket (TLS records included), so that a run can report bytes on the wire.

use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// A TCP stream that counts the bytes read from and written to it (plain fields: a stream
/// has one owner, so counting costs an addition per system call).
#[derive(Debug)]
pub struct Counted {
    tcp: TcpStream,
    read: u64,
    written: u64,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

impl Counted {
    fn count_written(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = polled {
            self.written += n as u64;
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.count_written(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.count_written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A client's connection to the server: plain TCP (`ws://`) or TLS (`wss://`).
#[derive(Debug)]
pub enum Transport {
    /// `ws://`.
    Tcp(Counted),
    /// `wss://` (boxed: the TLS state is large).
    Tls(Box<tokio_rustls::client::TlsStream<Counted>>),
}

impl Transport {
    /// Opens a TCP connection (Nagle disabled) to the host and port of `url`, and a TLS
    /// session over it when the scheme is `wss`, trusting the authorities of `tls`.
    pub async fn connect(url: &url::Url, tls: Option<&Arc<ClientConfig>>) -> Result<Self> {
        let host = url
            .host_str()
            .ok_or_else(|| anyhow!("server url {url} has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| anyhow!("server url {url} has no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let counted = Counted {
            tcp,
            read: 0,
            written: 0,
        };
        if url.scheme() != "wss" {
            return Ok(Self::Tcp(counted));
        }
        let Some(config) = tls else {
            bail!("{url} is wss:// but no --ca-file names the authority to trust");
        };
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
        let stream = TlsConnector::from(Arc::clone(config))
            .connect(name, counted)
            .await
            .context("TLS handshake")?;
        Ok(Self::Tls(Box::new(stream)))
    }

    fn counted(&self) -> &Counted {
        match self {
            Self::Tcp(c) => c,
            Self::Tls(t) => t.get_ref().0,
        }
    }

    /// Bytes read from the socket so far (TLS records included).
    pub fn bytes_read(&self) -> u64 {
        self.counted().read
    }

    /// Bytes written to the socket so far (TLS records included).
    pub fn bytes_written(&self) -> u64 {
        self.counted().written
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(c) => Pin::new(c).poll_read(cx, buf),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(c) => Pin::new(c).poll_write(cx, buf),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(c) => c.is_write_vectored(),
            Self::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(c) => Pin::new(c).poll_flush(cx),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(c) => Pin::new(c).poll_shutdown(cx),
            Self::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
