//! Connection parameters: the query string and path of the upgrade request.

use std::collections::HashMap;

/// Options for [`RequestParams::parse`], mirroring the seed's `parseWsRequestParams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseOptions {
    /// Lower-case every key. Default: off.
    pub lowercase_keys: bool,
    /// Remove the leading `/` of the path. Default: on.
    pub strip_leading_slash: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            lowercase_keys: false,
            strip_leading_slash: true,
        }
    }
}

/// The path and query parameters a client connected with
/// (`ws://host:port/some/path?id=7&token=abc`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestParams {
    path: Box<str>,
    /// Kept as a short list: a handful of parameters is the norm, and a list is smaller and
    /// faster than a map at that size.
    params: Box<[(Box<str>, Box<str>)]>,
}

impl RequestParams {
    /// Parses a request target such as `/room/7?id=1&name=Sam%20B`. Keys and values are
    /// percent-decoded (`+` as space); a repeated key keeps its first value; undecodable
    /// pairs are skipped.
    pub fn parse(target: &str, options: ParseOptions) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        let path = if options.strip_leading_slash {
            path.strip_prefix('/').unwrap_or(path)
        } else {
            path
        };
        let mut params: Vec<(Box<str>, Box<str>)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (decode(k), decode(v)) else {
                continue;
            };
            let k = if options.lowercase_keys {
                k.to_lowercase()
            } else {
                k
            };
            if params.iter().any(|(existing, _)| **existing == *k) {
                continue;
            }
            params.push((k.into_boxed_str(), v.into_boxed_str()));
        }
        Self {
            path: decode(path)
                .unwrap_or_else(|| path.to_string())
                .into_boxed_str(),
            params: params.into_boxed_slice(),
        }
    }

    /// The request path (without the leading `/` unless configured otherwise).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// One query parameter.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }

    /// Every query parameter, in order of appearance.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The query parameters as a map.
    pub fn to_map(&self) -> HashMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    urlencoding::decode(&s).ok().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seed_connect_urls() {
        let p = RequestParams::parse(
            "/game/hall?id=16&name=Sam%20B&Token=a+b&id=99",
            ParseOptions::default(),
        );
        assert_eq!(p.path(), "game/hall");
        assert_eq!(p.get("id"), Some("16"));
        assert_eq!(p.get("name"), Some("Sam B"));
        assert_eq!(p.get("Token"), Some("a b"));
        assert_eq!(p.iter().count(), 3);
        let p = RequestParams::parse(
            "/?Token=x",
            ParseOptions {
                lowercase_keys: true,
                strip_leading_slash: false,
            },
        );
        assert_eq!(p.path(), "/");
        assert_eq!(p.get("token"), Some("x"));
        let p = RequestParams::parse("/", ParseOptions::default());
        assert_eq!(p.path(), "");
        assert_eq!(p.get("id"), None);
        // Invalid percent-encoding is skipped, not fatal.
        let p = RequestParams::parse("/?a=%FF%FE&b=1&flag", ParseOptions::default());
        assert_eq!(p.get("a"), None);
        assert_eq!(p.get("b"), Some("1"));
        assert_eq!(p.get("flag"), Some(""));
    }
}
