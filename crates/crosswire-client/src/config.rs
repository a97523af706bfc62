//! Client options, with the seed client's defaults.

use std::time::Duration;

use crate::error::ConfigError;

/// Options of a [`Client`](crate::Client).
///
/// Build one with [`ClientConfig::new`] and the `with_*` setters; every field has the seed
/// client's default, given in its documentation.
///
/// ```
/// use std::time::Duration;
/// use crosswire_client::ClientConfig;
///
/// let config = ClientConfig::new("ws://127.0.0.1:9000/game")
///     .with_param("id", "16")
///     .with_param("name", "Sam")
///     .with_ping_interval(Duration::from_secs(5))
///     .with_repeat_limit(Some(10));
/// assert_eq!(config.pong_timeout, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Server URL, `ws://` or `wss://` (the latter needs one of the crate's TLS features).
    pub url: String,
    /// Custom parameters appended to the URL's query string, percent-encoded. A parameter
    /// whose key is already in the URL's query replaces it. Default: none.
    pub params: Vec<(String, String)>,
    /// How often the heartbeat message is sent. `Duration::ZERO` disables the heartbeat.
    /// Default: 10 s.
    pub ping_interval: Duration,
    /// How long to wait for the server to echo the heartbeat before the connection is
    /// considered dead (`pong-timeout`, close 4002, reconnect). Default: 2 s.
    pub pong_timeout: Duration,
    /// The heartbeat text frame; the server echoes it. Default: `""` (the empty string).
    pub ping_message: String,
    /// How many reconnect attempts wait [`fast_reconnect_interval`](Self::fast_reconnect_interval)
    /// before the delay starts growing. Default: 3.
    pub fast_reconnect_threshold: u32,
    /// Delay of the first attempts, and the smallest delay of any attempt. Default: 3 s.
    pub fast_reconnect_interval: Duration,
    /// Longest delay between reconnect attempts. Default: 120 s.
    pub max_reconnect_interval: Duration,
    /// Reconnect attempts allowed before giving up with `repeat-limit`; `None` is unlimited.
    /// The count restarts at every successful open. Default: `None`.
    pub repeat_limit: Option<u32>,
    /// How long a request waits for its reply before failing with `CALLBACK_TIMEOUT`.
    /// Default: 5 s.
    pub callback_timeout: Duration,
    /// How long a request waits before its `on_pending` hook fires. Default: 100 ms.
    pub pending_timeout: Duration,
    /// How long one connection attempt (TCP, TLS and WebSocket handshake) may take before it
    /// counts as failed. Not in the seed client, which relies on the platform. Default: 10 s.
    pub connect_timeout: Duration,
    /// The event [`Client::join`](crate::Client::join) sends, and re-sends for every joined
    /// room after a reconnect. Not in the seed client. Default: `"join"` (the relay's).
    pub join_event: String,
    /// The event [`Client::leave`](crate::Client::leave) sends. Not in the seed client.
    /// Default: `"leave"` (the relay's).
    pub leave_event: String,
}

impl ClientConfig {
    /// Options for `url`, everything else at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            params: Vec::new(),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(2),
            ping_message: String::new(),
            fast_reconnect_threshold: 3,
            fast_reconnect_interval: Duration::from_secs(3),
            max_reconnect_interval: Duration::from_secs(120),
            repeat_limit: None,
            callback_timeout: Duration::from_secs(5),
            pending_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            join_event: "join".to_string(),
            leave_event: "leave".to_string(),
        }
    }

    /// Adds one custom query parameter (see [`params`](Self::params)).
    pub fn with_param(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.params.push((key.into(), value.to_string()));
        self
    }

    /// Adds custom query parameters (see [`params`](Self::params)).
    pub fn with_params<K, V>(mut self, params: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: ToString,
    {
        self.params
            .extend(params.into_iter().map(|(k, v)| (k.into(), v.to_string())));
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval).
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`pong_timeout`](Self::pong_timeout).
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Sets [`ping_message`](Self::ping_message).
    pub fn with_ping_message(mut self, message: impl Into<String>) -> Self {
        self.ping_message = message.into();
        self
    }

    /// Sets [`fast_reconnect_threshold`](Self::fast_reconnect_threshold).
    pub fn with_fast_reconnect_threshold(mut self, attempts: u32) -> Self {
        self.fast_reconnect_threshold = attempts;
        self
    }

    /// Sets [`fast_reconnect_interval`](Self::fast_reconnect_interval).
    pub fn with_fast_reconnect_interval(mut self, interval: Duration) -> Self {
        self.fast_reconnect_interval = interval;
        self
    }

    /// Sets [`max_reconnect_interval`](Self::max_reconnect_interval).
    pub fn with_max_reconnect_interval(mut self, interval: Duration) -> Self {
        self.max_reconnect_interval = interval;
        self
    }

    /// Sets [`repeat_limit`](Self::repeat_limit).
    pub fn with_repeat_limit(mut self, limit: Option<u32>) -> Self {
        self.repeat_limit = limit;
        self
    }

    /// Sets [`callback_timeout`](Self::callback_timeout).
    pub fn with_callback_timeout(mut self, timeout: Duration) -> Self {
        self.callback_timeout = timeout;
        self
    }

    /// Sets [`pending_timeout`](Self::pending_timeout).
    pub fn with_pending_timeout(mut self, timeout: Duration) -> Self {
        self.pending_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`join_event`](Self::join_event) and [`leave_event`](Self::leave_event), for a
    /// server whose room events have other names.
    ///
    /// ```
    /// use crosswire_client::ClientConfig;
    ///
    /// let config = ClientConfig::new("ws://h").with_join_events("subscribe", "unsubscribe");
    /// assert_eq!((config.join_event.as_str(), config.leave_event.as_str()), ("subscribe", "unsubscribe"));
    /// assert_eq!(ClientConfig::new("ws://h").join_event, "join");
    /// ```
    pub fn with_join_events(mut self, join: impl Into<String>, leave: impl Into<String>) -> Self {
        self.join_event = join.into();
        self.leave_event = leave.into();
        self
    }

    /// The URL actually dialled: [`url`](Self::url) with [`params`](Self::params) merged into
    /// its query string.
    ///
    /// ```
    /// use crosswire_client::ClientConfig;
    ///
    /// let url = ClientConfig::new("ws://host:9000/room?v=1&id=0")
    ///     .with_param("id", 7)
    ///     .with_param("name", "Sam Smith")
    ///     .connect_url()
    ///     .unwrap();
    /// assert_eq!(url, "ws://host:9000/room?v=1&id=7&name=Sam%20Smith");
    /// ```
    pub fn connect_url(&self) -> Result<String, ConfigError> {
        let mut url = url::Url::parse(&self.url)?;
        match url.scheme() {
            "ws" | "wss" => {}
            other => return Err(ConfigError::UnsupportedScheme(other.to_string())),
        }
        if self.params.is_empty() {
            return Ok(url.into());
        }
        // Existing pairs keep their order, an overridden key takes the custom value in place,
        // new keys are appended; everything is percent-encoded the way JavaScript's
        // encodeURIComponent does it (space as %20), which every server decodes.
        let mut pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (key, value) in &self.params {
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(pair) => pair.1.clone_from(value),
                None => pairs.push((key.clone(), value.clone())),
            }
        }
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencoding::encode(k), urlencoding::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        url.set_query(Some(&query));
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_seed() {
        let c = ClientConfig::new("ws://h");
        assert_eq!(c.ping_interval, Duration::from_secs(10));
        assert_eq!(c.pong_timeout, Duration::from_secs(2));
        assert_eq!(c.ping_message, "");
        assert_eq!(c.fast_reconnect_threshold, 3);
        assert_eq!(c.fast_reconnect_interval, Duration::from_secs(3));
        assert_eq!(c.max_reconnect_interval, Duration::from_secs(120));
        assert_eq!(c.repeat_limit, None);
        assert_eq!(c.callback_timeout, Duration::from_secs(5));
        assert_eq!(c.pending_timeout, Duration::from_millis(100));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(
            (c.join_event.as_str(), c.leave_event.as_str()),
            ("join", "leave")
        );
    }

    #[test]
    fn url_checks_and_params() {
        assert!(matches!(
            ClientConfig::new("http://h").connect_url(),
            Err(ConfigError::UnsupportedScheme(s)) if s == "http"
        ));
        assert!(matches!(
            ClientConfig::new("not a url").connect_url(),
            Err(ConfigError::InvalidUrl(_))
        ));
        assert_eq!(
            ClientConfig::new("wss://h/p").connect_url().unwrap(),
            "wss://h/p"
        );
        assert_eq!(
            ClientConfig::new("ws://h/p")
                .with_params([("token", "a&b=c"), ("ü", "é")])
                .connect_url()
                .unwrap(),
            "ws://h/p?token=a%26b%3Dc&%C3%BC=%C3%A9"
        );
    }
}
