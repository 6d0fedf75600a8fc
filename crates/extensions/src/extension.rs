//! A registered extension: the [`Extension`] handle, its per-session slots, and the task
//! that runs each slot's channel.
//!
//! - A **slot** is one (session, extension) pair. Its state and its queue of messages waiting
//!   for the channel to open sit behind a mutex shared by the send path and the slot's task,
//!   so that [`Extension::send`] on an open channel goes straight into the mux (no task or
//!   mailbox hop) and a queued message is flushed, in order, the moment the channel opens.
//! - The **slot task** (one per slot, on the runtime that added the session, next to its mux
//!   driver, so that received messages cross no thread on their way in) owns the mux [`Channel`] and the
//!   pairing hook for the extension's name: it accepts the peer's opens, notices opens,
//!   rejects and closes, expires queued messages, and reads, rate-limits, decodes and
//!   dispatches received messages to the `on_message` handler and the [`Messages`] streams.
//! - User callbacks never run under a lock, so they may call back into the extension.

use std::collections::HashMap;
use std::fmt;
use std::future::{pending, poll_fn};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use actix::Addr;
use bytes::Bytes;
use corenet_mux::{Channel, ChannelOptions, ChannelSender, CloseReason, MuxHandle, PairRequests};
use futures_core::Stream;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, error, trace, Instrument};

use crate::bus::{ExtensionBus, Unregister};
use crate::encoding::Encoding;
use crate::error::{Error, Undelivered};
use crate::limits::{Exceeded, PendingQueue, RateLimiter};
use crate::options::{ExtensionOptions, Limits, OnError, OnMessage};
use crate::peer::{Peer, SessionId};

/// The one message type an extension channel carries.
pub(crate) const MESSAGE_TYPE: u64 = 0;
/// Messages a slot task takes from its channel's inbox per wake-up.
const READ_BATCH: usize = 64;

/// Locks a mutex, ignoring poisoning: every critical section leaves the state consistent
/// before it can panic (user code never runs under these locks).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a user callback; a panic in it is logged and goes no further (it must not end the
/// slot's task, and with it the peer's channel, or the runtime's thread).
fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        error!(callback = what, "an extension callback panicked");
    }
}

/// Where a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Our channel is opening: our `open` is out, or we answered the peer's; not confirmed.
    Opening,
    /// Open: messages go straight to the mux.
    Open,
    /// No channel: the peer rejected or closed ours. Its next open is accepted; messages
    /// sent to it wait.
    Idle,
    /// Cut off for flooding, until the session ends.
    Blocked,
    /// Finished: the session ended or the extension was destroyed.
    Closed(Finish),
}

/// Why a slot finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// The connection closed or the session was removed.
    Disconnected,
    /// The extension was destroyed.
    Destroyed,
}

/// A message waiting for its channel to open.
#[derive(Debug)]
struct Queued {
    /// The encoded message.
    payload: Bytes,
    /// A sender waiting for the outcome ([`Extension::send_when_open`]); without one,
    /// failures go to `on_error`.
    done: Option<oneshot::Sender<Result<(), Error>>>,
}

/// What the mutex guards.
#[derive(Debug)]
struct SlotInner {
    /// Where the slot is.
    state: SlotState,
    /// The channel's sending half, while a channel exists (opening or open).
    sender: Option<ChannelSender>,
    /// Messages waiting for the channel to open.
    pending: PendingQueue<Queued>,
}

/// One (session, extension) pair.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The session's peer.
    peer: Peer,
    /// State and queue.
    inner: Mutex<SlotInner>,
    /// Wakes the slot task: the queue got its first message (arm the timer), or the slot
    /// finished.
    wake: Notify,
    /// Wakes [`Extension::opened`] waiters on every state change.
    changed: Notify,
}

/// Messages that failed, to report once the lock is released.
#[derive(Debug, Default)]
struct Failures {
    /// Failed messages nobody waits for.
    unreported: usize,
}

impl Failures {
    /// Fails `q`: its waiter gets the error, or it is counted for `on_error`.
    fn fail(&mut self, q: Queued, reason: Undelivered) {
        match q.done {
            Some(done) => {
                let _ = done.send(Err(Error::Undelivered {
                    messages: 1,
                    reason,
                }));
            }
            None => self.unreported += 1,
        }
    }
}

impl Slot {
    fn new(peer: Peer, state: SlotState, sender: ChannelSender, limits: &Limits) -> Self {
        Slot {
            peer,
            inner: Mutex::new(SlotInner {
                state,
                sender: Some(sender),
                pending: PendingQueue::new(limits.pending),
            }),
            wake: Notify::new(),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> SlotState {
        lock(&self.inner).state
    }

    /// Sends or queues a message. `done` learns the outcome of a queued message.
    fn send(
        &self,
        payload: Bytes,
        done: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Result<(), Error> {
        let mut inner = lock(&self.inner);
        let done = match inner.state {
            SlotState::Open => {
                let Some(sender) = &inner.sender else {
                    return Err(Error::Disconnected);
                };
                match sender.send_now(MESSAGE_TYPE, &payload) {
                    Ok(_) => {
                        trace!(len = payload.len(), "extension message sent");
                        if let Some(done) = done {
                            let _ = done.send(Ok(()));
                        }
                        return Ok(());
                    }
                    // Closed under us: the slot task has not seen it yet. Wait for the next
                    // open like any message sent while the channel is down.
                    Err(corenet_mux::Error::ChannelClosed) => done,
                    Err(e) => return Err(e.into()),
                }
            }
            SlotState::Opening | SlotState::Idle => done,
            SlotState::Blocked => return Err(Error::PeerBlocked),
            SlotState::Closed(Finish::Disconnected) => return Err(Error::Disconnected),
            SlotState::Closed(Finish::Destroyed) => return Err(Error::Destroyed),
        };
        let was_empty = inner.pending.is_empty();
        let len = payload.len();
        inner
            .pending
            .push(Instant::now(), len, Queued { payload, done })
            .map_err(|full| Error::QueueFull {
                messages: full.messages,
                bytes: full.bytes,
            })?;
        trace!(
            len,
            queued = inner.pending.len(),
            "extension message queued"
        );
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The channel opened: flush the queue in order, then let messages through.
    fn set_open(&self) -> Failures {
        let mut failures = Failures::default();
        let mut inner = lock(&self.inner);
        let SlotInner {
            state,
            sender,
            pending,
        } = &mut *inner;
        if matches!(state, SlotState::Closed(_) | SlotState::Blocked) {
            return failures;
        }
        let flushed = pending.len();
        for q in pending.drain() {
            let r = match sender {
                Some(s) => s.send_now(MESSAGE_TYPE, &q.payload).map(|_| ()),
                None => Err(corenet_mux::Error::ChannelClosed),
            };
            match (r, q.done) {
                (Ok(()), Some(done)) => {
                    let _ = done.send(Ok(()));
                }
                (Ok(()), None) => {}
                (Err(e), Some(done)) => {
                    let _ = done.send(Err(e.into()));
                }
                (Err(e), None) => {
                    debug!(error = %e, "a queued extension message could not be sent");
                    failures.unreported += 1;
                }
            }
        }
        *state = SlotState::Open;
        drop(inner);
        debug!(flushed, "extension channel open");
        self.changed.notify_waiters();
        failures
    }

    /// A new channel is opening (we answered the peer's open).
    fn set_opening(&self, new: ChannelSender) {
        let mut inner = lock(&self.inner);
        if matches!(inner.state, SlotState::Closed(_) | SlotState::Blocked) {
            new.close();
            return;
        }
        inner.state = SlotState::Opening;
        inner.sender = Some(new);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The peer rejected or closed our channel: wait for its next open.
    fn set_idle(&self) {
        let mut inner = lock(&self.inner);
        if matches!(inner.state, SlotState::Closed(_) | SlotState::Blocked) {
            return;
        }
        inner.state = SlotState::Idle;
        inner.sender = None;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Ends the slot: closes the channel (its `close` is queued before this returns) and
    /// fails what waits. Idempotent.
    fn finish(&self, state: SlotState, reason: Undelivered) -> Failures {
        let mut failures = Failures::default();
        let mut inner = lock(&self.inner);
        if matches!(inner.state, SlotState::Closed(_)) {
            return failures;
        }
        inner.state = state;
        if let Some(s) = inner.sender.take() {
            s.close();
        }
        let items: Vec<Queued> = inner.pending.drain().collect();
        drop(inner);
        for q in items {
            failures.fail(q, reason);
        }
        self.wake.notify_one();
        self.changed.notify_waiters();
        failures
    }

    /// Fails the queued messages whose time is up.
    fn expire(&self, now: Instant, reason: Undelivered) -> Failures {
        let mut failures = Failures::default();
        let expired = lock(&self.inner).pending.expire(now);
        for q in expired {
            failures.fail(q, reason);
        }
        failures
    }

    fn next_deadline(&self) -> Option<Instant> {
        lock(&self.inner).pending.next_deadline()
    }
}

/// State shared by an extension's handles, its slots' tasks and the bus.
pub(crate) struct ExtShared<E: Encoding> {
    /// The protocol name.
    name: Arc<str>,
    /// Distinguishes this registration from a later one with the same name.
    id: u64,
    /// The encoding.
    encoding: E,
    /// Message handler.
    on_message: Option<OnMessage<E::Message>>,
    /// Error handler.
    on_error: Option<OnError>,
    /// Limits.
    limits: Limits,
    /// Slots by session.
    slots: Mutex<HashMap<SessionId, Arc<Slot>>>,
    /// Message streams.
    subscribers: Mutex<Vec<Subscriber<E::Message>>>,
    /// Bumped when `subscribers` changes, so slot tasks refresh their copies.
    subscribers_epoch: AtomicU64,
    /// The stream created at registration (without an `on_message` handler), until the
    /// first [`Extension::messages`] call takes it.
    unclaimed: Mutex<Option<Inbox<E::Message>>>,
    /// Destroyed: nothing more is sent, received or attached.
    destroyed: AtomicBool,
}

impl<E: Encoding> fmt::Debug for ExtShared<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtShared")
            .field("name", &self.name)
            .field("encoding", &self.encoding.name())
            .field("sessions", &lock(&self.slots).len())
            .field("destroyed", &self.destroyed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<E: Encoding> ExtShared<E> {
    pub(crate) fn new(name: Arc<str>, options: ExtensionOptions<E>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        // Without a handler, messages go to streams only: keep those that arrive before the
        // first `messages()` call (the channels open as soon as the extension registers).
        let (subscribers, unclaimed) = if options.on_message.is_none() {
            let (tx, rx) = mpsc::channel(options.limits.stream_buffer);
            let first = Subscriber {
                tx,
                claimed: Arc::new(AtomicBool::new(false)),
            };
            (vec![first], Some(rx))
        } else {
            (Vec::new(), None)
        };
        ExtShared {
            name,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            encoding: options.encoding,
            on_message: options.on_message,
            on_error: options.on_error,
            limits: options.limits,
            slots: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(subscribers),
            subscribers_epoch: AtomicU64::new(0),
            unclaimed: Mutex::new(unclaimed),
            destroyed: AtomicBool::new(false),
        }
    }

    fn is_destroyed(&self) -> bool {
        self.destroyed.load(Ordering::Acquire)
    }

    /// Hands an error about `peer` to `on_error`, or logs it.
    fn report(&self, error: Error, peer: &Peer) {
        match &self.on_error {
            Some(f) => guarded("on_error", || f(error, peer)),
            None => debug!(extension = %self.name, %peer, %error, "extension error"),
        }
    }

    fn report_failures(&self, failures: Failures, reason: Undelivered, peer: &Peer) {
        if failures.unreported > 0 && !self.is_destroyed() {
            self.report(
                Error::Undelivered {
                    messages: failures.unreported,
                    reason,
                },
                peer,
            );
        }
    }

    fn encode(&self, message: &E::Input) -> Result<Bytes, Error> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        let payload = self.encoding.encode(message)?;
        if payload.len() > self.limits.max_message_size {
            return Err(Error::MessageTooLarge {
                len: payload.len(),
                max: self.limits.max_message_size,
            });
        }
        Ok(payload)
    }

    fn slot(&self, session: SessionId) -> Result<Arc<Slot>, Error> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        lock(&self.slots)
            .get(&session)
            .cloned()
            .ok_or(Error::UnknownPeer(session))
    }

    /// Sends an encoded message to one session.
    pub(crate) fn send_payload(&self, session: SessionId, payload: Bytes) -> Result<(), Error> {
        if payload.len() > self.limits.max_message_size {
            return Err(Error::MessageTooLarge {
                len: payload.len(),
                max: self.limits.max_message_size,
            });
        }
        self.slot(session)?.send(payload, None)
    }

    /// Sends an encoded message to every session whose channel is open, and queues it for
    /// those whose channel is opening; returns how many that was.
    pub(crate) fn broadcast_payload(&self, payload: Bytes) -> Result<usize, Error> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        if payload.len() > self.limits.max_message_size {
            return Err(Error::MessageTooLarge {
                len: payload.len(),
                max: self.limits.max_message_size,
            });
        }
        let slots: Vec<Arc<Slot>> = lock(&self.slots).values().cloned().collect();
        let mut reached = 0;
        for slot in slots {
            // Peers that rejected or closed the extension do not run it: skip them, as JS
            // broadcasts only to peers whose channel is open.
            if !matches!(slot.state(), SlotState::Open | SlotState::Opening) {
                continue;
            }
            match slot.send(payload.clone(), None) {
                Ok(()) => reached += 1,
                Err(e) => self.report(e, &slot.peer),
            }
        }
        Ok(reached)
    }

    /// Fails everything and forgets every slot; ends the message streams. Idempotent.
    pub(crate) fn destroy(&self) {
        if self.destroyed.swap(true, Ordering::AcqRel) {
            return;
        }
        let slots: Vec<Arc<Slot>> = lock(&self.slots).drain().map(|(_, s)| s).collect();
        for slot in slots {
            slot.finish(SlotState::Closed(Finish::Destroyed), Undelivered::Destroyed);
        }
        lock(&self.subscribers).clear();
        lock(&self.unclaimed).take();
        self.subscribers_epoch.fetch_add(1, Ordering::AcqRel);
        debug!(extension = %self.name, "extension destroyed");
    }
}

/// What the bus needs from a registration, whatever its encoding.
pub(crate) trait Registration: Send + Sync + fmt::Debug {
    /// The protocol name.
    fn name(&self) -> &Arc<str>;
    /// The registration's id.
    fn id(&self) -> u64;
    /// Opens the extension's channel on a session's mux and starts its slot task on
    /// `runtime` (or on the current actix arbiter).
    fn attach(
        self: Arc<Self>,
        peer: &Peer,
        mux: &MuxHandle,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<(), Error>;
    /// The session ended.
    fn detach(&self, session: SessionId);
    /// The registration ends.
    fn destroy(&self);
    /// See [`ExtShared::send_payload`].
    fn send_payload(&self, session: SessionId, payload: Bytes) -> Result<(), Error>;
    /// See [`ExtShared::broadcast_payload`].
    fn broadcast_payload(&self, payload: Bytes) -> Result<usize, Error>;
}

impl<E: Encoding> Registration for ExtShared<E> {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn attach(
        self: Arc<Self>,
        peer: &Peer,
        mux: &MuxHandle,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<(), Error> {
        if self.is_destroyed() {
            return Err(Error::Destroyed);
        }
        // The hook first: a remote open that a channel of ours does not answer (the peer
        // opened after rejecting ours, or re-opened after a close) must reach the slot.
        let hooks = mux.pair(&self.name, None);
        let channel = mux.open(&ChannelOptions::new(self.name.clone()))?;
        let slot = Arc::new(Slot::new(
            peer.clone(),
            SlotState::Opening,
            channel.sender(),
            &self.limits,
        ));
        if let Some(old) = lock(&self.slots).insert(peer.session(), slot.clone()) {
            // Not reachable through the bus (sessions are unique); be safe anyway.
            old.finish(
                SlotState::Closed(Finish::Disconnected),
                Undelivered::Disconnected,
            );
        }
        let span = tracing::debug_span!("extension", name = %self.name, session = %peer.session());
        let task = SlotTask {
            ext: self,
            slot,
            channel: Some(channel),
            open: false,
            hooks: Some(hooks),
            limiter: None,
            subscribers: Vec::new(),
            subscribers_epoch: u64::MAX,
        };
        let task = task.run().instrument(span);
        match runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(actix::spawn(task)),
        }
        Ok(())
    }

    fn detach(&self, session: SessionId) {
        let slot = lock(&self.slots).remove(&session);
        if let Some(slot) = slot {
            let failures = slot.finish(
                SlotState::Closed(Finish::Disconnected),
                Undelivered::Disconnected,
            );
            self.report_failures(failures, Undelivered::Disconnected, &slot.peer);
        }
    }

    fn destroy(&self) {
        ExtShared::destroy(self);
    }

    fn send_payload(&self, session: SessionId, payload: Bytes) -> Result<(), Error> {
        ExtShared::send_payload(self, session, payload)
    }

    fn broadcast_payload(&self, payload: Bytes) -> Result<usize, Error> {
        ExtShared::broadcast_payload(self, payload)
    }
}

/// What woke the slot task.
enum Wakeup {
    /// The slot's notify: re-check the state and the timer.
    Poke,
    /// Something happened on the channel.
    Channel(ChannelEvent),
    /// A remote open for the extension's name that no channel answered; `None`: the mux
    /// closed.
    Request(Option<corenet_mux::PairRequest>),
    /// The oldest queued message's time is up.
    Timer,
}

/// What happened on the channel.
enum ChannelEvent {
    /// The peer opened its side.
    Opened,
    /// A message.
    Message(corenet_mux::Message),
    /// It closed.
    Closed(Option<CloseReason>),
}

async fn channel_event(channel: &mut Option<Channel>, open: bool) -> ChannelEvent {
    let Some(ch) = channel else {
        return pending().await;
    };
    if open {
        match ch.recv().await {
            Some(m) => ChannelEvent::Message(m),
            None => ChannelEvent::Closed(ch.close_reason()),
        }
    } else {
        match ch.opened().await {
            Ok(_) => ChannelEvent::Opened,
            Err(_) => ChannelEvent::Closed(ch.close_reason()),
        }
    }
}

async fn next_request(hooks: &mut Option<PairRequests>) -> Option<corenet_mux::PairRequest> {
    match hooks {
        Some(h) => h.recv().await,
        None => pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => pending().await,
    }
}

/// Whether the slot task goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// The slot is finished or blocked.
    Stop,
}

/// The task that runs one slot. See the [module docs](self).
struct SlotTask<E: Encoding> {
    /// The extension.
    ext: Arc<ExtShared<E>>,
    /// The slot.
    slot: Arc<Slot>,
    /// The current channel, if any.
    channel: Option<Channel>,
    /// The current channel is open.
    open: bool,
    /// The pairing hook for the extension's name (dropped when blocked).
    hooks: Option<PairRequests>,
    /// Inbound limits (created when the first message or open arrives).
    limiter: Option<RateLimiter>,
    /// Copies of the message streams' senders.
    subscribers: Vec<Subscriber<E::Message>>,
    /// The `subscribers_epoch` the copies are from.
    subscribers_epoch: u64,
}

impl<E: Encoding> SlotTask<E> {
    async fn run(mut self) {
        loop {
            if matches!(self.slot.state(), SlotState::Closed(_) | SlotState::Blocked) {
                break;
            }
            let deadline = self.slot.next_deadline();
            let wakeup = tokio::select! {
                biased;
                () = self.slot.wake.notified() => Wakeup::Poke,
                ev = channel_event(&mut self.channel, self.open) => Wakeup::Channel(ev),
                req = next_request(&mut self.hooks) => Wakeup::Request(req),
                () = sleep_until(deadline) => Wakeup::Timer,
            };
            let flow = match wakeup {
                Wakeup::Poke => Flow::Continue,
                Wakeup::Channel(ChannelEvent::Opened) => {
                    self.open = true;
                    let failures = self.slot.set_open();
                    self.report_failures(failures, Undelivered::Disconnected);
                    Flow::Continue
                }
                Wakeup::Channel(ChannelEvent::Message(m)) => self.inbound_batch(m).await,
                Wakeup::Channel(ChannelEvent::Closed(reason)) => self.closed(reason),
                Wakeup::Request(Some(req)) => self.request(req),
                Wakeup::Request(None) => {
                    debug!("the mux closed");
                    self.finish_disconnected();
                    Flow::Stop
                }
                Wakeup::Timer => {
                    let reason = Undelivered::OpenTimeout(self.ext.limits.pending.timeout);
                    let failures = self.slot.expire(Instant::now(), reason);
                    if failures.unreported > 0 {
                        debug!(messages = failures.unreported, "queued messages timed out");
                    }
                    self.report_failures(failures, reason);
                    Flow::Continue
                }
            };
            if flow == Flow::Stop {
                break;
            }
        }
        trace!("slot task ends");
    }

    fn report_failures(&self, failures: Failures, reason: Undelivered) {
        self.ext.report_failures(failures, reason, &self.slot.peer);
    }

    fn finish_disconnected(&mut self) {
        let failures = self.slot.finish(
            SlotState::Closed(Finish::Disconnected),
            Undelivered::Disconnected,
        );
        self.report_failures(failures, Undelivered::Disconnected);
        let mut slots = lock(&self.ext.slots);
        let session = self.slot.peer.session();
        // Only ours: an owner that numbers sessions itself may have reused the id.
        if slots
            .get(&session)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            slots.remove(&session);
        }
    }

    fn limiter(&mut self, now: Instant) -> &mut RateLimiter {
        let rate = self.ext.limits.rate;
        self.limiter
            .get_or_insert_with(|| RateLimiter::new(rate, now))
    }

    /// The channel closed.
    fn closed(&mut self, reason: Option<CloseReason>) -> Flow {
        self.channel = None;
        self.open = false;
        match reason {
            Some(CloseReason::MuxClosed) => {
                debug!("the mux closed");
                self.finish_disconnected();
                Flow::Stop
            }
            Some(CloseReason::Local) => Flow::Continue, // we closed it: the state says why
            reason => {
                debug!(?reason, "the peer rejected or closed the extension channel");
                self.slot.set_idle();
                Flow::Continue
            }
        }
    }

    /// A remote open that no channel of ours answered.
    fn request(&mut self, req: corenet_mux::PairRequest) -> Flow {
        if !req.key().id().is_empty() {
            debug!(id = ?req.key(), "rejected an open with an id: extensions have none");
            req.reject();
            return Flow::Continue;
        }
        if self.channel.is_some() {
            debug!("rejected a second open of an open extension channel");
            req.reject();
            return Flow::Continue;
        }
        // Opens count against the message bucket: open/close churn is flooding too.
        if let Err(exceeded) = self.limiter(Instant::now()).check(Instant::now(), 0) {
            req.reject();
            self.flooded(exceeded);
            return Flow::Stop;
        }
        match req.accept(&ChannelOptions::new(self.ext.name.clone())) {
            Ok(ch) => {
                debug!("accepted the peer's open");
                self.slot.set_opening(ch.sender());
                self.channel = Some(ch);
                self.open = false;
            }
            Err(e) => debug!(error = %e, "could not answer the peer's open"),
        }
        Flow::Continue
    }

    /// The peer flooded: close, block, report.
    fn flooded(&mut self, exceeded: Exceeded) {
        debug!(?exceeded, "the peer flooded the extension: channel closed");
        let failures = self
            .slot
            .finish(SlotState::Blocked, Undelivered::PeerBlocked);
        self.channel = None;
        self.hooks = None; // the peer's re-opens are rejected from now on
        self.report_failures(failures, Undelivered::PeerBlocked);
        self.ext
            .report(Error::Flooded { exceeded }, &self.slot.peer);
    }

    /// A received message, and up to [`READ_BATCH`] more that are already in the channel's
    /// inbox (one pass through the task's wait per batch, not per message).
    async fn inbound_batch(&mut self, first: corenet_mux::Message) -> Flow {
        // One clock read per batch: the messages in it arrived together.
        let now = Instant::now();
        if self.inbound(now, first).await == Flow::Stop {
            return Flow::Stop;
        }
        for _ in 1..READ_BATCH {
            let Some(ch) = &mut self.channel else {
                break;
            };
            let next = poll_fn(|cx| match ch.poll_recv(cx) {
                Poll::Ready(Some(m)) => Poll::Ready(Some(m)),
                _ => Poll::Ready(None),
            })
            .await;
            let Some(m) = next else {
                break;
            };
            if self.inbound(now, m).await == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// A received message.
    async fn inbound(&mut self, now: Instant, m: corenet_mux::Message) -> Flow {
        let len = m.payload.len();
        if let Err(exceeded) = self.limiter(now).check(now, len) {
            self.flooded(exceeded);
            return Flow::Stop;
        }
        if m.message_type != MESSAGE_TYPE {
            trace!(
                message_type = m.message_type,
                "ignored a message of an unknown type"
            );
            return Flow::Continue;
        }
        trace!(len, "extension message received");
        let ext = self.ext.clone();
        let slot = self.slot.clone();
        let peer = &slot.peer;
        let max = ext.limits.max_message_size;
        if len > max {
            debug!(len, max, "dropped an oversized extension message");
            ext.report(Error::MessageTooLarge { len, max }, peer);
            return Flow::Continue;
        }
        self.refresh_subscribers();
        let decode = || {
            ext.encoding.decode(&m.payload).map_err(|source| {
                debug!(error = %source, "an extension message did not decode");
                ext.report(
                    Error::Decode {
                        encoding: ext.encoding.name(),
                        source,
                    },
                    peer,
                );
            })
        };
        if let Some(handler) = &ext.on_message {
            let Ok(v) = decode() else {
                return Flow::Continue;
            };
            guarded("on_message", || handler(v, peer));
        } else if self.subscribers.is_empty() {
            // Nobody takes it; still tell a bad message from a good one.
            let _ = decode();
            return Flow::Continue;
        }
        let mut waited = false;
        let mut i = 0;
        while i < self.subscribers.len() {
            let Ok(value) = decode() else {
                return Flow::Continue;
            };
            match deliver(
                &self.subscribers[i],
                (value, peer.clone()),
                &slot,
                &mut waited,
            )
            .await
            {
                Delivery::Sent => i += 1,
                Delivery::Gone => {
                    self.subscribers.swap_remove(i);
                    lock(&ext.subscribers).retain(|s| !s.tx.is_closed());
                    ext.subscribers_epoch.fetch_add(1, Ordering::AcqRel);
                }
                Delivery::Stopped => return Flow::Stop,
            }
        }
        if waited {
            // We held the peer back, not the other way round.
            let now = Instant::now();
            self.limiter(now).fill(now);
        }
        Flow::Continue
    }

    fn refresh_subscribers(&mut self) {
        let epoch = self.ext.subscribers_epoch.load(Ordering::Acquire);
        if epoch != self.subscribers_epoch {
            self.subscribers = lock(&self.ext.subscribers).clone();
            self.subscribers_epoch = epoch;
        }
    }
}

/// How a delivery to a stream went.
enum Delivery {
    /// Delivered.
    Sent,
    /// The stream is gone.
    Gone,
    /// The slot finished while waiting.
    Stopped,
}

/// The receiving end of a message stream.
type Inbox<M> = mpsc::Receiver<(M, Peer)>;

/// A message stream.
struct Subscriber<M> {
    /// Its queue.
    tx: mpsc::Sender<(M, Peer)>,
    /// Someone reads it. The stream created at registration is unclaimed until the first
    /// [`Extension::messages`] call; while unclaimed, a full stream drops new messages
    /// rather than holding the peer back for a reader that may never come.
    claimed: Arc<AtomicBool>,
}

impl<M> Clone for Subscriber<M> {
    fn clone(&self) -> Self {
        Subscriber {
            tx: self.tx.clone(),
            claimed: self.claimed.clone(),
        }
    }
}

/// Hands a message to a stream, waiting for room (but not past the slot's end).
async fn deliver<M>(
    sub: &Subscriber<M>,
    item: (M, Peer),
    slot: &Slot,
    waited: &mut bool,
) -> Delivery {
    let tx = &sub.tx;
    let item = match tx.try_send(item) {
        Ok(()) => return Delivery::Sent,
        Err(mpsc::error::TrySendError::Closed(_)) => return Delivery::Gone,
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    if !sub.claimed.load(Ordering::Acquire) {
        debug!("dropped a message: nobody took the extension's message stream yet");
        return Delivery::Sent;
    }
    *waited = true;
    trace!("a message stream is full: waiting for its reader");
    let finished = async {
        loop {
            let poke = slot.wake.notified();
            if matches!(slot.state(), SlotState::Closed(_) | SlotState::Blocked) {
                return;
            }
            poke.await;
        }
    };
    tokio::select! {
        biased;
        () = finished => Delivery::Stopped,
        permit = tx.reserve() => match permit {
            Ok(p) => {
                p.send(item);
                Delivery::Sent
            }
            Err(_) => Delivery::Gone,
        },
    }
}

/// A registered extension: send to one peer, broadcast, receive, destroy. Cloneable and
/// `Send + Sync`; every clone is the same registration.
///
/// It stays registered until [`Extension::destroy`] (or until the bus closes), whether or
/// not handles remain, as in JS: handlers keep running without one.
pub struct Extension<E: Encoding> {
    /// Shared state.
    shared: Arc<ExtShared<E>>,
    /// The bus (to unregister).
    bus: Addr<ExtensionBus>,
}

impl<E: Encoding> Clone for Extension<E> {
    fn clone(&self) -> Self {
        Extension {
            shared: self.shared.clone(),
            bus: self.bus.clone(),
        }
    }
}

impl<E: Encoding> fmt::Debug for Extension<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extension")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<E: Encoding> Extension<E> {
    pub(crate) fn new(shared: Arc<ExtShared<E>>, bus: Addr<ExtensionBus>) -> Self {
        Extension { shared, bus }
    }

    /// The extension's name (its protomux protocol).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The encoding.
    pub fn encoding(&self) -> &E {
        &self.shared.encoding
    }

    /// Sends `message` to `peer` without waiting (like JS `ext.send`). On an open channel it
    /// goes straight to the connection; while the channel is not open yet (just connected,
    /// or the peer has not registered the extension yet) it waits in a bounded queue and goes
    /// out, in order, as soon as the peer opens its side. If that does not happen within the
    /// open timeout, or the connection closes first, `on_error` receives
    /// [`Error::Undelivered`].
    ///
    /// Fails at once when the message is too large, does not encode, the queue is full, the
    /// peer is unknown or was cut off, or the extension was destroyed.
    pub fn send(&self, message: &E::Input, peer: &Peer) -> Result<(), Error> {
        let payload = self.shared.encode(message)?;
        self.shared.slot(peer.session())?.send(payload, None)
    }

    /// Sends `message` to `peer` and waits until it was handed to the connection: at once
    /// (with backpressure: it waits while the connection's send buffer is full) on an open
    /// channel, or when the peer opens its side. Fails with [`Error::Undelivered`] when the
    /// channel does not open within the open timeout or the connection closes first.
    pub async fn send_when_open(&self, message: &E::Input, peer: &Peer) -> Result<(), Error> {
        let payload = self.shared.encode(message)?;
        let slot = self.shared.slot(peer.session())?;
        let sender = {
            let inner = lock(&slot.inner);
            match (inner.state, &inner.sender) {
                (SlotState::Open, Some(s)) => Some(s.clone()),
                _ => None,
            }
        };
        if let Some(sender) = sender {
            match sender.send(MESSAGE_TYPE, &payload).await {
                Ok(()) => return Ok(()),
                Err(corenet_mux::Error::ChannelClosed) => {} // queue it below
                Err(e) => return Err(e.into()),
            }
        }
        let (tx, rx) = oneshot::channel();
        slot.send(payload, Some(tx))?;
        rx.await.unwrap_or(Err(Error::Disconnected))
    }

    /// Sends `message` to every peer whose channel is open, and queues it for peers whose
    /// channel is still opening (so a broadcast right after a connection is not lost); peers
    /// that rejected or closed the extension are skipped. Returns how many peers that was.
    /// Per-peer failures (a full queue) go to `on_error`.
    pub fn broadcast(&self, message: &E::Input) -> Result<usize, Error> {
        let payload = self.shared.encode(message)?;
        self.shared.broadcast_payload(payload)
    }

    /// A stream of the messages received, with their senders: from now on, except for the
    /// first call on an extension registered without an `on_message` handler, whose stream
    /// starts at the registration (so that messages from peers whose channels opened before
    /// this call are not missed; until this call, that stream keeps at most its buffer's
    /// worth and drops what does not fit).
    ///
    /// Each stream buffers up to the configured number of messages; while one is full the
    /// bus waits for its reader (holding that peer's channel back, see
    /// [`ExtensionOptions`]). Dropping the stream unsubscribes; the stream ends when the
    /// extension is destroyed.
    pub fn messages(&self) -> Messages<E> {
        if let Some(rx) = lock(&self.shared.unclaimed).take() {
            for s in lock(&self.shared.subscribers).iter() {
                s.claimed.store(true, Ordering::Release);
            }
            return Messages { rx };
        }
        let (tx, rx) = mpsc::channel(self.shared.limits.stream_buffer);
        if !self.shared.is_destroyed() {
            lock(&self.shared.subscribers).push(Subscriber {
                tx,
                claimed: Arc::new(AtomicBool::new(true)),
            });
            self.shared.subscribers_epoch.fetch_add(1, Ordering::AcqRel);
            // Destroyed meanwhile: make sure the stream ends.
            if self.shared.is_destroyed() {
                lock(&self.shared.subscribers).clear();
            }
        }
        Messages { rx }
    }

    /// The peers whose channel for this extension is open.
    pub fn peers(&self) -> Vec<Peer> {
        lock(&self.shared.slots)
            .values()
            .filter(|s| s.state() == SlotState::Open)
            .map(|s| s.peer.clone())
            .collect()
    }

    /// True when `peer`'s channel for this extension is open (the peer runs it).
    pub fn is_open(&self, peer: &Peer) -> bool {
        self.shared
            .slot(peer.session())
            .is_ok_and(|s| s.state() == SlotState::Open)
    }

    /// Waits until `peer`'s channel is open. Fails when the peer is unknown or cut off, the
    /// connection closes, or the extension is destroyed. Bound the wait with a timeout.
    pub async fn opened(&self, peer: &Peer) -> Result<(), Error> {
        let slot = self.shared.slot(peer.session())?;
        loop {
            let changed = slot.changed.notified();
            match slot.state() {
                SlotState::Open => return Ok(()),
                SlotState::Opening | SlotState::Idle => {}
                SlotState::Blocked => return Err(Error::PeerBlocked),
                SlotState::Closed(Finish::Disconnected) => return Err(Error::Disconnected),
                SlotState::Closed(Finish::Destroyed) => return Err(Error::Destroyed),
            }
            changed.await;
        }
    }

    /// Unregisters the extension: closes its channel on every connection (the `close`
    /// frames are queued before this returns), rejects the peers' future opens, fails queued
    /// messages (without calling `on_error`), ends the message streams. Later calls fail
    /// with [`Error::Destroyed`].
    pub async fn destroy(&self) {
        let _ = self
            .bus
            .send(Unregister {
                name: self.shared.name.clone(),
                id: self.shared.id,
            })
            .await;
        // The bus may be gone already.
        self.shared.destroy();
    }

    /// True once destroyed.
    pub fn is_destroyed(&self) -> bool {
        self.shared.is_destroyed()
    }
}

/// The messages of an extension, with their senders (see [`Extension::messages`]).
pub struct Messages<E: Encoding> {
    /// The stream's queue.
    rx: Inbox<E::Message>,
}

impl<E: Encoding> fmt::Debug for Messages<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Messages")
            .field("buffered", &self.rx.len())
            .finish()
    }
}

impl<E: Encoding> Messages<E> {
    /// The next message; `None` once the extension is destroyed.
    pub async fn recv(&mut self) -> Option<(E::Message, Peer)> {
        self.rx.recv().await
    }

    /// A message if one is buffered.
    pub fn try_recv(&mut self) -> Option<(E::Message, Peer)> {
        self.rx.try_recv().ok()
    }
}

impl<E: Encoding> Stream for Messages<E> {
    type Item = (E::Message, Peer);
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}
