//! Handler tables: registration, `once`, removal by handle, tag or name, and the order in
//! which an event's handlers run. What a handler is, and how it is called, is the handler
//! layer's business: a table stores any `H`.
//!
//! The table is copied on write and swapped in whole (`arc-swap`): looking handlers up takes
//! no lock and writes nothing shared, so threads dispatching events never contend; changes
//! (rare) are serialised by a mutex. Dispatching clones one name's `Arc<[_]>` and calls the
//! handlers with nothing held, so a handler may register or remove handlers itself. A `once` handler claims its
//! single run with an atomic flag, so two events racing on two threads run it exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crosswire_core::Histogram;
use rustc_hash::FxHashMap;

use crate::sync::lock;
use crate::timing::Timings;

/// Identifies one registered handler, for [`crate::Server::off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub(crate) u64);

/// Which event a handler is for, and whether it runs once: `server.on("say", …)` or
/// `server.on(On::once("hello"), …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct On {
    pub(crate) event: Box<str>,
    pub(crate) once: bool,
}

impl On {
    /// Every occurrence of `event`.
    pub fn event(event: impl Into<String>) -> Self {
        Self {
            event: event.into().into_boxed_str(),
            once: false,
        }
    }

    /// The next occurrence of `event` only; the handler is removed when it runs.
    pub fn once(event: impl Into<String>) -> Self {
        Self {
            event: event.into().into_boxed_str(),
            once: true,
        }
    }
}

impl From<&str> for On {
    fn from(event: &str) -> Self {
        Self::event(event)
    }
}

impl From<String> for On {
    fn from(event: String) -> Self {
        Self::event(event)
    }
}

pub(crate) struct Entry<H: ?Sized> {
    pub(crate) id: HandlerId,
    tag: Option<Arc<str>>,
    /// `Some` for a `once` handler: set by the run that claims it.
    fired: Option<AtomicBool>,
    pub(crate) handler: Arc<H>,
    /// Where its runs are timed (handlers of client and server events).
    pub(crate) timer: Option<Arc<Histogram>>,
}

impl<H: ?Sized> Entry<H> {
    /// Whether this run may call the handler (a `once` handler runs for one caller only).
    fn claim(&self) -> bool {
        self.fired
            .as_ref()
            .is_none_or(|fired| !fired.swap(true, Ordering::AcqRel))
    }
}

/// Handler lists by name; each list is replaced, never mutated, on change. Names come from
/// the application; a client's event name is only looked up, never inserted, so a fast
/// non-keyed hash is safe here.
type HandlerMap<H> = FxHashMap<Box<str>, Arc<[Arc<Entry<H>>]>>;

/// Handlers of one kind (client events, server events, system events), keyed by name.
pub(crate) struct Listeners<H: ?Sized> {
    map: ArcSwap<HandlerMap<H>>,
    /// Serialises changes (each copies the map and swaps the copy in).
    writer: Mutex<()>,
    /// One bit per [`name_bit`] of every name ever registered: a name whose bit is clear
    /// has no handler, known without taking the lock (most messages raise system events
    /// nobody listens to). Bits are never cleared; a stale bit only costs the lookup.
    seen: AtomicU64,
    /// Handler durations by name, for a timed table.
    timings: Option<Timings>,
}

impl<H: ?Sized> Default for Listeners<H> {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(HandlerMap::default()),
            writer: Mutex::new(()),
            seen: AtomicU64::new(0),
            timings: None,
        }
    }
}

/// A name's bit in [`Listeners::seen`] (FNV-1a, folded to 0..64).
fn name_bit(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    1 << (hash % 64)
}

static NEXT_HANDLER: AtomicU64 = AtomicU64::new(1);

impl<H: ?Sized> Listeners<H> {
    /// A table whose handlers' runs are timed by event name.
    pub(crate) fn timed() -> Self {
        Self {
            timings: Some(Timings::default()),
            ..Self::default()
        }
    }

    /// Handler durations by event name (empty for an untimed table).
    pub(crate) fn durations(&self) -> Vec<(String, crosswire_core::HistogramSnapshot)> {
        self.timings
            .as_ref()
            .map(Timings::snapshot)
            .unwrap_or_default()
    }

    pub(crate) fn add(
        &self,
        name: &str,
        handler: Arc<H>,
        tag: Option<&str>,
        once: bool,
    ) -> HandlerId {
        let id = HandlerId(NEXT_HANDLER.fetch_add(1, Ordering::Relaxed));
        let entry = Arc::new(Entry {
            id,
            tag: tag.map(Arc::from),
            fired: once.then(|| AtomicBool::new(false)),
            handler,
            timer: self.timings.as_ref().map(|t| t.for_name(name)),
        });
        self.seen.fetch_or(name_bit(name), Ordering::Release);
        self.change(|map| {
            let list = map.entry(name.into()).or_insert_with(|| Arc::from([]));
            let mut v: Vec<Arc<Entry<H>>> = list.to_vec();
            v.push(entry);
            *list = Arc::from(v);
        });
        id
    }

    /// Applies `f` to a copy of the table and swaps the copy in.
    fn change<R>(&self, f: impl FnOnce(&mut HandlerMap<H>) -> R) -> R {
        let _writer = lock(&self.writer);
        let mut map = HandlerMap::clone(&self.map.load());
        let result = f(&mut map);
        self.map.store(Arc::new(map));
        result
    }

    /// The handlers for `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<[Arc<Entry<H>>]>> {
        if self.seen.load(Ordering::Acquire) & name_bit(name) == 0 {
            return None;
        }
        self.map.load().get(name).cloned()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        if self.seen.load(Ordering::Acquire) & name_bit(name) == 0 {
            return false;
        }
        self.map.load().get(name).is_some_and(|l| !l.is_empty())
    }

    /// Calls `call` with every handler of `list` in registration order; a `once` handler
    /// is claimed (one caller runs it, however many race) and removed.
    pub(crate) fn run<'l>(&self, list: &'l [Arc<Entry<H>>], mut call: impl FnMut(&'l Entry<H>)) {
        for entry in list {
            if !entry.claim() {
                continue;
            }
            if entry.fired.is_some() {
                self.remove_id(entry.id);
            }
            call(entry);
        }
    }

    pub(crate) fn remove_where(&self, pred: impl Fn(&Entry<H>) -> bool) -> usize {
        if !self
            .map
            .load()
            .values()
            .any(|list| list.iter().any(|e| pred(e)))
        {
            return 0;
        }
        self.change(|map| {
            let mut removed = 0;
            map.retain(|_, list| {
                if list.iter().any(|e| pred(e)) {
                    let v: Vec<Arc<Entry<H>>> = list.iter().filter(|e| !pred(e)).cloned().collect();
                    removed += list.len() - v.len();
                    *list = Arc::from(v);
                }
                !list.is_empty()
            });
            removed
        })
    }

    pub(crate) fn remove_id(&self, id: HandlerId) -> usize {
        self.remove_where(|e| e.id == id)
    }

    pub(crate) fn remove_tag(&self, tag: &str) -> usize {
        self.remove_where(|e| e.tag.as_deref() == Some(tag))
    }

    pub(crate) fn remove_name(&self, name: &str) -> usize {
        if !self.map.load().contains_key(name) {
            return 0;
        }
        self.change(|map| map.remove(name).map_or(0, |l| l.len()))
    }
}
