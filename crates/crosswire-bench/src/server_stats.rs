//! The counters of a `crosswire serve` node, read from its `GET /healthz` (same port as the
//! WebSockets, over TLS for `wss://`) before and after a run, so that a report can say what
//! the server did: e.g. how many messages permessage-deflate compressed, and from how many
//! bytes to how many. Best effort: a server without that endpoint simply has no figures.

use crate::ws::{ConnectOptions, Transport};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response read.
const MAX_RESPONSE: usize = 256 << 10;

/// How long the request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The `stats` object of the `/healthz` answer of the node at `base` (a `ws://` or `wss://`
/// URL).
pub async fn fetch(base: &str, options: &ConnectOptions) -> Result<Value> {
    let url = url::Url::parse(base).with_context(|| format!("invalid server url {base:?}"))?;
    tokio::time::timeout(TIMEOUT, get_healthz(&url, options))
        .await
        .map_err(|_| anyhow!("GET /healthz timed out"))?
}

async fn get_healthz(url: &url::Url, options: &ConnectOptions) -> Result<Value> {
    let (_, body) = get_body(url, "/healthz", options).await?;
    let doc: Value = serde_json::from_slice(&body).context("/healthz is not JSON")?;
    doc.get("stats")
        .cloned()
        .ok_or_else(|| anyhow!("/healthz has no stats"))
}

/// The body of a `GET path` on the node at `base` (a `ws://` or `wss://` URL), within the
/// same timeout as [`fetch`]; an error unless the status is 200.
pub async fn get(base: &str, path: &str, options: &ConnectOptions) -> Result<Vec<u8>> {
    let url = url::Url::parse(base).with_context(|| format!("invalid server url {base:?}"))?;
    let (status, body) = tokio::time::timeout(TIMEOUT, get_body(&url, path, options))
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    if status != "200" {
        bail!("GET {path}: status {status}");
    }
    Ok(body)
}

/// The status code (as text) and body of a `GET path`.
async fn get_body(
    url: &url::Url,
    path: &str,
    options: &ConnectOptions,
) -> Result<(String, Vec<u8>)> {
    let mut io = Transport::connect(url, options.tls.as_ref()).await?;
    let host = url.host_str().unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        if let Some(body) = complete_body(&buf)? {
            let status = buf.split(|&b| b == b' ').nth(1).unwrap_or_default();
            return Ok((String::from_utf8_lossy(status).into_owned(), body.to_vec()));
        }
        if buf.len() > MAX_RESPONSE {
            bail!("{path} answer larger than {MAX_RESPONSE} bytes");
        }
        if io.read_buf(&mut buf).await? == 0 {
            bail!("{path} answer cut short");
        }
    }
}

/// The body of `response` once it is complete (by its `Content-Length`).
fn complete_body(response: &[u8]) -> Result<Option<&[u8]>> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&response[..end]).context("response head is not UTF-8")?;
    let length = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or_else(|| anyhow!("answer has no Content-Length"))?;
    let body = &response[end + 4..];
    Ok((body.len() >= length).then(|| &body[..length]))
}

/// `after − before` for every counter present in both (non-negative integers).
pub fn delta(before: &Value, after: &Value) -> Value {
    let mut out = Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (key, value) in a {
            if let (Some(a), Some(b)) = (value.as_u64(), b.get(key).and_then(Value::as_u64)) {
                out.insert(key.clone(), Value::from(a.saturating_sub(b)));
            }
        }
    }
    Value::Object(out)
}

/// The summary line of what permessage-deflate did on the server, from a [`delta`];
/// `None` when it compressed nothing.
pub fn deflate_line(delta: &Value) -> Option<String> {
    let get = |k: &str| delta.get(k).and_then(Value::as_u64).unwrap_or(0);
    let messages = get("compressed_messages");
    if messages == 0 {
        return None;
    }
    let (bytes_in, bytes_out) = (get("compressed_bytes_in"), get("compressed_bytes_out"));
    Some(format!(
        "deflate      server compressed {messages} messages once each: {} → {} B ({:.1}% of the size), {} connections negotiated it",
        crate::report::group(bytes_in),
        crate::report::group(bytes_out),
        bytes_out as f64 * 100.0 / bytes_in.max(1) as f64,
        get("deflate_connections")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_complete_by_content_length() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{\"a\"";
        assert_eq!(complete_body(&r[..r.len() - 1]).unwrap(), None);
        assert_eq!(complete_body(r).unwrap(), Some(&b"{\"a\""[..]));
        assert_eq!(complete_body(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        assert!(complete_body(b"HTTP/1.1 200 OK\r\n\r\n{}").is_err());
    }

    #[test]
    fn deltas_and_the_deflate_line() {
        let before = json!({"compressed_messages": 10, "compressed_bytes_in": 1000, "x": "s"});
        let after = json!({"compressed_messages": 30, "compressed_bytes_in": 5000,
                           "compressed_bytes_out": 500, "deflate_connections": 3});
        let d = delta(&before, &after);
        assert_eq!(
            d,
            json!({"compressed_messages": 20, "compressed_bytes_in": 4000})
        );
        assert!(deflate_line(&d).unwrap().contains("20 messages"));
        assert_eq!(deflate_line(&json!({})), None);
    }
}
