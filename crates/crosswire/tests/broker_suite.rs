//! The cluster suite every broker runs (`crosswire_testkit::broker_suite`), over the
//! in-process broker hub: every target kind, server-to-server requests, discovery, takeover,
//! order per room, compressed envelopes, custom channels, presence, and recovery from history.

crosswire_testkit::broker_suite!(crosswire_testkit::broker_suite::Hub, with_history);
