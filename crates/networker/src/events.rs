//! Networker events for any number of subscribers, none of them ever missing one.
//!
//! Each subscriber ([`Events`]) has its own queue. Events are pushed without waiting (they
//! are produced under the peer table's lock, so that their order is the table's) and no
//! queue grows with a slow reader: a queue is *coalesced* in a way that keeps the
//! once-per-peer contract.
//! - A [`NetworkerEvent::PeerRemove`] whose [`NetworkerEvent::PeerAdd`] is still queued
//!   removes that add instead of being queued: a connection that came and went while the
//!   subscriber was not reading is not reported at all, and a reported add is always
//!   followed by exactly one remove.
//! - A [`NetworkerEvent::Joined`] or [`NetworkerEvent::Flushed`] already queued for the
//!   same discovery key is not queued twice.
//!
//! So a queue holds at most one add per live connection, one remove per connection whose
//! add the subscriber has read, and two events per configured discovery key, however
//! slowly it is read and however fast peers churn.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use futures::Stream;

use crate::NetworkerEvent;

#[derive(Default)]
struct Queue {
    events: VecDeque<NetworkerEvent>,
    /// The networker closed: the subscriber ends once it has read what is queued.
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn push(&mut self, ev: NetworkerEvent) {
        match &ev {
            NetworkerEvent::PeerRemove(p) => {
                let id = p.connection_id;
                let queued_add = self
                    .events
                    .iter()
                    .position(|e| matches!(e, NetworkerEvent::PeerAdd(a) if a.connection_id == id));
                if let Some(i) = queued_add {
                    self.events.remove(i);
                    return;
                }
            }
            NetworkerEvent::Joined(dk) | NetworkerEvent::Flushed(dk) => {
                let queued = self.events.iter().any(|e| match (e, &ev) {
                    (NetworkerEvent::Joined(a), NetworkerEvent::Joined(_))
                    | (NetworkerEvent::Flushed(a), NetworkerEvent::Flushed(_)) => a == dk,
                    _ => false,
                });
                if queued {
                    return;
                }
            }
            NetworkerEvent::PeerAdd(_) => {}
        }
        self.events.push_back(ev);
    }
}

type Shared = Arc<Mutex<Queue>>;

fn lock(q: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    // A panic while holding the lock leaves a queue that is still consistent (every
    // operation on it is a single push or pop).
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The producer side: every subscriber's queue.
#[derive(Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Weak<Mutex<Queue>>>>,
}

impl EventBus {
    /// A new subscriber, which sees every event from now on.
    pub(crate) fn subscribe(&self) -> Events {
        let q: Shared = Arc::default();
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Arc::downgrade(&q));
        Events { queue: q }
    }

    /// Queues `ev` for every subscriber (without waiting) and wakes them.
    pub(crate) fn send(&self, ev: NetworkerEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|w| {
            let Some(q) = w.upgrade() else { return false };
            let waker = {
                let mut q = lock(&q);
                q.push(ev.clone());
                q.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
            true
        });
    }

    /// Ends every subscriber once it has read what is queued.
    pub(crate) fn close(&self) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for q in subs.iter().filter_map(Weak::upgrade) {
            let waker = {
                let mut q = lock(&q);
                q.closed = true;
                q.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// A subscription to a networker's events ([`crate::Networker::events`]): a [`Stream`] of
/// [`NetworkerEvent`]s that ends when the networker closes. Lossless for the once-per-peer
/// contract (see the module docs for how its queue stays bounded); any number can be open.
pub struct Events {
    queue: Shared,
}

impl Events {
    /// The next event; `None` once the networker closed and every queued event was read.
    pub async fn recv(&mut self) -> Option<NetworkerEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The next queued event, without waiting.
    pub fn try_recv(&mut self) -> Option<NetworkerEvent> {
        lock(&self.queue).events.pop_front()
    }

    /// How many events are queued (bounded: see the module docs).
    pub fn queued(&self) -> usize {
        lock(&self.queue).events.len()
    }
}

impl Stream for Events {
    type Item = NetworkerEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetworkerEvent>> {
        let mut q = lock(&self.queue);
        if let Some(ev) = q.events.pop_front() {
            return Poll::Ready(Some(ev));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.queued())
            .finish()
    }
}
