//! Event handlers: `on`/`once`/`off` by handle or tag, and request handlers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::Payload;

/// Identifies one registered handler, for [`Client::off`](crate::Client::off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u64);

pub(crate) type Handler = Arc<dyn Fn(&Payload) + Send + Sync>;

/// The encoded answer of a request handler (JSON text of the reply payload).
pub(crate) type AckFuture =
    Pin<Box<dyn Future<Output = Result<Payload, serde_json::Error>> + Send>>;
pub(crate) type RequestHandler = Arc<dyn Fn(Payload) -> AckFuture + Send + Sync>;

struct Entry {
    id: u64,
    tag: Option<Arc<str>>,
    once: bool,
    handler: Handler,
}

/// Handlers by event name. Guarded by a std mutex in `Shared`: it is only held for map
/// operations, never while a handler runs or across an `.await`.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: u64,
    by_event: HashMap<String, Vec<Entry>>,
    requests: HashMap<String, RequestHandler>,
}

impl Registry {
    pub(crate) fn add(
        &mut self,
        event: &str,
        tag: Option<&str>,
        once: bool,
        handler: Handler,
    ) -> HandlerId {
        self.next_id += 1;
        let id = self.next_id;
        self.by_event
            .entry(event.to_string())
            .or_default()
            .push(Entry {
                id,
                tag: tag.map(Arc::from),
                once,
                handler,
            });
        HandlerId(id)
    }

    pub(crate) fn remove(&mut self, id: HandlerId) -> bool {
        let mut removed = false;
        self.by_event.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.id != id.0);
            removed |= entries.len() != before;
            !entries.is_empty()
        });
        removed
    }

    pub(crate) fn remove_tag(&mut self, tag: &str) -> usize {
        let mut removed = 0;
        self.by_event.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|e| e.tag.as_deref() != Some(tag));
            removed += before - entries.len();
            !entries.is_empty()
        });
        removed
    }

    pub(crate) fn remove_event(&mut self, event: &str) -> usize {
        self.by_event
            .remove(event)
            .map_or(0, |entries| entries.len())
    }

    pub(crate) fn has(&self, event: &str) -> bool {
        self.by_event.contains_key(event)
    }

    /// The handlers to call for `event`, in registration order; `once` handlers are removed.
    pub(crate) fn take_for(&mut self, event: &str) -> Vec<Handler> {
        let Some(entries) = self.by_event.get_mut(event) else {
            return Vec::new();
        };
        let handlers = entries.iter().map(|e| e.handler.clone()).collect();
        entries.retain(|e| !e.once);
        if entries.is_empty() {
            self.by_event.remove(event);
        }
        handlers
    }

    pub(crate) fn set_request(&mut self, event: &str, handler: RequestHandler) {
        self.requests.insert(event.to_string(), handler);
    }

    pub(crate) fn remove_request(&mut self, event: &str) -> bool {
        self.requests.remove(event).is_some()
    }

    pub(crate) fn request(&self, event: &str) -> Option<RequestHandler> {
        self.requests.get(event).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, Handler) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (
            n,
            Arc::new(move |_: &Payload| {
                m.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    #[test]
    fn once_off_and_tags() {
        let mut r = Registry::default();
        let (a, ha) = counter();
        let (b, hb) = counter();
        let (c, hc) = counter();
        let ida = r.add("x", None, false, ha);
        r.add("x", None, true, hb);
        r.add("y", Some("ui"), false, hc.clone());
        r.add("x", Some("ui"), false, hc);
        let p = Payload::null();
        for _ in 0..2 {
            for h in r.take_for("x") {
                h(&p);
            }
        }
        assert_eq!(a.load(Ordering::SeqCst), 2);
        assert_eq!(b.load(Ordering::SeqCst), 1);
        assert_eq!(c.load(Ordering::SeqCst), 2);
        assert_eq!(r.remove_tag("ui"), 2);
        assert!(!r.has("y"));
        assert!(r.remove(ida));
        assert!(!r.remove(ida));
        assert!(!r.has("x"));
        assert!(r.take_for("x").is_empty());
    }
}
