//! What a socket keeps of its upgrade request: the headers, compactly, and the client's
//! address as seen through trusted proxies.
//!
//! The headers are kept as one allocation (`name: value` lines, names lower-case), parsed
//! when asked for: a socket that nobody asks about costs only that block, and
//! [`HeaderRetention`] can drop it (or all but some names) once the connection handlers ran.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Which request headers a socket keeps once its synchronous connection handlers ran (they
/// see every header through the socket; every connection handler, `async` ones too, gets
/// them all in [`crate::system::Connection::headers`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeaderRetention {
    /// Keep every header for the socket's whole life, but the handshake's own
    /// (`Connection`, `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`,
    /// `Sec-WebSocket-Extensions`), which mean nothing once the socket is open. The default.
    #[default]
    All,
    /// Keep none (saves their memory on every idle socket).
    None,
    /// Keep only these.
    Only(Vec<HeaderName>),
}

/// Headers of the WebSocket handshake itself, not kept after it (lower case, as
/// `HeaderName::as_str` gives them).
const HANDSHAKE_ONLY: [&str; 5] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
];

/// The request headers, as one block of `name: value\n` lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderBlock(Option<Box<[u8]>>);

impl HeaderBlock {
    pub(crate) fn new(headers: &HeaderMap) -> Self {
        Self::from_pairs(headers.iter())
    }

    fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>) -> Self {
        let mut block = Vec::new();
        for (name, value) in pairs {
            // A line break inside a value would split it; hyper never lets one through.
            if value.as_bytes().contains(&b'\n') {
                continue;
            }
            block.extend_from_slice(name.as_str().as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value.as_bytes());
            block.push(b'\n');
        }
        Self((!block.is_empty()).then(|| block.into_boxed_slice()))
    }

    /// Every (name, value) pair in request order.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0
            .as_deref()
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let at = line.windows(2).position(|w| w == b": ")?;
                Some((&line[..at], &line[at + 2..]))
            })
    }

    /// The first value of `name` (case-insensitive).
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of `name`.
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.pairs()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub(crate) fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in self.pairs() {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                map.append(name, value);
            }
        }
        map
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.get_all("cookie").find_map(|header| {
            let header = std::str::from_utf8(header).ok()?;
            header.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        })
    }

    /// What `retention` keeps of this block.
    pub(crate) fn retain(&mut self, retention: &HeaderRetention) {
        match retention {
            HeaderRetention::All => {
                if HANDSHAKE_ONLY.iter().any(|name| self.get(name).is_some()) {
                    let map = self.to_map();
                    let kept = map
                        .iter()
                        .filter(|(n, _)| !HANDSHAKE_ONLY.contains(&n.as_str()));
                    *self = Self::from_pairs(kept);
                }
            }
            HeaderRetention::None => self.0 = None,
            HeaderRetention::Only(names) => {
                let map = self.to_map();
                let kept = map.iter().filter(|(n, _)| names.contains(n));
                *self = Self::from_pairs(kept);
            }
        }
    }
}

/// The client's address: the peer's, or — when the peer is a trusted proxy — the one the
/// proxies reported in `Forwarded` or `X-Forwarded-For`, read from the right and skipping
/// further trusted proxies (so a client cannot spoof it by sending the header itself).
pub(crate) fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let chain = forwarded_chain(headers);
    let mut last = peer;
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => last = *ip,
            Some(ip) => return Some(*ip),
            // An unknown or obfuscated hop: trust stops at the proxy that reported it.
            None => return Some(last),
        }
    }
    Some(last)
}

/// The hops of `Forwarded` (RFC 7239, its `for=` parameters) or, without it,
/// `X-Forwarded-For`, left (client) to right (nearest proxy); `None` for a hop that is not an
/// address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let forwarded = values(http::header::FORWARDED);
    if !forwarded.is_empty() {
        return forwarded
            .into_iter()
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.eq_ignore_ascii_case("for").then_some(v)
                    })
                    .and_then(parse_node)
            })
            .collect();
    }
    values(HeaderName::from_static("x-forwarded-for"))
        .into_iter()
        .map(parse_node)
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn block_keeps_headers_and_cookies() {
        let map = headers(&[
            ("origin", "https://app.example"),
            ("cookie", "a=1; session=\"abc\""),
            ("cookie", "b=2"),
            ("user-agent", "test/1"),
        ]);
        let mut block = HeaderBlock::new(&map);
        assert_eq!(block.get("Origin"), Some(&b"https://app.example"[..]));
        assert_eq!(block.cookie("session").as_deref(), Some("abc"));
        assert_eq!(block.cookie("b").as_deref(), Some("2"));
        assert_eq!(block.cookie("c"), None);
        assert_eq!(block.to_map().len(), 4);
        block.retain(&HeaderRetention::Only(vec![HeaderName::from_static(
            "user-agent",
        )]));
        assert_eq!(block.get("origin"), None);
        assert_eq!(block.get("user-agent"), Some(&b"test/1"[..]));
        block.retain(&HeaderRetention::None);
        assert_eq!(block.to_map().len(), 0);
    }

    #[test]
    fn forwarded_address_is_honoured_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        // Untrusted peer: the header is the client's own claim, ignored.
        assert_eq!(client_ip(Some(peer), &xff, &[]), Some(peer.ip()));
        // Trusted peer and trusted inner proxy: the rightmost untrusted hop.
        let trusted = nets(&["10.0.0.0/24"]);
        assert_eq!(
            client_ip(Some(peer), &xff, &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // A spoofed left-most entry does not win over the hop the proxy saw.
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4")]);
        assert_eq!(
            client_ip(Some(peer), &spoofed, &trusted),
            Some("198.51.100.4".parse().unwrap())
        );
        // RFC 7239, with an IPv6 node and a port; it wins over X-Forwarded-For.
        let fwd = headers(&[
            (
                "forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=10.0.0.7",
            ),
            ("x-forwarded-for", "192.0.2.1"),
        ]);
        assert_eq!(
            client_ip(Some(peer), &fwd, &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        // An obfuscated hop stops the walk at the proxy that reported it.
        let hidden = headers(&[("forwarded", "for=_hidden, for=10.0.0.7")]);
        assert_eq!(
            client_ip(Some(peer), &hidden, &trusted),
            Some("10.0.0.7".parse().unwrap())
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(Some(peer), &HeaderMap::new(), &trusted),
            Some(peer.ip())
        );
    }
}
