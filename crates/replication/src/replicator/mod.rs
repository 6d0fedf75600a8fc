//! The replicator: hypercore replication over protomux channels (hypercore
//! `lib/replicator.js`), wire-compatible with JS hypercore 11.
//!
//! Each core replicated over a connection gets one `hypercore/alpha` channel (alias
//! `hypercore`) whose id is the core's discovery key. The channel handshake carries a
//! capability, `BLAKE2b-256(key = handshake hash, REPLICATE_{INITIATOR|RESPONDER} || core
//! key)` ([`crate::caps::replication_capability`]): a peer that knows only the discovery key
//! cannot produce it, and its channel is closed before anything is exchanged (JS destroys
//! the whole stream instead; closing the channel leaks as little and keeps the other cores of
//! the connection running). Then the ten message types of [`crate::messages::Message`] flow
//! as in JS: `sync` heads, `range`/`bitfield` announcements, `want`s, `request`s answered by
//! `data` (a proof, verified and stored atomically) or `noData`, `cancel`s.
//!
//! # Architecture
//! - `protocol`: the sans-IO state machine (what to request from whom, what to announce);
//!   no I/O, no clock. One per core, shared by its peers.
//! - this module: the shell. A core's `Replicator` holds the protocol behind a mutex
//!   together with the peers' channel senders; after every input it sends what the protocol
//!   queued. The core calls it after every change (appends, verified proofs, truncations) so
//!   that peers hear about new blocks and lengths at once.
//! - `peer`: two tasks per channel. The reader decodes messages in arrival order and feeds
//!   them to the protocol; runs of `data` messages that are already buffered are verified and
//!   stored in one [`crate::Hypercore::verify_and_apply_many`] call (one storage commit, one
//!   `fdatasync` on disk). The uploader answers the remote's requests from a bounded queue
//!   ([`ReplicatorConfig::with_max_remote_requests`]); it is the only task that waits for the
//!   connection to take data, so reading never blocks on writing and two peers that both
//!   upload cannot deadlock.
//! - A peer whose proof fails verification is disconnected (its channel closed) and nothing
//!   of the proof is stored; JS pauses such a peer instead (no more requests) and keeps the
//!   channel. A message that does not decode also closes the channel (JS destroys the
//!   stream).
//!
//! A writer that truncates moves its core to a higher fork; peers follow it as JS does: they
//! fetch the new signed tree, narrow down the prefix it shares with theirs with `hash`
//! proofs, drop the blocks after it and switch (`Hypercore::verify_reorg`,
//! `update_reorg`, `apply_reorg`).
//!
//! Not implemented (JS has them): pushing unrequested data (`allowPush`), hypercore extension
//! messages (type 9 is decoded and ignored; corenet's extensions run on channels of their
//! own), seeks (we answer `seek` requests but never send them), and JS's hotswap of slow
//! requests to faster peers (a request stays with its peer until answered or the peer
//! leaves).

mod peer;
pub(crate) mod protocol;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use corenet_codec::PublicKey;
use corenet_mux::{ChannelOptions, ChannelSender, MuxHandle};
use tokio::sync::{oneshot, watch};

use crate::core::{Event, Hypercore, ReorgBatch};
use crate::error::{Error, StorageError};
use crate::messages::Handshake;
use protocol::{LocalView, PeerId, ProtoEvent, Protocol, ProtocolConfig};

pub(crate) use peer::Uploads;

/// The protomux protocol name of hypercore replication.
pub const PROTOCOL: &str = "hypercore/alpha";
/// The alias a remote may open the channel under.
pub const PROTOCOL_ALIAS: &str = "hypercore";

/// Default limit of requests in flight per peer.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// Default block bytes in flight per peer.
pub const DEFAULT_MAX_INFLIGHT_BYTES: u64 = 8 * 1024 * 1024;
/// Default remote requests queued per peer before the peer counts as flooding.
pub const DEFAULT_MAX_REMOTE_REQUESTS: usize = 2048;
/// Invalid requests (remote faults such as an upgrade beyond our length) a peer may send: the
/// first `MAX_INVALID_REQUESTS - 1` are answered `noData(INVALID_REQUEST)`, and the channel is
/// closed at this one (JS `MAX_INVALID_REQUESTS`).
pub const MAX_INVALID_REQUESTS: u32 = 64;

/// Settings of a core's replicator. Every setter states its default.
#[derive(Debug, Clone, Copy)]
pub struct ReplicatorConfig {
    /// Requests in flight per peer, at most.
    max_inflight: usize,
    /// Block bytes in flight per peer.
    max_inflight_bytes: u64,
    /// Remote requests queued per peer.
    max_remote_requests: usize,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig {
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
            max_remote_requests: DEFAULT_MAX_REMOTE_REQUESTS,
        }
    }
}

impl ReplicatorConfig {
    /// The most requests we keep in flight per peer (JS: 16 to 512 depending on the round
    /// trip time; 48 over TCP). The limit actually used is [`Self::with_max_inflight_bytes`]
    /// over the core's average block size, between 16 and this. Default:
    /// [`DEFAULT_MAX_INFLIGHT`] (1,024). Keep it below the remote's request queue (JS has no
    /// limit; corenet's is [`Self::with_max_remote_requests`]).
    pub fn with_max_inflight(mut self, n: usize) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    /// Block bytes we keep in flight per peer. More keep a fast link busy and make bigger
    /// storage batches (one `fdatasync` each on disk); fewer put an explicit `fetch` ahead
    /// of a bulk download sooner. Default: [`DEFAULT_MAX_INFLIGHT_BYTES`] (8 MiB: 128 blocks
    /// of 64 KiB, 1,024 of 4 KiB).
    pub fn with_max_inflight_bytes(mut self, bytes: u64) -> Self {
        self.max_inflight_bytes = bytes.max(1);
        self
    }

    /// Remote requests we queue per peer while answering them in order. A peer with more
    /// requests outstanding is flooding (JS peers stop at 512): its channel is closed.
    /// Default: [`DEFAULT_MAX_REMOTE_REQUESTS`] (2,048).
    pub fn with_max_remote_requests(mut self, n: usize) -> Self {
        self.max_remote_requests = n.max(1);
        self
    }

    pub(crate) fn max_remote_requests(&self) -> usize {
        self.max_remote_requests
    }

    fn protocol(&self) -> ProtocolConfig {
        ProtocolConfig {
            max_inflight: self.max_inflight,
            max_inflight_bytes: self.max_inflight_bytes,
        }
    }
}

/// Progress of a [`Download`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DownloadProgress {
    /// Blocks of the range stored locally.
    pub blocks: u64,
    /// Blocks in the range; for an open-ended range, up to the core's current length.
    pub total: u64,
    /// Every block of a bounded range is stored.
    pub complete: bool,
}

/// A peer replicating a core, as [`Hypercore::peers`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The remote's static key (the connection's identity).
    pub remote_public_key: PublicKey,
    /// The length the remote announced.
    pub remote_length: u64,
    /// The remote's fork.
    pub remote_fork: u64,
    /// The remote holds every block below this.
    pub remote_contiguous_length: u64,
    /// Our requests in flight to it.
    pub inflight: usize,
    /// Blocks downloaded from it.
    pub downloaded_blocks: u64,
    /// Block bytes downloaded from it.
    pub downloaded_bytes: u64,
    /// Blocks uploaded to it.
    pub uploaded_blocks: u64,
    /// Block bytes uploaded to it.
    pub uploaded_bytes: u64,
}

/// Failures to store verified proofs, numbered from 1, with the last one.
type StorageFaults = (u64, Option<Arc<StorageError>>);

/// A running `download` of a range of blocks ([`Hypercore::download`]). The blocks are
/// fetched from every peer that has them, and kept. Dropping it stops asking for the blocks
/// that are not in flight yet.
#[derive(Debug)]
pub struct Download {
    core: Hypercore,
    id: u64,
    progress: watch::Receiver<DownloadProgress>,
    /// The core's storage failures: one after `faults_before` ends the download, since
    /// asking again would fail the same way (a full disk); the peers whose answers failed
    /// are not asked again until a new download (or want) starts.
    faults: watch::Receiver<StorageFaults>,
    /// Failures that happened before this download started.
    faults_before: u64,
}

impl Download {
    /// Progress so far; the receiver sees every change (`changed().await`).
    pub fn progress(&self) -> watch::Receiver<DownloadProgress> {
        self.progress.clone()
    }

    /// True once every block of a bounded range is stored.
    pub fn is_complete(&self) -> bool {
        self.progress.borrow().complete
    }

    /// Waits until every block of the range is stored. An open-ended range never
    /// completes: this waits until the core is dropped. Fails with [`Error::Storage`] when
    /// storing a downloaded block failed after the download started (a full disk is
    /// [`std::io::ErrorKind::StorageFull`]); what was stored before stays.
    pub async fn done(&mut self) -> Result<(), Error> {
        let mut faults_open = true;
        loop {
            if self.progress.borrow_and_update().complete {
                return Ok(());
            }
            if let Some(e) = self.storage_failure() {
                return Err(Error::Storage(e));
            }
            tokio::select! {
                changed = self.progress.changed() => if changed.is_err() {
                    return Err(Error::Closed);
                },
                changed = self.faults.changed(), if faults_open => {
                    faults_open = changed.is_ok();
                }
            }
        }
    }

    /// The storage failure that ends this download, if one happened.
    fn storage_failure(&mut self) -> Option<StorageError> {
        match &*self.faults.borrow_and_update() {
            (n, Some(e)) if *n > self.faults_before => Some(e.duplicate()),
            _ => None,
        }
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        let repl = self.core.replicator();
        let mut inner = repl.lock();
        inner.proto.remove_range(self.id);
        inner.downloads.remove(&self.id);
    }
}

/// Removes a block want when the waiting `fetch` finishes or is dropped.
#[derive(Debug)]
pub(crate) struct WantGuard<'a> {
    core: &'a Hypercore,
    index: u64,
}

impl Drop for WantGuard<'_> {
    fn drop(&mut self) {
        let repl = self.core.replicator();
        let mut inner = repl.lock();
        inner.proto.remove_want(self.index);
        inner.send_queued();
    }
}

/// Removes an update waiter when `update` finishes or is dropped.
#[derive(Debug)]
pub(crate) struct UpdateGuard<'a> {
    core: &'a Hypercore,
    id: u64,
}

impl Drop for UpdateGuard<'_> {
    fn drop(&mut self) {
        let repl = self.core.replicator();
        let mut inner = repl.lock();
        inner.proto.remove_update_waiter(self.id);
        inner.update_waiters.remove(&self.id);
    }
}

/// What the shell keeps per peer.
#[derive(Debug)]
struct PeerLink {
    sender: ChannelSender,
    remote_public_key: PublicKey,
    uploads: Arc<Uploads>,
}

#[derive(Debug)]
struct Inner {
    proto: Protocol,
    config: ReplicatorConfig,
    peers: HashMap<PeerId, PeerLink>,
    /// Connections (by handshake hash) this core is attached to.
    attached: HashSet<[u8; 64]>,
    update_waiters: HashMap<u64, oneshot::Sender<bool>>,
    downloads: HashMap<u64, watch::Sender<DownloadProgress>>,
    /// Failures to store verified proofs, for the downloads to end with.
    faults: watch::Sender<StorageFaults>,
    /// The reorg being narrowed down, by fork.
    reorg: Option<(u64, ReorgBatch)>,
}

impl Inner {
    /// Sends what the protocol queued (to peers still connected; a send that fails means
    /// the channel is closing, and its reader cleans up).
    fn send_queued(&mut self) {
        while let Some(t) = self.proto.poll_transmit() {
            if let Some(link) = self.peers.get(&t.peer) {
                let ty = t.message.message_type();
                if let Err(e) = link.sender.send_encoded_now(ty, &t.message) {
                    tracing::trace!(peer = t.peer.0, error = %e, "send failed");
                }
            }
        }
    }

    /// Sends what the protocol queued and carries out its events.
    fn flush(&mut self, view: &dyn LocalView) {
        self.send_queued();
        let mut ranges_seen: Vec<u64> = Vec::new();
        while let Some(e) = self.proto.poll_event() {
            match e {
                ProtoEvent::ClosePeer(p) => {
                    if let Some(link) = self.peers.get(&p) {
                        tracing::debug!(peer = p.0, "closing the channel of a misbehaving peer");
                        link.sender.close();
                        link.uploads.close();
                    }
                }
                ProtoEvent::UpdateDone { waiter, upgraded } => {
                    if let Some(tx) = self.update_waiters.remove(&waiter) {
                        let _ = tx.send(upgraded);
                    }
                }
                ProtoEvent::RangeUpdated(id) => {
                    // Once per range per flush: the progress is read, not carried.
                    if ranges_seen.contains(&id) {
                        continue;
                    }
                    ranges_seen.push(id);
                    if let (Some(tx), Some(p)) =
                        (self.downloads.get(&id), self.proto.range_progress(view, id))
                    {
                        tx.send_replace(DownloadProgress {
                            blocks: p.done,
                            total: p.total,
                            complete: p.complete,
                        });
                    }
                }
            }
        }
        self.send_queued();
    }
}

/// A core's replicator (see the [module docs](self)). Every [`Hypercore`] has one.
#[derive(Debug)]
pub(crate) struct Replicator {
    inner: Mutex<Inner>,
}

impl Replicator {
    pub(crate) fn new(config: ReplicatorConfig) -> Self {
        Replicator {
            inner: Mutex::new(Inner {
                proto: Protocol::new(config.protocol()),
                config,
                peers: HashMap::new(),
                attached: HashSet::new(),
                update_waiters: HashMap::new(),
                downloads: HashMap::new(),
                faults: watch::channel((0, None)).0,
                reorg: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn config(&self) -> ReplicatorConfig {
        self.lock().config
    }

    /// Storing a verified proof failed: the running downloads end with `e`.
    pub(crate) fn storage_failed(&self, e: &StorageError) {
        let e = Arc::new(e.duplicate());
        self.lock()
            .faults
            .send_modify(|(n, last)| (*n, *last) = (*n + 1, Some(e)));
    }

    pub(crate) fn set_config(&self, config: ReplicatorConfig) {
        let mut inner = self.lock();
        inner.config = config;
        inner.proto.set_config(config.protocol());
    }

    /// Runs `f` on the protocol with a view of the core, then sends what it queued. Lock
    /// order: replicator, then core, then mux. Never called with the core locked.
    pub(crate) fn with<R>(
        &self,
        core: &Hypercore,
        f: impl FnOnce(&mut Protocol, &dyn LocalView) -> R,
    ) -> R {
        let mut inner = self.lock();
        core.with_view(|view| {
            let r = f(&mut inner.proto, view);
            inner.flush(view);
            r
        })
    }

    /// The core changed (called by the core after each change, outside its lock).
    pub(crate) fn on_core_events(&self, core: &Hypercore, events: &[Event]) {
        let mut inner = self.lock();
        if inner.peers.is_empty() && inner.downloads.is_empty() && inner.update_waiters.is_empty() {
            return;
        }
        core.with_view(|view| {
            let mut grew = false;
            let mut truncated: Option<u64> = None;
            // Adjacent blocks (a batch of verified proofs) are announced as one run.
            let mut run: Option<(u64, u64)> = None;
            for e in events {
                match e {
                    Event::Have { start, length } => match &mut run {
                        Some((s, l)) if *s + *l == *start => *l += *length,
                        _ => {
                            if let Some((s, l)) = run.replace((*start, *length)) {
                                inner.proto.on_have(view, s, l);
                            }
                        }
                    },
                    Event::Upgraded { .. } => grew = true,
                    Event::Truncated { ancestors, .. } => {
                        truncated = Some(truncated.map_or(*ancestors, |a| a.min(*ancestors)));
                    }
                    _ => {}
                }
            }
            if let Some((s, l)) = run {
                inner.proto.on_have(view, s, l);
            }
            if grew || truncated.is_some() {
                inner.proto.on_length_changed(view, truncated);
            }
            inner.flush(view);
        });
    }

    /// A proof from a peer on a higher fork (JS `_onreorgdata`): its tree starts a reorg,
    /// `hash` proofs narrow the shared prefix down; once known, the core switches to the
    /// new fork (dropping the blocks after the shared prefix).
    pub(crate) fn reorg_step(&self, core: &Hypercore, proof: &crate::Proof) -> Result<(), Error> {
        let fork = proof.fork;
        let existing = match self.lock().reorg.take() {
            Some((f, b)) if f == fork => Some(b),
            _ => None,
        };
        let batch = match existing {
            Some(mut b) => match core.update_reorg(&mut b, proof) {
                Ok(()) => b,
                Err(e) => {
                    self.lock().reorg = Some((fork, b));
                    return Err(e);
                }
            },
            // A node proof for a batch we no longer have: ask again.
            None if proof.upgrade.is_none() => return Err(Error::Stale),
            None => core.verify_reorg(proof)?,
        };
        if batch.is_finished() {
            tracing::debug!(
                fork,
                ancestors = batch.ancestors(),
                length = batch.length(),
                "switching to a newer fork"
            );
            let r = core.apply_reorg(batch);
            self.with(core, |p, v| p.reorg_done(v, fork));
            r
        } else {
            let want = batch.want();
            self.lock().reorg = Some((fork, batch));
            self.with(core, |p, v| p.reorg_progress(v, fork, want));
            Ok(())
        }
    }

    // ----- peers -------------------------------------------------------------------------

    pub(crate) fn add_peer(
        &self,
        core: &Hypercore,
        sender: ChannelSender,
        remote_public_key: PublicKey,
        uploads: Arc<Uploads>,
    ) -> PeerId {
        let mut inner = self.lock();
        core.with_view(|view| {
            // The link must exist before the protocol queues the opening messages.
            let id = inner.proto.next_peer_id();
            inner.peers.insert(
                id,
                PeerLink {
                    sender,
                    remote_public_key,
                    uploads,
                },
            );
            let added = inner.proto.add_peer(view);
            debug_assert_eq!(added, id);
            inner.flush(view);
            id
        })
    }

    pub(crate) fn remove_peer(&self, core: &Hypercore, p: PeerId) {
        let mut inner = self.lock();
        inner.peers.remove(&p);
        core.with_view(|view| {
            inner.proto.remove_peer(view, p);
            inner.flush(view);
        });
    }

    pub(crate) fn peer_opening(&self) {
        self.lock().proto.peer_opening();
    }

    pub(crate) fn peer_open_failed(&self, core: &Hypercore) {
        self.with(core, |proto, view| proto.peer_open_failed(view));
    }

    pub(crate) fn is_active(&self, p: PeerId) -> bool {
        self.lock().proto.is_active(p)
    }

    pub(crate) fn max_remote_requests(&self) -> usize {
        self.lock().config.max_remote_requests()
    }

    pub(crate) fn peers(&self) -> Vec<PeerInfo> {
        let inner = self.lock();
        let mut out = Vec::new();
        for p in inner.proto.peer_ids() {
            let (Some(s), Some(link)) = (inner.proto.peer_stats(p), inner.peers.get(&p)) else {
                continue;
            };
            let (uploaded_blocks, uploaded_bytes) = link.uploads.uploaded();
            out.push(PeerInfo {
                remote_public_key: link.remote_public_key,
                remote_length: s.remote_length,
                remote_fork: s.remote_fork,
                remote_contiguous_length: s.remote_contiguous,
                inflight: s.inflight,
                downloaded_blocks: s.downloaded_blocks,
                downloaded_bytes: s.downloaded_bytes,
                uploaded_blocks,
                uploaded_bytes,
            });
        }
        out
    }

    // ----- attaching to connections ------------------------------------------------------

    /// Replicates `core` over `mux` (JS `replicator.attachTo`): opens our channel and
    /// answers the remote's opens of it (also later ones, after a close). Idempotent per
    /// connection.
    pub(crate) fn attach(
        &self,
        core: &Hypercore,
        mux: &MuxHandle,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), Error> {
        let conn = mux.stream_info().handshake_hash;
        if !self.lock().attached.insert(conn) {
            return Ok(());
        }
        let dk = core.discovery_key();
        let hook = mux.pair(PROTOCOL, Some(dk.as_bytes()));
        rt.spawn(peer::answer_opens(
            core.clone(),
            mux.clone(),
            hook,
            conn,
            rt.clone(),
        ));
        open_channel(core, mux, rt)
    }

    pub(crate) fn detached(&self, conn: &[u8; 64]) {
        self.lock().attached.remove(conn);
    }

    // ----- what the user wants -----------------------------------------------------------

    pub(crate) fn want<'a>(&self, core: &'a Hypercore, index: u64) -> WantGuard<'a> {
        self.with(core, |proto, view| proto.add_want(view, index));
        WantGuard { core, index }
    }

    pub(crate) fn update_waiter<'a>(
        &self,
        core: &'a Hypercore,
    ) -> (UpdateGuard<'a>, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let id = core.with_view(|view| {
            let id = inner.proto.next_waiter_id();
            inner.update_waiters.insert(id, tx);
            let added = inner.proto.add_update_waiter(view);
            debug_assert_eq!(added, id);
            inner.flush(view);
            id
        });
        (UpdateGuard { core, id }, rx)
    }

    pub(crate) fn download(&self, core: &Hypercore, start: u64, end: Option<u64>) -> Download {
        let (tx, rx) = watch::channel(DownloadProgress::default());
        let mut inner = self.lock();
        let id = core.with_view(|view| {
            let id = inner.proto.next_range_id();
            inner.downloads.insert(id, tx);
            let added = inner.proto.add_range(view, start, end);
            debug_assert_eq!(added, id);
            inner.flush(view);
            id
        });
        let faults = inner.faults.subscribe();
        let faults_before = faults.borrow().0;
        Download {
            core: core.clone(),
            id,
            progress: rx,
            faults,
            faults_before,
        }
    }
}

/// The channel options of `core` on a connection: protocol, alias, id and the handshake
/// with our capability.
pub(crate) fn channel_options(core: &Hypercore, mux: &MuxHandle) -> ChannelOptions {
    let info = mux.stream_info();
    let capability = crate::caps::replication_capability(
        info.is_initiator,
        core.key().as_bytes(),
        &info.handshake_hash,
    );
    ChannelOptions::new(PROTOCOL)
        .with_id(bytes::Bytes::copy_from_slice(
            core.discovery_key().as_bytes(),
        ))
        .with_aliases([PROTOCOL_ALIAS])
        .with_handshake_encoded(&Handshake {
            seeks: true,
            capability,
        })
}

/// Opens our channel for `core` unless one is open or opening (JS `_makePeer`).
pub(crate) fn open_channel(
    core: &Hypercore,
    mux: &MuxHandle,
    rt: &tokio::runtime::Handle,
) -> Result<(), Error> {
    if mux.is_opened(PROTOCOL, core.discovery_key().as_bytes()) {
        return Ok(());
    }
    match mux.open(&channel_options(core, mux)) {
        Ok(channel) => {
            core.replicator().peer_opening();
            rt.spawn(peer::run(core.clone(), channel, *mux.stream_info()));
            Ok(())
        }
        Err(corenet_mux::Error::AlreadyOpen { .. }) => Ok(()),
        Err(e) => Err(Error::Mux(e)),
    }
}

/// Replication: these methods need a tokio runtime (they spawn the channel tasks).
impl Hypercore {
    /// Replicates the core over a connection's mux (JS `core.replicate(stream)`): opens its
    /// `hypercore/alpha` channel, and answers the remote's opens of it, for as long as the
    /// connection lives. Calling it again for the same connection does nothing. Must be
    /// called within a tokio runtime. To replicate every core of a store (and the ones the
    /// remote asks for), use [`crate::Corestore::replicate`].
    pub fn replicate(&self, mux: &MuxHandle) -> Result<(), Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidArgument("replicate must be called within a tokio runtime")
        })?;
        self.replicator().attach(self, mux, &rt)
    }

    /// Block `index`: from storage if present, else downloaded from a peer that has it
    /// (JS `core.get(index)`), waiting for one if need be. The request is cancelled when the
    /// future is dropped (bound the wait with `tokio::time::timeout`).
    ///
    /// A block beyond the current length is fetched together with the upgrade that proves
    /// it, from a peer whose tree is long enough.
    pub async fn fetch(&self, index: u64) -> Result<bytes::Bytes, Error> {
        if let Some(b) = self.get(index)? {
            return Ok(b);
        }
        if index >= crate::MAX_LENGTH {
            return Err(Error::InvalidArgument("block index out of range"));
        }
        let mut status = self.status();
        let _want = self.replicator().want(self, index);
        loop {
            if let Some(b) = self.get(index)? {
                return Ok(b);
            }
            if status.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Downloads the blocks of `range` from the peers (JS `core.download({ start, end })`):
    /// the returned [`Download`] reports progress and completes once every block is stored.
    /// An open-ended range (`start..`) keeps downloading new blocks as the core grows.
    /// Dropping the handle stops the download.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), corenet_replication::Error> {
    /// use corenet_replication::Hypercore;
    /// let core = Hypercore::in_memory(corenet_noise::KeyPair::generate())?;
    /// core.append([&b"a"[..], &b"b"[..]])?;
    /// // Everything is local already: the download is complete at once.
    /// let mut d = core.download(0..2);
    /// d.done().await?;
    /// assert_eq!(d.progress().borrow().blocks, 2);
    /// # Ok(()) }
    /// ```
    pub fn download(&self, range: impl std::ops::RangeBounds<u64>) -> Download {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e.saturating_add(1)),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        let end = end.map(|e| e.max(start).min(crate::MAX_LENGTH));
        self.replicator().download(self, start, end)
    }

    /// Asks the peers for a longer tree (JS `core.update()`): `true` once the core grew,
    /// `false` when the peers that were asked (up to three, once they all announced their
    /// length) have nothing newer, or when there are no peers. A writable core does not
    /// look for updates (`false`). To wait for a length instead, use
    /// [`Hypercore::wait_for_length`].
    pub async fn update(&self) -> Result<bool, Error> {
        if self.is_writable() {
            return Ok(false);
        }
        let (_guard, rx) = self.replicator().update_waiter(self);
        Ok(rx.await.unwrap_or(false))
    }

    /// Waits until the core has at least `length` blocks (appended locally or learnt from
    /// peers, which announce every append). Bound the wait with `tokio::time::timeout`.
    pub async fn wait_for_length(&self, length: u64) -> Result<u64, Error> {
        let mut status = self.status();
        loop {
            let now = status.borrow_and_update().length;
            if now >= length {
                return Ok(now);
            }
            if status.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// The peers replicating this core, with their announced heads and transfer counts.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.replicator().peers()
    }

    /// The replicator's settings.
    pub fn replicator_config(&self) -> ReplicatorConfig {
        self.replicator().config()
    }

    /// Changes the replicator's settings (they apply to requests made from now on).
    pub fn set_replicator_config(&self, config: ReplicatorConfig) {
        self.replicator().set_config(config);
    }
}
