//! The tasks of one `hypercore/alpha` channel: the reader (capability check, messages into
//! the protocol, batched verification of `data`) and the uploader (answers the remote's
//! requests in order).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use corenet_mux::{Channel, ChannelSender, MuxHandle, PairRequests, StreamInfo};
use tokio::sync::Notify;
use tracing::{debug, trace};

use super::protocol::{DataOutcome, DataStep, PeerId};
use super::PROTOCOL;
use crate::core::Hypercore;
use crate::error::Error;
use crate::messages::{
    Data, Handshake, Message, NoData, Proof, Request, INVALID_REQUEST, MSG_DATA, MSG_NO_DATA,
    NOT_AVAILABLE,
};

/// Messages the reader takes from the channel's inbox at once.
const MAX_BATCH_MESSAGES: usize = 256;
/// Payload bytes the reader takes from the inbox at once (the `data` messages of one
/// batch are verified and committed together).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The remote's requests waiting for the uploader. Bounded: a peer that has more than
/// [`super::ReplicatorConfig::with_max_remote_requests`] requests outstanding is flooding
/// and its channel is closed.
#[derive(Debug)]
pub(crate) struct Uploads {
    state: Mutex<UploadState>,
    notify: Notify,
    uploaded_blocks: AtomicU64,
    uploaded_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct UploadState {
    queue: VecDeque<Request>,
    ids: HashSet<u64>,
    closed: bool,
    limit: usize,
}

impl Uploads {
    pub(crate) fn new(limit: usize) -> Self {
        Uploads {
            state: Mutex::new(UploadState {
                limit,
                ..UploadState::default()
            }),
            notify: Notify::new(),
            uploaded_blocks: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UploadState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a request; false when the queue is full. A request reusing the id of a queued
    /// one replaces it (JS does the same).
    fn push(&self, req: Request) -> bool {
        let mut st = self.lock();
        if !st.ids.insert(req.id) {
            st.queue.retain(|r| r.id != req.id);
        }
        if st.queue.len() >= st.limit {
            return false;
        }
        st.queue.push_back(req);
        drop(st);
        self.notify.notify_one();
        true
    }

    fn cancel(&self, id: u64) {
        let mut st = self.lock();
        if st.ids.remove(&id) {
            st.queue.retain(|r| r.id != id);
        }
    }

    async fn pop(&self) -> Option<Request> {
        loop {
            {
                let mut st = self.lock();
                if st.closed {
                    return None;
                }
                if let Some(r) = st.queue.pop_front() {
                    st.ids.remove(&r.id);
                    return Some(r);
                }
            }
            self.notify.notified().await;
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    pub(crate) fn uploaded(&self) -> (u64, u64) {
        (
            self.uploaded_blocks.load(Ordering::Relaxed),
            self.uploaded_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Answers the remote's later opens of the core's channel (JS pairs every attached core
/// with `protomux.pair`), until the connection closes.
pub(crate) async fn answer_opens(
    core: Hypercore,
    mux: MuxHandle,
    mut hook: PairRequests,
    conn: [u8; 64],
    rt: tokio::runtime::Handle,
) {
    while let Some(request) = hook.recv().await {
        if mux.is_opened(PROTOCOL, core.discovery_key().as_bytes()) {
            // Ours is open already: the remote's extra open is refused (JS `_makePeer`).
            request.reject();
            continue;
        }
        match request.accept(&super::channel_options(&core, &mux)) {
            Ok(channel) => {
                core.replicator().peer_opening();
                rt.spawn(run(core.clone(), channel, *mux.stream_info()));
            }
            Err(e) => debug!(error = %e, "cannot answer a remote open"),
        }
    }
    core.replicator().detached(&conn);
}

/// The reader of one channel: waits for the remote's open, checks its capability, then
/// feeds messages to the protocol until the channel closes.
pub(crate) async fn run(core: Hypercore, mut channel: Channel, info: StreamInfo) {
    let repl = core.replicator();
    let remote = match channel.opened().await {
        Ok(h) => h,
        Err(_) => {
            trace!("channel closed before the remote opened it");
            repl.peer_open_failed(&core);
            return;
        }
    };
    let expected = crate::caps::replication_capability(
        !info.is_initiator,
        core.key().as_bytes(),
        &info.handshake_hash,
    );
    let valid =
        corenet_codec::decode_bytes::<Handshake>(&remote).is_ok_and(|h| h.capability == expected);
    if !valid {
        debug!(
            remote = %info.remote_public_key,
            "invalid replication capability: closing the channel"
        );
        channel.close();
        repl.peer_open_failed(&core);
        return;
    }
    let uploads = Arc::new(Uploads::new(repl.max_remote_requests()));
    let sender = channel.sender();
    let peer = repl.add_peer(
        &core,
        sender.clone(),
        info.remote_public_key,
        uploads.clone(),
    );
    debug!(peer = peer.0, remote = %info.remote_public_key, "replicating");
    let uploader = tokio::spawn(upload(core.clone(), sender, uploads.clone(), peer));

    let mut batch = Vec::new();
    'read: loop {
        let Some(first) = channel.recv().await else {
            break;
        };
        let mut bytes = first.payload.len();
        batch.push(first);
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match recv_now(&mut channel) {
                Some(m) => {
                    bytes += m.payload.len();
                    batch.push(m);
                }
                None => break,
            }
        }
        let mut data = Vec::new();
        for m in batch.drain(..) {
            let msg = match Message::decode(m.message_type, &m.payload) {
                Ok(Some(msg)) => msg,
                Ok(None) => continue,
                Err(e) => {
                    debug!(peer = peer.0, error = %e, ty = m.message_type, "undecodable message");
                    break 'read;
                }
            };
            if let Message::Data(d) = msg {
                data.push(d);
                continue;
            }
            if !data.is_empty() && !handle_data(&core, peer, &mut data) {
                break 'read;
            }
            if !handle(&core, peer, &uploads, msg) {
                break 'read;
            }
        }
        if !data.is_empty() && !handle_data(&core, peer, &mut data) {
            break 'read;
        }
    }
    channel.close();
    uploads.close();
    repl.remove_peer(&core, peer);
    let _ = uploader.await;
    debug!(peer = peer.0, "channel closed");
}

/// A message already in the inbox, without waiting.
fn recv_now(channel: &mut Channel) -> Option<corenet_mux::Message> {
    let mut cx = Context::from_waker(Waker::noop());
    match channel.poll_recv(&mut cx) {
        Poll::Ready(m) => m,
        Poll::Pending => None,
    }
}

/// Any message but `data`; false when the peer must be dropped.
fn handle(core: &Hypercore, peer: PeerId, uploads: &Uploads, msg: Message) -> bool {
    let repl = core.replicator();
    match msg {
        Message::Sync(m) => repl.with(core, |p, v| p.on_sync(v, peer, &m)),
        Message::Range(m) => repl.with(core, |p, v| p.on_range(v, peer, &m)),
        Message::Bitfield(m) => repl.with(core, |p, v| p.on_bitfield(v, peer, &m)),
        Message::Want(m) => repl.with(core, |p, v| p.on_want(v, peer, &m)),
        Message::Unwant(m) => repl.with(core, |p, _| p.on_unwant(peer, &m)),
        Message::NoData(m) => repl.with(core, |p, v| p.on_no_data(v, peer, &m)),
        Message::Request(r) => {
            if !uploads.push(r) {
                debug!(
                    peer = peer.0,
                    "too many requests outstanding: closing the channel"
                );
                return false;
            }
        }
        Message::Cancel(c) => uploads.cancel(c.request),
        Message::Extension(e) => trace!(peer = peer.0, name = %e.name, "extension message ignored"),
        Message::Data(_) => {}
    }
    true
}

/// Verifies and stores a run of `data` messages with one commit; false when the peer sent
/// an invalid proof (it is dropped; nothing of that proof was stored).
fn handle_data(core: &Hypercore, peer: PeerId, data: &mut Vec<Data>) -> bool {
    let repl = core.replicator();
    // Accept the answers and send the next requests before verifying: the peer keeps
    // sending while this batch is hashed and committed.
    let steps = repl.with(core, |p, v| {
        let steps = data
            .iter()
            .map(|d| p.begin_data(v, peer, d))
            .collect::<Vec<_>>();
        p.refill(v, peer);
        steps
    });
    let mut ids = Vec::new();
    let mut proofs: Vec<Proof> = Vec::new();
    let mut forks = Vec::new();
    let local_fork = core.fork();
    for (d, step) in data.drain(..).zip(steps) {
        if step != DataStep::Verify {
            continue;
        }
        if d.proof.fork > local_fork {
            forks.push((d.request, d.proof));
        } else {
            ids.push(d.request);
            proofs.push(d.proof);
        }
    }
    let mut outcomes = Vec::with_capacity(ids.len() + forks.len());
    // The first local failure of the batch and how many proofs it failed.
    let mut fault: Option<(Error, usize)> = None;
    if !proofs.is_empty() {
        let results = blocking(|| core.verify_and_apply_many(&proofs));
        for ((id, proof), r) in ids.into_iter().zip(&proofs).zip(results) {
            let bytes = proof.block.as_ref().map_or(0, |b| b.value.len() as u64);
            outcomes.push((id, outcome(r.map(|_| bytes), &mut fault)));
        }
    }
    for (id, proof) in forks {
        // A peer on a higher fork: its tree, or nodes narrowing down the shared prefix.
        let r = repl.reorg_step(core, &proof).map(|()| 0);
        outcomes.push((id, outcome(r, &mut fault)));
    }
    if let Some((e, proofs)) = fault {
        // Once per batch (its proofs share one commit), not once per proof.
        tracing::warn!(error = %e, proofs, "storing verified proofs failed");
        if let Error::Storage(e) = &e {
            repl.storage_failed(e);
        }
    }
    let mut ok = true;
    repl.with(core, |p, v| {
        for (id, o) in outcomes {
            if o == DataOutcome::Rejected {
                ok = false;
            }
            p.end_data(v, peer, id, o);
        }
    });
    if !ok {
        debug!(peer = peer.0, "invalid proof: peer dropped");
    }
    ok
}

/// Runs `f`, which may wait for storage (a commit waits for `fdatasync`), letting a
/// multi-threaded runtime move this worker's other tasks (the mux driver) elsewhere
/// meanwhile.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What verifying and storing one proof came to; a local failure is kept in `fault` (the
/// first one of the batch, with a count).
fn outcome(r: Result<u64, Error>, fault: &mut Option<(Error, usize)>) -> DataOutcome {
    match r {
        Ok(bytes) => DataOutcome::Applied { bytes },
        Err(e) if e.is_remote_fault() => {
            debug!(error = %e, "proof rejected");
            DataOutcome::Rejected
        }
        Err(Error::ForkMismatch { .. } | Error::Stale) => DataOutcome::Retry,
        Err(e) => {
            match fault {
                Some((_, n)) => *n += 1,
                None => *fault = Some((e, 1)),
            }
            DataOutcome::LocalFault
        }
    }
}

/// The uploader: answers queued requests in order, waiting for the connection to take
/// each answer.
async fn upload(core: Hypercore, sender: ChannelSender, uploads: Arc<Uploads>, peer: PeerId) {
    let mut invalid = 0;
    while let Some(req) = uploads.pop().await {
        if !core.replicator().is_active(peer) {
            // A paused peer gets no answers (JS skips them too); its channel stays.
            continue;
        }
        let sent = match core.create_proof(&req.proof) {
            Ok(Some(proof)) => {
                let bytes = proof.block.as_ref().map(|b| b.value.len() as u64);
                let r = sender
                    .send_encoded(
                        MSG_DATA,
                        &Data {
                            request: req.id,
                            proof,
                        },
                    )
                    .await;
                if let (Ok(()), Some(n)) = (&r, bytes) {
                    uploads.uploaded_blocks.fetch_add(1, Ordering::Relaxed);
                    uploads.uploaded_bytes.fetch_add(n, Ordering::Relaxed);
                }
                r
            }
            Ok(None) => no_data(&sender, req.id, NOT_AVAILABLE).await,
            Err(e) if e.is_remote_fault() => {
                invalid += 1;
                debug!(peer = peer.0, error = %e, "invalid request");
                if invalid >= super::MAX_INVALID_REQUESTS {
                    debug!(
                        peer = peer.0,
                        "too many invalid requests: closing the channel"
                    );
                    sender.close();
                    break;
                }
                no_data(&sender, req.id, INVALID_REQUEST).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a proof failed");
                no_data(&sender, req.id, NOT_AVAILABLE).await
            }
        };
        if sent.is_err() {
            break;
        }
    }
}

async fn no_data(
    sender: &ChannelSender,
    request: u64,
    reason: u64,
) -> Result<(), corenet_mux::Error> {
    sender
        .send_encoded(MSG_NO_DATA, &NoData { request, reason })
        .await
}
