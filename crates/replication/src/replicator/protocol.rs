//! The replicator's protocol state machine: what to send to which peer, and when (hypercore
//! `lib/replicator.js`, `Replicator` and `Peer`). Sans-IO: it never touches a socket, a clock
//! or storage; it reads the local core through [`LocalView`] and queues [`Transmit`]s and
//! [`ProtoEvent`]s for the async shell ([`super`]) to carry out. Proof creation and
//! verification happen in the shell, which reports the outcome back
//! ([`Protocol::begin_data`], [`Protocol::end_data`]).
//!
//! What it keeps, per core:
//! - per peer: what the remote said (`sync`: fork, length, flags; `range` / `bitfield`: which
//!   blocks it has; `want`: what it is interested in), what we told it (`canUpgrade`, the
//!   fully-downloaded length we signalled), its in-flight requests and back-off counters;
//! - wanted blocks (explicit `fetch`es, ref-counted), ranges (`download`), the pending
//!   upgrade (eager: we follow every peer that signals a longer tree) with its `update`
//!   waiters, and the in-flight requests by id.
//!
//! Scheduling follows JS: explicit blocks first, then ranges (linearly, from a cursor shared
//! by the peers, so blocks spread over every peer with free request slots), then the upgrade;
//! a block beyond our length is requested together with an upgrade. A peer gets a bounded
//! number of requests at a time, sized in bytes (see `ProtocolConfig`); as in JS, an answer
//! frees its slot when it arrives, so the next requests go out while it is verified and
//! committed. Request ids are never reused (JS reuses them).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::bitfield::Bitfield;
use crate::messages::{
    BitfieldMessage, Data, Message, NoData, ProofRequest, Range, Request, RequestBlock,
    RequestUpgrade, Sync, Want, INVALID_REQUEST, NOT_AVAILABLE,
};

/// Blocks per `want` (JS `WANT_BATCH` in its compat mode: 65,536 words of 32 bits).
pub(crate) const WANT_BATCH: u64 = 1 << 21;
/// Largest range a remote `want` may name (JS `MAX_RANGE`); larger ones are ignored.
pub(crate) const MAX_WANT_RANGE: u64 = 8 * 256 * 1024;
/// `want`s we keep open per peer (JS `MAX`).
pub(crate) const MAX_WANTS: usize = 512;
/// Remote `want`s remembered per peer before treating the peer as wanting everything.
pub(crate) const MAX_REMOTE_WANTS: usize = 512;
/// Remote "any" `want`s remembered per peer before treating the peer as wanting everything
/// (JS `MAX_ANY`).
pub(crate) const MAX_REMOTE_ANY_WANTS: usize = 16;
/// Blocks near the head that are always announced (JS `LAST_BLOCKS`).
pub(crate) const LAST_BLOCKS: u64 = 256;
/// `noData` replies of one kind after which a peer gets no more requests (JS `MAX_BACKOFFS`).
pub(crate) const MAX_BACKOFFS: u32 = 32;
/// Peers consulted before `update` resolves "nothing newer" (JS `MAX_PEERS_UPGRADE`).
pub(crate) const MAX_PEERS_UPGRADE: usize = 3;
/// How far beyond our length remote `range`/`bitfield` bits are kept: a remote cannot make
/// us allocate for blocks far past anything we could request.
pub(crate) const REMOTE_BITFIELD_AHEAD: u64 = 1 << 22;
/// Bits per `bitfield` message answering a `want` (JS `BITS_PER_SEGMENT`).
pub(crate) const SEGMENT_BITS: u64 = 1 << 21;
/// Request priority of explicit block fetches (JS `PRIORITY.HIGH`).
const PRIORITY_HIGH: u64 = 1;

/// What the protocol needs to know about the local core. Implemented by the core's state
/// under its lock, and by a fake in the tests.
pub(crate) trait LocalView {
    /// Number of blocks in the tree.
    fn length(&self) -> u64;
    /// Total bytes of the tree.
    fn byte_length(&self) -> u64;
    /// Fork id.
    fn fork(&self) -> u64;
    /// Blocks held from 0 without a gap.
    fn contiguous_length(&self) -> u64;
    /// True when block `i` is stored.
    fn has(&self, i: u64) -> bool;
    /// The first block `>= from` that is not stored.
    fn next_missing(&self, from: u64) -> u64;
    /// The first stored block in `from..to`.
    fn next_present(&self, from: u64, to: u64) -> Option<u64>;
    /// Stored blocks in `from..to`.
    fn count(&self, from: u64, to: u64) -> u64;
    /// `count` 32-bit words of the bitfield from `start` (a multiple of 32).
    fn words(&self, start: u64, count: usize) -> Vec<u32>;
    /// True when the core knows a non-compat manifest (the `hasManifest` sync flag).
    fn has_manifest(&self) -> bool;
    /// True when the core does not know its manifest at all (and must ask for it).
    fn needs_manifest(&self) -> bool;
    /// True when every root of a tree of `length` blocks is stored, so that an upgrade from
    /// `length` can be proven (`MerkleTree.upgradeable`).
    fn upgradeable(&self, length: u64) -> bool;
    /// Tree nodes above flat index `index` that are missing locally (`missingNodes`).
    fn missing_nodes(&self, index: u64) -> u64;
}

/// A peer of one core (one `hypercore/alpha` channel). Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(pub(crate) u64);

/// A message to send on a peer's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// The peer.
    pub(crate) peer: PeerId,
    /// The message.
    pub(crate) message: Message,
}

/// Something the shell must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtoEvent {
    /// The peer misbehaved (a proof failed verification): close its channel.
    ClosePeer(PeerId),
    /// An `update` waiter is resolved: whether the core grew.
    UpdateDone {
        /// The waiter.
        waiter: u64,
        /// True when the core was upgraded.
        upgraded: bool,
    },
    /// A range's progress changed.
    RangeUpdated(u64),
}

/// What to do with a `data` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataStep {
    /// Verify and apply it, then report with [`Protocol::end_data`].
    Verify,
    /// Drop it (unrequested, cancelled, or not what was asked).
    Ignore,
}

/// How verifying a `data` message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataOutcome {
    /// Stored; `bytes` of block data (0 without a block).
    Applied {
        /// Block bytes stored.
        bytes: u64,
    },
    /// The proof failed verification: the remote misbehaved.
    Rejected,
    /// A benign race (another fork, the core changed meanwhile): ask again.
    Retry,
    /// A local storage failure.
    LocalFault,
}

/// Settings of the protocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProtocolConfig {
    /// Requests in flight per peer, at most.
    pub(crate) max_inflight: usize,
    /// Block bytes in flight per peer (the request limit is this over the core's average
    /// block size, within `MIN_INFLIGHT..=max_inflight`).
    pub(crate) max_inflight_bytes: u64,
}

/// Requests in flight per peer, at least (JS's minimum).
pub(crate) const MIN_INFLIGHT: usize = 16;

impl ProtocolConfig {
    /// The request limit for a core whose blocks average `avg` bytes (0: unknown).
    fn limit(&self, avg: u64) -> usize {
        let by_bytes = self
            .max_inflight_bytes
            .checked_div(avg)
            .map_or(self.max_inflight, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            });
        by_bytes.max(MIN_INFLIGHT).min(self.max_inflight).max(1)
    }
}

/// Progress of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RangeProgress {
    /// Blocks of the range stored.
    pub(crate) done: u64,
    /// Blocks in the range (for an open range: up to the current length).
    pub(crate) total: u64,
    /// Every block of a closed range is stored.
    pub(crate) complete: bool,
}

/// The `want`s a remote sent us (JS `RemoteWants`, simplified): batches by `(start,
/// length)`, "any" ranges, and an "everything" flag once it asked for too much to track.
#[derive(Debug, Default)]
struct RemoteWants {
    batches: HashSet<(u64, u64)>,
    any: Vec<(u64, u64)>,
    all: bool,
}

impl RemoteWants {
    /// Records a want; false when it is too large to honour (JS ignores those).
    fn add(&mut self, w: &Want) -> bool {
        if w.any {
            if self.any.len() < MAX_REMOTE_ANY_WANTS {
                self.any.push((w.start, w.length));
            } else {
                self.all = true;
            }
            return true;
        }
        if w.length > MAX_WANT_RANGE {
            return false;
        }
        if self.batches.len() >= MAX_REMOTE_WANTS {
            self.all = true;
        } else {
            self.batches.insert((w.start, w.length));
        }
        true
    }

    fn remove(&mut self, w: &Want) {
        if w.any {
            self.any.retain(|r| *r != (w.start, w.length));
        } else {
            self.batches.remove(&(w.start, w.length));
        }
    }

    /// True when the remote may be interested in any block of `start..start + length`.
    fn has_range(&self, start: u64, length: u64) -> bool {
        if self.all {
            return true;
        }
        let end = start.saturating_add(length);
        let overlaps = |(s, l): &(u64, u64)| *s < end && start < s.saturating_add(*l);
        self.any.iter().any(overlaps) || self.batches.iter().any(overlaps)
    }
}

/// What we know about one peer.
#[derive(Debug)]
struct Peer {
    // --- what the remote said ---
    remote_fork: u64,
    remote_length: u64,
    remote_can_upgrade: bool,
    remote_uploading: bool,
    remote_has_manifest: bool,
    remote_synced: bool,
    /// The length the remote last heard from us (0 on another fork).
    length_acked: u64,
    /// The remote holds every block below this.
    remote_contiguous: u64,
    /// Other blocks it holds (kept up to `REMOTE_BITFIELD_AHEAD` past our length).
    remote_bitfield: Bitfield,
    remote_wants: RemoteWants,
    // --- what we decided ---
    /// We can prove an upgrade from the remote's length (sent in `sync`).
    can_upgrade: bool,
    last_upgradable_length: u64,
    last_upgradable_fork: u64,
    /// The fully-downloaded length we last announced.
    fully_signaled: u64,
    /// `want` batches we sent.
    sent_wants: HashSet<u64>,
    /// Our requests in flight to it.
    inflight: usize,
    /// No more requests (misbehaved or kept failing).
    paused: bool,
    /// Storing its answer failed here (a full disk): no more requests to it until a new
    /// download or want, which is how the application says it made room (asking at once
    /// would fail the same way). Unlike `paused`, its own requests are still answered.
    local_fault: bool,
    not_available: u32,
    invalid_requests: u32,
    /// Blocks and bytes downloaded from it.
    downloaded_blocks: u64,
    downloaded_bytes: u64,
}

impl Peer {
    fn new() -> Self {
        Peer {
            remote_fork: 0,
            remote_length: 0,
            remote_can_upgrade: false,
            remote_uploading: true,
            remote_has_manifest: false,
            remote_synced: false,
            length_acked: 0,
            remote_contiguous: 0,
            remote_bitfield: Bitfield::new(),
            remote_wants: RemoteWants::default(),
            can_upgrade: true,
            last_upgradable_length: 0,
            last_upgradable_fork: 0,
            fully_signaled: 0,
            sent_wants: HashSet::new(),
            inflight: 0,
            paused: false,
            local_fault: false,
            not_available: 0,
            invalid_requests: 0,
            downloaded_blocks: 0,
            downloaded_bytes: 0,
        }
    }

    fn remote_has(&self, i: u64) -> bool {
        i < self.remote_contiguous || self.remote_bitfield.get(i)
    }

    /// The first block `>= from` the remote has, if any.
    fn next_remote(&self, from: u64) -> Option<u64> {
        if from < self.remote_contiguous {
            return Some(from);
        }
        let n = self.remote_bitfield.find_first(true, from);
        (n != u64::MAX).then_some(n)
    }
}

/// A request in flight.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    peer: PeerId,
    fork: u64,
    block: Option<u64>,
    /// A `hash` request (reorgs): its flat index.
    hash: Option<u64>,
    /// Part of following a higher fork.
    reorg: bool,
    upgrade: bool,
    manifest_only: bool,
    /// Its answer arrived and is being verified: it no longer takes one of the peer's
    /// request slots (as in JS, the slot is freed on arrival, so that the next requests go
    /// out while this answer is verified and committed).
    processing: bool,
}

/// The pending upgrade (JS `UpgradeRequest`).
#[derive(Debug)]
struct Upgrade {
    length: u64,
    fork: u64,
    inflight: Option<u64>,
    waiters: Vec<u64>,
}

/// Following a peer to a higher fork (JS `ForkRequest`): first its whole signed tree (an
/// upgrade from 0 on its fork), then, while the shared prefix with our tree is unknown,
/// `hash` proofs of nodes that narrow it down. The batch itself (a
/// [`crate::ReorgBatch`]) lives in the shell, which reports what it still wants.
#[derive(Debug, Clone, Copy)]
struct Reorg {
    fork: u64,
    /// The tree proof arrived (a batch exists).
    started: bool,
    /// What the batch wants next (`None` with `started`: finished, being applied).
    want: Option<crate::core::ReorgWant>,
    inflight: Option<u64>,
}

/// A `download` range.
#[derive(Debug)]
struct RangeState {
    start: u64,
    end: Option<u64>,
    /// Blocks below it are stored or in flight.
    cursor: u64,
    done: u64,
}

/// Statistics of a peer, for [`crate::Hypercore::peers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PeerStats {
    pub(crate) remote_length: u64,
    pub(crate) remote_fork: u64,
    pub(crate) remote_contiguous: u64,
    pub(crate) inflight: usize,
    pub(crate) paused: bool,
    pub(crate) downloaded_blocks: u64,
    pub(crate) downloaded_bytes: u64,
}

/// The replication protocol of one core. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Protocol {
    config: ProtocolConfig,
    /// Peers in the order they were added.
    peers: BTreeMap<PeerId, Peer>,
    next_peer: u64,
    /// Channels opening that are not peers yet (`update` waits for them).
    opening: usize,
    next_request: u64,
    requests: HashMap<u64, Inflight>,
    /// Requests in flight by block.
    block_requests: HashMap<u64, u64>,
    /// Explicitly wanted blocks and their waiter counts.
    wants: BTreeMap<u64, usize>,
    ranges: BTreeMap<u64, RangeState>,
    next_range: u64,
    upgrade: Option<Upgrade>,
    reorg: Option<Reorg>,
    /// The length peers were last told about (to announce what a truncation dropped).
    known_length: u64,
    next_waiter: u64,
    manifest_request: Option<u64>,
    /// Rotates the peer order of `update_all` so that no peer is always first.
    rotate: usize,
    out: VecDeque<Transmit>,
    events: VecDeque<ProtoEvent>,
}

impl Protocol {
    pub(crate) fn new(config: ProtocolConfig) -> Self {
        Protocol {
            config,
            peers: BTreeMap::new(),
            next_peer: 0,
            opening: 0,
            next_request: 1,
            requests: HashMap::new(),
            block_requests: HashMap::new(),
            wants: BTreeMap::new(),
            ranges: BTreeMap::new(),
            next_range: 0,
            upgrade: None,
            reorg: None,
            known_length: 0,
            next_waiter: 0,
            manifest_request: None,
            rotate: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub(crate) fn set_config(&mut self, config: ProtocolConfig) {
        self.config = config;
    }

    /// The id the next [`Protocol::add_peer`] returns.
    pub(crate) fn next_peer_id(&self) -> PeerId {
        PeerId(self.next_peer)
    }

    /// The id the next [`Protocol::add_update_waiter`] returns.
    pub(crate) fn next_waiter_id(&self) -> u64 {
        self.next_waiter
    }

    /// The id the next [`Protocol::add_range`] returns.
    pub(crate) fn next_range_id(&self) -> u64 {
        self.next_range
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<ProtoEvent> {
        self.events.pop_front()
    }

    pub(crate) fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    pub(crate) fn peer_stats(&self, p: PeerId) -> Option<PeerStats> {
        self.peers.get(&p).map(|peer| PeerStats {
            remote_length: peer.remote_length,
            remote_fork: peer.remote_fork,
            remote_contiguous: peer.remote_contiguous,
            inflight: peer.inflight,
            paused: peer.paused,
            downloaded_blocks: peer.downloaded_blocks,
            downloaded_bytes: peer.downloaded_bytes,
        })
    }

    pub(crate) fn is_active(&self, p: PeerId) -> bool {
        self.peers.get(&p).is_some_and(|peer| !peer.paused)
    }

    fn send(&mut self, peer: PeerId, message: Message) {
        self.out.push_back(Transmit { peer, message });
    }

    // ----- peers ---------------------------------------------------------------------

    /// A channel is being opened (counted until it becomes a peer or fails).
    pub(crate) fn peer_opening(&mut self) {
        self.opening += 1;
    }

    /// A channel that was opening closed before it became a peer.
    pub(crate) fn peer_open_failed(&mut self, local: &dyn LocalView) {
        self.opening = self.opening.saturating_sub(1);
        self.check_upgrade_available(local);
    }

    /// The remote opened its side with a valid capability (JS `onopen`): sends `sync` and
    /// announces what we have.
    pub(crate) fn add_peer(&mut self, local: &dyn LocalView) -> PeerId {
        self.opening = self.opening.saturating_sub(1);
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        self.known_length = local.length();
        self.peers.insert(id, Peer::new());
        self.send_sync(local, id);
        let contig = local.contiguous_length().min(local.length());
        if contig > 0 {
            self.broadcast_range(local, id, 0, contig, false);
        }
        self.update_peer(local, id);
        id
    }

    /// The peer's channel closed: its requests go back to the queue.
    pub(crate) fn remove_peer(&mut self, local: &dyn LocalView, p: PeerId) {
        if self.peers.remove(&p).is_none() {
            return;
        }
        let mine: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.peer == p)
            .map(|(id, _)| *id)
            .collect();
        for id in &mine {
            if let Some(r) = self.requests.remove(id) {
                self.clear_request(*id, &r);
            }
        }
        if mine.is_empty() {
            self.check_upgrade_available(local);
        } else {
            self.update_all(local);
        }
    }

    // ----- what we tell peers ----------------------------------------------------------

    fn send_sync(&mut self, local: &dyn LocalView, p: PeerId) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        if local.fork() != peer.remote_fork {
            peer.can_upgrade = false;
        }
        let msg = Sync {
            fork: local.fork(),
            length: local.length(),
            remote_length: if local.fork() == peer.remote_fork {
                peer.remote_length
            } else {
                0
            },
            can_upgrade: peer.can_upgrade,
            uploading: true,
            downloading: true,
            has_manifest: local.has_manifest(),
            allow_push: false,
        };
        self.send(p, Message::Sync(msg));
    }

    /// JS `signalUpgrade`: our length changed.
    fn signal_upgrade(&mut self, local: &dyn LocalView, p: PeerId) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        let should_update = local.fork() == peer.remote_fork
            && local.length() > peer.remote_length
            && !peer.can_upgrade;
        if should_update {
            let can = can_upgrade(local, peer.remote_length, peer.remote_fork);
            if can != peer.can_upgrade {
                peer.can_upgrade = can;
                if can {
                    peer.last_upgradable_length = peer.remote_length;
                    peer.last_upgradable_fork = peer.remote_fork;
                }
                self.send_sync(local, p);
            }
        } else {
            self.send_sync(local, p);
        }
    }

    /// JS `broadcastRange`: tells the peer about blocks we now have (or dropped), when it
    /// may care.
    fn broadcast_range(
        &mut self,
        local: &dyn LocalView,
        p: PeerId,
        mut start: u64,
        mut length: u64,
        drop: bool,
    ) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        if peer.paused {
            return;
        }
        let local_length = local.length();
        let fully = local.contiguous_length() >= local_length;
        if start.saturating_add(LAST_BLOCKS) < local_length
            && !drop
            && !fully
            && !peer.remote_wants.has_range(start, length)
        {
            return;
        }
        let mut force = false;
        if fully && !drop {
            start = 0;
            length = local_length;
            if peer.fully_signaled < length {
                peer.fully_signaled = length;
                force = true;
            }
        }
        if !force && !drop {
            let end = start.saturating_add(length);
            if peer.remote_contiguous >= end {
                return;
            }
            if length == 1 {
                if peer.remote_bitfield.get(start) {
                    return;
                }
            } else if peer.remote_contiguous <= start && peer.remote_bitfield.has_all(start..end) {
                return;
            }
        }
        self.send(
            p,
            Message::Range(Range {
                drop,
                start,
                length,
            }),
        );
    }

    // ----- what peers tell us ----------------------------------------------------------

    /// `sync` (JS `onsync`).
    pub(crate) fn on_sync(&mut self, local: &dyn LocalView, p: PeerId, m: &Sync) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        let length_changed = m.length != peer.remote_length;
        let same_fork = m.fork == local.fork();
        peer.remote_synced = true;
        peer.remote_fork = m.fork;
        peer.remote_length = m.length;
        peer.remote_can_upgrade = m.can_upgrade;
        peer.remote_uploading = m.uploading;
        peer.remote_has_manifest = m.has_manifest;
        peer.length_acked = if same_fork { m.remote_length } else { 0 };
        let follow = peer.remote_length > local.length() && peer.length_acked == local.length();
        let upgrade = if !length_changed || !same_fork {
            peer.can_upgrade && same_fork
        } else {
            can_upgrade(local, m.length, m.fork)
        };
        if same_fork {
            peer.can_upgrade = upgrade;
            if upgrade {
                peer.last_upgradable_length = m.length;
                peer.last_upgradable_fork = m.fork;
            }
        }
        let behind = same_fork && local.length() > peer.remote_length;
        if follow {
            self.ensure_upgrade(local);
        }
        if m.fork > local.fork() && m.length > 0 {
            // JS `_updateFork`: the writer truncated; follow the newest fork.
            if self.reorg.is_none_or(|r| r.fork < m.fork) {
                tracing::debug!(peer = p.0, fork = m.fork, "a peer is on a newer fork");
                self.reorg = Some(Reorg {
                    fork: m.fork,
                    started: false,
                    want: None,
                    inflight: None,
                });
            }
        }
        if behind {
            self.signal_upgrade(local, p);
        }
        self.update_peer(local, p);
    }

    /// `range` (JS `onrange`).
    pub(crate) fn on_range(&mut self, local: &dyn LocalView, p: PeerId, m: &Range) {
        let clip = local.length().saturating_add(REMOTE_BITFIELD_AHEAD);
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        let has = !m.drop;
        if m.drop && m.start < peer.remote_contiguous {
            peer.remote_contiguous = m.start;
        }
        let end = m.start.saturating_add(m.length);
        if m.start == 0 && !m.drop {
            peer.remote_contiguous = peer.remote_contiguous.max(m.length);
        } else if has {
            let end = end.min(clip);
            if m.start < end {
                peer.remote_bitfield.set_range(m.start..end, true);
            }
        } else {
            peer.remote_bitfield.set_range(m.start..end, false);
        }
        if has {
            self.update_peer(local, p);
        }
    }

    /// `bitfield` (JS `onbitfield`): the words are the truth for their range.
    pub(crate) fn on_bitfield(&mut self, local: &dyn LocalView, p: PeerId, m: &BitfieldMessage) {
        let clip = local.length().saturating_add(REMOTE_BITFIELD_AHEAD);
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        if m.start % 32 != 0 {
            return;
        }
        if m.start < peer.remote_contiguous {
            peer.remote_contiguous = m.start;
        }
        for (k, word) in m.bitfield.iter().enumerate() {
            let base = m.start.saturating_add(32 * k as u64);
            if base >= clip {
                break;
            }
            let mut bit = 0u64;
            while bit < 32 {
                let value = word >> bit & 1 == 1;
                let mut run = bit + 1;
                while run < 32 && (word >> run & 1 == 1) == value {
                    run += 1;
                }
                peer.remote_bitfield
                    .set_range(base + bit..base + run, value);
                bit = run;
            }
        }
        self.update_peer(local, p);
    }

    /// `want` (JS `onwant` / `_onwant`): answers with a `range` or `bitfield`s.
    pub(crate) fn on_want(&mut self, local: &dyn LocalView, p: PeerId, m: &Want) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        if !peer.remote_wants.add(m) || peer.paused {
            return;
        }
        let length = local.length();
        let contig = local.contiguous_length().min(length);
        let end = m.start.saturating_add(m.length);
        if end < contig || length == contig || (m.any && m.start < contig) {
            self.send(
                p,
                Message::Range(Range {
                    drop: false,
                    start: 0,
                    length: contig,
                }),
            );
            return;
        }
        if m.start >= length {
            return;
        }
        let end = end.min(length);
        if m.any {
            if let Some(bit) = local.next_present(m.start, end) {
                self.send(
                    p,
                    Message::Range(Range {
                        drop: false,
                        start: bit,
                        length: 1,
                    }),
                );
            }
            return;
        }
        let mut at = m.start - m.start % 32;
        while at < end {
            let seg_end = (at - at % SEGMENT_BITS + SEGMENT_BITS).min(end);
            let stop = seg_end.div_ceil(32) * 32;
            if local.next_present(at, seg_end).is_some() {
                let count = ((stop - at) / 32) as usize;
                self.send(
                    p,
                    Message::Bitfield(BitfieldMessage {
                        start: at,
                        bitfield: local.words(at, count),
                    }),
                );
            }
            at = stop;
        }
    }

    /// `unwant`.
    pub(crate) fn on_unwant(&mut self, p: PeerId, m: &Want) {
        if let Some(peer) = self.peers.get_mut(&p) {
            peer.remote_wants.remove(m);
        }
    }

    /// `noData` (JS `onnodata`).
    pub(crate) fn on_no_data(&mut self, local: &dyn LocalView, p: PeerId, m: &NoData) {
        let ours = self.requests.get(&m.request).is_some_and(|r| r.peer == p);
        if !ours {
            self.update_all(local);
            return;
        }
        if let Some(r) = self.requests.remove(&m.request) {
            self.clear_request(m.request, &r);
        }
        if let Some(peer) = self.peers.get_mut(&p) {
            match m.reason {
                NOT_AVAILABLE => peer.not_available += 1,
                INVALID_REQUEST => peer.invalid_requests += 1,
                _ => {}
            }
            if peer.not_available >= MAX_BACKOFFS || peer.invalid_requests >= MAX_BACKOFFS {
                tracing::debug!(peer = p.0, "peer keeps failing requests: paused");
                peer.paused = true;
            }
        }
        self.update_all(local);
    }

    /// A `data` message arrived: should it be verified? (JS `_handleData` up to
    /// `core.verify`.) A `data` that does not match its request counts as `noData`.
    pub(crate) fn begin_data(&mut self, local: &dyn LocalView, p: PeerId, d: &Data) -> DataStep {
        let Some(r) = self.requests.get(&d.request).copied() else {
            return DataStep::Ignore;
        };
        if r.peer != p {
            return DataStep::Ignore;
        }
        let proof = &d.proof;
        let matching = proof
            .block
            .as_ref()
            .is_none_or(|b| r.block == Some(b.index))
            && proof.hash.as_ref().is_none_or(|h| r.hash == Some(h.index))
            && proof.seek.is_none()
            && (proof.upgrade.is_none() || r.upgrade || r.reorg)
            && proof.fork == r.fork;
        if !matching {
            tracing::debug!(
                peer = p.0,
                request = d.request,
                "data does not match its request"
            );
            self.requests.remove(&d.request);
            self.clear_request(d.request, &r);
            self.update_all(local);
            return DataStep::Ignore;
        }
        if let Some(r) = self.requests.get_mut(&d.request) {
            if !r.processing {
                r.processing = true;
                if let Some(peer) = self.peers.get_mut(&p) {
                    peer.inflight = peer.inflight.saturating_sub(1);
                }
            }
        }
        DataStep::Verify
    }

    /// Fills the peer's free request slots (after [`Protocol::begin_data`] freed some).
    pub(crate) fn refill(&mut self, local: &dyn LocalView, p: PeerId) {
        self.update_peer(local, p);
    }

    /// The outcome of verifying the `data` answering `request` (after
    /// [`DataStep::Verify`]).
    pub(crate) fn end_data(
        &mut self,
        local: &dyn LocalView,
        p: PeerId,
        request: u64,
        outcome: DataOutcome,
    ) {
        let Some(r) = self.requests.remove(&request) else {
            return;
        };
        match outcome {
            DataOutcome::Applied { bytes } => {
                self.finish_request(request, &r);
                if let Some(peer) = self.peers.get_mut(&p) {
                    if r.block.is_some() {
                        peer.downloaded_blocks += 1;
                        peer.downloaded_bytes += bytes;
                    }
                }
            }
            DataOutcome::Retry => self.clear_request(request, &r),
            DataOutcome::Rejected => {
                self.clear_request(request, &r);
                if let Some(peer) = self.peers.get_mut(&p) {
                    if !peer.paused {
                        peer.paused = true;
                        self.events.push_back(ProtoEvent::ClosePeer(p));
                    }
                }
            }
            DataOutcome::LocalFault => {
                self.clear_request(request, &r);
                if let Some(peer) = self.peers.get_mut(&p) {
                    peer.local_fault = true;
                }
            }
        }
        self.resolve_upgrade(local);
        self.update_all(local);
    }

    /// A request is done: it no longer counts.
    fn finish_request(&mut self, id: u64, r: &Inflight) {
        if !r.processing {
            if let Some(peer) = self.peers.get_mut(&r.peer) {
                peer.inflight = peer.inflight.saturating_sub(1);
            }
        }
        if let Some(b) = r.block {
            if self.block_requests.get(&b) == Some(&id) {
                self.block_requests.remove(&b);
            }
        }
        if r.upgrade {
            if let Some(u) = &mut self.upgrade {
                if u.inflight == Some(id) {
                    u.inflight = None;
                }
            }
        }
        if r.manifest_only && self.manifest_request == Some(id) {
            self.manifest_request = None;
        }
        if r.reorg {
            if let Some(f) = &mut self.reorg {
                if f.inflight == Some(id) {
                    f.inflight = None;
                }
            }
        }
    }

    /// The shell verified a reorg proof for `fork`: the batch now wants `want` (`None`:
    /// finished; the shell applies it).
    pub(crate) fn reorg_progress(
        &mut self,
        local: &dyn LocalView,
        fork: u64,
        want: Option<crate::core::ReorgWant>,
    ) {
        if let Some(f) = &mut self.reorg {
            if f.fork == fork {
                f.started = true;
                f.want = want;
            }
        }
        self.update_all(local);
    }

    /// The reorg to `fork` was applied, or given up (the batch failed to apply).
    pub(crate) fn reorg_done(&mut self, local: &dyn LocalView, fork: u64) {
        if self.reorg.is_some_and(|f| f.fork <= fork) {
            self.reorg = None;
        }
        self.update_all(local);
    }

    /// A request failed or was dropped: what it asked for may be asked again.
    fn clear_request(&mut self, id: u64, r: &Inflight) {
        self.finish_request(id, r);
        if let Some(b) = r.block {
            for range in self.ranges.values_mut() {
                if b >= range.start && b < range.cursor {
                    range.cursor = b;
                }
            }
        }
    }

    // ----- local changes -----------------------------------------------------------------

    /// Blocks `start..start + length` are now stored.
    pub(crate) fn on_have(&mut self, local: &dyn LocalView, start: u64, length: u64) {
        let end = start.saturating_add(length);
        let ids: Vec<u64> = self.ranges.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.ranges.get_mut(&id) {
                let r_end = r.end.unwrap_or(u64::MAX);
                let from = start.max(r.start);
                let to = end.min(r_end);
                if from < to {
                    r.done += to - from;
                    self.events.push_back(ProtoEvent::RangeUpdated(id));
                }
            }
        }
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.broadcast_range(local, p, start, length, false);
        }
    }

    /// The tree changed: grew, or was truncated / reorganised keeping the blocks below
    /// `truncated` (`Some(ancestors)`).
    pub(crate) fn on_length_changed(&mut self, local: &dyn LocalView, truncated: Option<u64>) {
        if let Some(ancestors) = truncated {
            let length = local.length();
            let ids: Vec<u64> = self.ranges.keys().copied().collect();
            for id in ids {
                if let Some(r) = self.ranges.get_mut(&id) {
                    let end = r.end.unwrap_or(u64::MAX).min(length);
                    r.done = if r.start < end {
                        local.count(r.start, end)
                    } else {
                        0
                    };
                    r.cursor = r.start;
                    self.events.push_back(ProtoEvent::RangeUpdated(id));
                }
            }
            for peer in self.peers.values_mut() {
                peer.fully_signaled = peer.fully_signaled.min(length);
            }
            // JS `ontruncate`: peers hear which blocks we dropped.
            if self.known_length > ancestors {
                let dropped = self.known_length - ancestors;
                let peers: Vec<PeerId> = self.peers.keys().copied().collect();
                for p in peers {
                    self.broadcast_range(local, p, ancestors, dropped, true);
                }
            }
            if self.reorg.is_some_and(|f| f.fork <= local.fork()) {
                self.reorg = None;
            }
        } else {
            // Open ranges grew.
            let open: Vec<u64> = self
                .ranges
                .iter()
                .filter(|(_, r)| r.end.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in open {
                self.events.push_back(ProtoEvent::RangeUpdated(id));
            }
        }
        self.known_length = local.length();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.signal_upgrade(local, p);
        }
        self.resolve_upgrade(local);
        self.update_all(local);
    }

    /// Resolves the pending upgrade when the tree moved (JS `_resolveUpgradeRequest`).
    fn resolve_upgrade(&mut self, local: &dyn LocalView) {
        let moved = self
            .upgrade
            .as_ref()
            .is_some_and(|u| u.length != local.length() || u.fork != local.fork());
        if moved {
            if let Some(u) = self.upgrade.take() {
                for waiter in u.waiters {
                    self.events.push_back(ProtoEvent::UpdateDone {
                        waiter,
                        upgraded: true,
                    });
                }
            }
        }
    }

    fn ensure_upgrade(&mut self, local: &dyn LocalView) {
        if self.upgrade.is_none() {
            self.upgrade = Some(Upgrade {
                length: local.length(),
                fork: local.fork(),
                inflight: None,
                waiters: Vec::new(),
            });
        }
    }

    // ----- what the user wants ----------------------------------------------------------

    /// A waiter for block `i` (JS `addBlock`).
    pub(crate) fn add_want(&mut self, local: &dyn LocalView, i: u64) {
        *self.wants.entry(i).or_insert(0) += 1;
        self.clear_local_faults();
        self.update_all(local);
    }

    /// A waiter for block `i` is gone; the last one cancels its request.
    pub(crate) fn remove_want(&mut self, i: u64) {
        let Some(n) = self.wants.get_mut(&i) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.wants.remove(&i);
        let in_range = self
            .ranges
            .values()
            .any(|r| i >= r.start && r.end.is_none_or(|e| i < e));
        if in_range {
            return;
        }
        if let Some(id) = self.block_requests.get(&i).copied() {
            if let Some(r) = self.requests.remove(&id) {
                self.finish_request(id, &r);
                self.send(
                    r.peer,
                    Message::Cancel(crate::messages::Cancel { request: id }),
                );
            }
        }
    }

    /// A `download` of `start..end` (`None`: open-ended, following new blocks).
    pub(crate) fn add_range(&mut self, local: &dyn LocalView, start: u64, end: Option<u64>) -> u64 {
        let id = self.next_range;
        self.next_range += 1;
        let stop = end.unwrap_or(u64::MAX).min(local.length());
        let done = if start < stop {
            local.count(start, stop)
        } else {
            0
        };
        self.ranges.insert(
            id,
            RangeState {
                start,
                end,
                cursor: start,
                done,
            },
        );
        self.events.push_back(ProtoEvent::RangeUpdated(id));
        self.clear_local_faults();
        self.update_all(local);
        id
    }

    /// A new download or want: ask the peers whose answers we failed to store again.
    fn clear_local_faults(&mut self) {
        for peer in self.peers.values_mut() {
            peer.local_fault = false;
        }
    }

    pub(crate) fn remove_range(&mut self, id: u64) {
        self.ranges.remove(&id);
    }

    pub(crate) fn range_progress(&self, local: &dyn LocalView, id: u64) -> Option<RangeProgress> {
        let r = self.ranges.get(&id)?;
        let total = match r.end {
            Some(e) => e.saturating_sub(r.start),
            None => local.length().saturating_sub(r.start),
        };
        Some(RangeProgress {
            done: r.done,
            total,
            complete: r.end.is_some() && r.done >= total,
        })
    }

    /// An `update` waiter (JS `addUpgrade`): resolved with
    /// [`ProtoEvent::UpdateDone`].
    pub(crate) fn add_update_waiter(&mut self, local: &dyn LocalView) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        // A pending upgrade from before the last change (whose hook has not run yet) is
        // resolved first: this waiter asks about the tree as it is now.
        self.resolve_upgrade(local);
        self.ensure_upgrade(local);
        if let Some(u) = &mut self.upgrade {
            u.waiters.push(id);
        }
        self.update_all(local);
        self.check_upgrade_available(local);
        id
    }

    pub(crate) fn remove_update_waiter(&mut self, id: u64) {
        if let Some(u) = &mut self.upgrade {
            u.waiters.retain(|w| *w != id);
        }
    }

    // ----- scheduling ------------------------------------------------------------------------

    /// Lets every peer fill its request slots.
    pub(crate) fn update_all(&mut self, local: &dyn LocalView) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        if peers.is_empty() {
            self.check_upgrade_available(local);
            return;
        }
        self.rotate = self.rotate.wrapping_add(1);
        let k = self.rotate % peers.len();
        for p in peers[k..].iter().chain(&peers[..k]) {
            self.fill(local, *p);
        }
        self.check_upgrade_available(local);
    }

    /// JS `updatePeer`.
    fn update_peer(&mut self, local: &dyn LocalView, p: PeerId) {
        self.fill(local, p);
        self.check_upgrade_available(local);
    }

    fn fill(&mut self, local: &dyn LocalView, p: PeerId) {
        let avg = local.byte_length().checked_div(local.length()).unwrap_or(0);
        let limit = self.config.limit(avg);
        loop {
            let Some(peer) = self.peers.get(&p) else {
                return;
            };
            if peer.paused || peer.local_fault || !peer.remote_uploading || peer.inflight >= limit {
                return;
            }
            if self.request_manifest(local, p)
                || self.request_wanted(local, p)
                || self.request_range(local, p)
                || self.request_fork(local, p)
                || self.request_upgrade(local, p)
            {
                continue;
            }
            return;
        }
    }

    /// JS `_canRequest`: the remote's proofs for block `i` connect to our tree.
    fn can_request(&self, local: &dyn LocalView, peer: &Peer, i: u64) -> bool {
        peer.remote_length >= local.length()
            || (i < peer.last_upgradable_length && peer.last_upgradable_fork == local.fork())
            || peer.can_upgrade
    }

    /// JS `_shouldUpgrade`.
    fn should_upgrade(&self, local: &dyn LocalView, peer: &Peer) -> bool {
        if self.upgrade.as_ref().is_some_and(|u| u.inflight.is_some()) {
            return false;
        }
        peer.remote_can_upgrade
            && peer.remote_length > local.length()
            && peer.length_acked == local.length()
    }

    /// JS `_makeRequest`: a request to `p`, with an upgrade when needed (or when one is
    /// pending and this peer can give it).
    fn make_request(
        &self,
        local: &dyn LocalView,
        p: PeerId,
        needs_upgrade: bool,
        priority: u64,
        min_length: u64,
    ) -> Option<Request> {
        let peer = self.peers.get(&p)?;
        // Another fork's proofs do not verify against our tree; an empty core can still
        // take an upgrade from any fork (it switches to it).
        if peer.remote_fork != local.fork() && local.length() > 0 {
            return None;
        }
        if needs_upgrade && !self.should_upgrade(local, peer) {
            return None;
        }
        if peer.remote_length < min_length {
            return None;
        }
        let upgrade = needs_upgrade
            || (self.upgrade.is_some()
                && peer.remote_fork == local.fork()
                && self.should_upgrade(local, peer));
        Some(Request {
            id: 0,
            priority,
            proof: ProofRequest {
                fork: peer.remote_fork,
                upgrade: upgrade.then(|| RequestUpgrade {
                    start: local.length(),
                    length: peer.remote_length - local.length(),
                }),
                manifest: local.needs_manifest() && peer.remote_has_manifest,
                ..ProofRequest::default()
            },
        })
    }

    /// Sends a request, recording what it asks for (JS `_send`).
    fn send_request(
        &mut self,
        local: &dyn LocalView,
        p: PeerId,
        mut req: Request,
        block: Option<u64>,
        manifest_only: bool,
    ) {
        let id = self.next_request;
        self.next_request += 1;
        req.id = id;
        if let Some(b) = block {
            let nodes = if req.proof.fork == local.fork() {
                local.missing_nodes(2 * b)
            } else {
                0
            };
            req.proof.block = Some(RequestBlock { index: b, nodes });
            self.block_requests.insert(b, id);
        }
        let upgrade = req.proof.upgrade.is_some();
        if upgrade {
            self.ensure_upgrade(local);
            if let Some(u) = &mut self.upgrade {
                u.inflight = Some(id);
            }
        }
        if manifest_only {
            self.manifest_request = Some(id);
        }
        self.requests.insert(
            id,
            Inflight {
                peer: p,
                fork: req.proof.fork,
                block,
                hash: None,
                reorg: false,
                upgrade,
                manifest_only,
                processing: false,
            },
        );
        if let Some(peer) = self.peers.get_mut(&p) {
            peer.inflight += 1;
        }
        tracing::trace!(peer = p.0, id, ?block, upgrade, "request");
        self.send(p, Message::Request(req));
    }

    /// JS `_requestManifest`: a core that does not know its manifest asks a peer that has it
    /// (when the manifest will not come with an upgrade).
    fn request_manifest(&mut self, local: &dyn LocalView, p: PeerId) -> bool {
        let Some(peer) = self.peers.get(&p) else {
            return false;
        };
        if !local.needs_manifest()
            || self.manifest_request.is_some()
            || peer.remote_length != 0
            || !peer.remote_has_manifest
        {
            return false;
        }
        match self.make_request(local, p, false, 0, 0) {
            Some(req) => {
                self.send_request(local, p, req, None, true);
                true
            }
            None => false,
        }
    }

    /// JS `_requestBlock` over the wanted blocks.
    fn request_wanted(&mut self, local: &dyn LocalView, p: PeerId) -> bool {
        if self.wants.is_empty() {
            return false;
        }
        let candidates: Vec<u64> = self
            .wants
            .keys()
            .copied()
            .filter(|b| !local.has(*b) && !self.block_requests.contains_key(b))
            .collect();
        for b in candidates {
            let Some(peer) = self.peers.get(&p) else {
                return false;
            };
            if !peer.remote_has(b) || peer.remote_fork != local.fork() {
                self.maybe_want(p, b);
                continue;
            }
            if !self.can_request(local, peer, b) {
                continue;
            }
            if let Some(req) =
                self.make_request(local, p, b >= local.length(), PRIORITY_HIGH, b + 1)
            {
                self.send_request(local, p, req, Some(b), false);
                return true;
            }
        }
        false
    }

    /// JS `_requestRange`: the next block of a range that this peer has.
    fn request_range(&mut self, local: &dyn LocalView, p: PeerId) -> bool {
        let ids: Vec<u64> = self.ranges.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get(&p) else {
                return false;
            };
            if peer.remote_fork != local.fork() {
                return false;
            }
            let Some(r) = self.ranges.get(&id) else {
                continue;
            };
            let end = valid_end(local, peer, r.end);
            // Move the shared cursor past what is stored or in flight.
            let mut cursor = r.cursor.max(r.start);
            loop {
                cursor = local.next_missing(cursor);
                if cursor < end && self.block_requests.contains_key(&cursor) {
                    cursor += 1;
                    continue;
                }
                break;
            }
            if let Some(r) = self.ranges.get_mut(&id) {
                r.cursor = cursor;
            }
            // The first block from the cursor this peer has and nobody is fetching.
            let mut i = cursor;
            let mut found = None;
            while i < end {
                i = local.next_missing(i);
                if i >= end {
                    break;
                }
                if self.block_requests.contains_key(&i) {
                    i += 1;
                    continue;
                }
                match peer.next_remote(i) {
                    Some(n) if n == i => {
                        found = Some(i);
                        break;
                    }
                    Some(n) => i = n,
                    None => break,
                }
            }
            match found {
                Some(b) if self.can_request(local, peer, b) => {
                    if let Some(req) = self.make_request(local, p, false, 0, b + 1) {
                        self.send_request(local, p, req, Some(b), false);
                        return true;
                    }
                }
                Some(_) => {}
                None => {
                    if cursor < end && !peer.remote_has(cursor) {
                        self.maybe_want(p, cursor);
                    }
                }
            }
        }
        false
    }

    /// JS `_requestForkProof` and `_requestForkRange`: the tree of the newer fork, then the
    /// nodes that narrow down the prefix it shares with ours.
    fn request_fork(&mut self, local: &dyn LocalView, p: PeerId) -> bool {
        let (Some(peer), Some(f)) = (self.peers.get(&p), self.reorg) else {
            return false;
        };
        if f.inflight.is_some() || peer.remote_fork != f.fork || peer.remote_length == 0 {
            return false;
        }
        let mut req = Request {
            id: 0,
            priority: 0,
            proof: ProofRequest {
                fork: f.fork,
                ..ProofRequest::default()
            },
        };
        if !f.started {
            req.proof.upgrade = Some(RequestUpgrade {
                start: 0,
                length: peer.remote_length,
            });
            req.proof.manifest = local.needs_manifest();
        } else {
            let Some(want) = f.want else {
                return false;
            };
            let end = want.end.min(peer.remote_length);
            let Some(i) = (want.start..end).find(|i| peer.remote_has(*i)) else {
                return false;
            };
            req.proof.hash = Some(RequestBlock {
                index: 2 * i,
                nodes: want.nodes,
            });
        }
        let id = self.next_request;
        self.send_request(local, p, req, None, false);
        if let Some(r) = self.requests.get_mut(&id) {
            r.reorg = true;
            r.upgrade = false;
            r.hash = req.proof.hash.map(|h| h.index);
        }
        if let Some(f) = &mut self.reorg {
            f.inflight = Some(id);
        }
        // The upgrade slot is not taken by a fork request (it is not an upgrade of ours).
        if let Some(u) = &mut self.upgrade {
            if u.inflight == Some(id) {
                u.inflight = None;
            }
        }
        true
    }

    /// JS `_requestUpgrade`.
    fn request_upgrade(&mut self, local: &dyn LocalView, p: PeerId) -> bool {
        if self.upgrade.as_ref().is_none_or(|u| u.inflight.is_some()) {
            return false;
        }
        match self.make_request(local, p, true, 0, 0) {
            Some(req) => {
                self.send_request(local, p, req, None, false);
                true
            }
            None => false,
        }
    }

    /// JS `_maybeWant`: asks the peer which blocks of `i`'s batch it has.
    fn maybe_want(&mut self, p: PeerId, i: u64) {
        let Some(peer) = self.peers.get_mut(&p) else {
            return;
        };
        if i < peer.remote_contiguous {
            return;
        }
        let batch = i / WANT_BATCH;
        if peer.sent_wants.contains(&batch) || peer.sent_wants.len() >= MAX_WANTS {
            return;
        }
        peer.sent_wants.insert(batch);
        self.send(
            p,
            Message::Want(Want {
                start: batch * WANT_BATCH,
                length: WANT_BATCH,
                any: false,
            }),
        );
    }

    /// JS `_checkUpgradeIfAvailable`: resolves `update` waiters with "nothing newer" once
    /// the peers that could know have said so.
    fn check_upgrade_available(&mut self, local: &dyn LocalView) {
        let Some(u) = &self.upgrade else {
            return;
        };
        if u.waiters.is_empty() {
            return;
        }
        if self.opening > 0 && self.peers.len() < MAX_PEERS_UPGRADE {
            return;
        }
        for peer in self.peers.values().take(MAX_PEERS_UPGRADE) {
            if !peer.remote_synced {
                return;
            }
            if local.length() == 0 && peer.remote_length > 0 {
                return;
            }
            if peer.remote_length <= u.length || peer.remote_fork != u.fork {
                continue;
            }
            if peer.length_acked != local.length() && peer.remote_fork == local.fork() {
                return;
            }
            if peer.remote_can_upgrade {
                return;
            }
        }
        if u.inflight.is_some() {
            return;
        }
        if let Some(u) = self.upgrade.take() {
            for waiter in u.waiters {
                self.events.push_back(ProtoEvent::UpdateDone {
                    waiter,
                    upgraded: false,
                });
            }
        }
    }
}

/// JS `_canUpgrade`: whether we can prove our tree to a remote at `length` on `fork`.
fn can_upgrade(local: &dyn LocalView, length: u64, fork: u64) -> bool {
    if fork != local.fork() {
        return false;
    }
    if length == 0 {
        return true;
    }
    if length >= local.length() {
        return false;
    }
    local.upgradeable(length)
}

/// JS `_getValidEnd`: how far a range may be requested from this peer.
fn valid_end(local: &dyn LocalView, peer: &Peer, end: Option<u64>) -> u64 {
    let max_local = if peer.can_upgrade || peer.remote_length >= local.length() {
        local.length()
    } else if local.fork() == peer.last_upgradable_fork {
        peer.last_upgradable_length.min(local.length())
    } else {
        0
    };
    max_local
        .min(end.unwrap_or(peer.remote_length))
        .min(peer.remote_length)
}

#[cfg(test)]
mod tests;
