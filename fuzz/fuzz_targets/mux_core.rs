//! The protomux state machine (`corenet_mux::Mux`) fed remote frames, interleaved with local
//! opens, closes, sends, corks and answers to pairing requests.
//!
//! The remote's frames come from the fuzzer (a frame is a length byte and that many bytes,
//! or a synthesised open/close/message/batch aimed at the channels that exist).
//!
//! Invariants: no panic; a protocol error closes the mux for good (later frames are
//! ignored, events end with closes); held bytes, pending opens and the send queue stay within
//! the configured limits; draining transmits and events terminates; every transmitted frame
//! parses as a protomux frame.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use corenet_codec::{decode_prefix, encode, to_vec};
use corenet_mux::wire::{Control, ControlFrame, Header, Open};
use corenet_mux::{ChannelOptions, Config, Event, Mux, PairingId};
use libfuzzer_sys::fuzz_target;

const PROTOCOLS: [&str; 3] = ["hypercore/alpha", "blind-relay", "chat"];
const MAX_CHANNELS: usize = 64;
const MAX_PENDING_OPENS: usize = 16;
const MAX_PENDING_BUFFER: usize = 64 * 1024;
const MAX_SEND_QUEUE: usize = 256 * 1024;

#[derive(Arbitrary, Debug)]
enum Op {
    /// A raw frame from the remote.
    Frame(Vec<u8>),
    /// A remote open of (protocol, id) with this remote id and handshake.
    RemoteOpen {
        id: u8,
        protocol: u8,
        key: u8,
        handshake: Vec<u8>,
    },
    RemoteClose {
        id: u8,
    },
    RemoteReject {
        id: u8,
    },
    /// A message from the remote on its channel `id`.
    RemoteMessage {
        id: u8,
        ty: u8,
        payload: Vec<u8>,
    },
    /// A batch of (remote id, item) pairs.
    RemoteBatch(Vec<(u8, Vec<u8>)>),
    Open {
        protocol: u8,
        key: u8,
    },
    Close(u8),
    Send {
        channel: u8,
        ty: u8,
        len: u16,
    },
    Pair {
        protocol: u8,
    },
    Unpair {
        protocol: u8,
    },
    Accept(u8),
    Reject(u8),
    Cork,
    Uncork,
    RemoteEnd,
}

fn frame(channel: u64, ty: u64, body: &[u8]) -> Bytes {
    let mut out = Vec::new();
    encode::uint(&mut out, channel);
    encode::uint(&mut out, ty);
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn drain(mux: &mut Mux, pairings: &mut Vec<PairingId>, channels: &mut Vec<corenet_mux::ChannelId>) {
    let mut n = 0;
    while let Some(f) = mux.poll_transmit() {
        n += 1;
        assert!(n < 100_000, "poll_transmit does not run dry");
        let (h, _) = decode_prefix::<Header>(&f).expect("the mux sent an unparsable frame");
        if h.channel == 0 {
            assert!(corenet_codec::decode_prefix::<ControlFrame<'_>>(&f).is_ok());
        }
    }
    let mut n = 0;
    while let Some(e) = mux.poll_event() {
        n += 1;
        assert!(n < 100_000, "poll_event does not run dry");
        match e {
            Event::PairRequest { pairing, .. } => pairings.push(pairing),
            Event::Opened { channel, .. } => channels.push(channel),
            _ => {}
        }
    }
    pairings.truncate(256);
    channels.truncate(256);
    assert!(mux.pending_opens() <= MAX_PENDING_OPENS);
    assert!(
        mux.held_bytes() <= MAX_PENDING_BUFFER,
        "held {} bytes",
        mux.held_bytes()
    );
    // One message may pass the limit before sends are refused.
    assert!(mux.queued_bytes() <= MAX_SEND_QUEUE + 128 * 1024);
    assert!(mux.channels().count() <= MAX_CHANNELS);
}

fuzz_target!(|ops: Vec<Op>| {
    let config = Config::default()
        .with_max_channels(MAX_CHANNELS)
        .with_max_pending_opens(MAX_PENDING_OPENS)
        .with_pause_threshold(16 * 1024)
        .with_max_pending_buffer(MAX_PENDING_BUFFER)
        .with_max_send_queue(MAX_SEND_QUEUE)
        .with_max_batch(4096);
    let mut mux = Mux::new(config);
    let mut pairings = Vec::new();
    let mut channels = Vec::new();
    let mut closed_by_error = false;
    let payload = vec![0xabu8; 65536];
    for op in ops.iter().take(512) {
        let remote = match op {
            Op::Frame(f) => Some(Bytes::copy_from_slice(f)),
            Op::RemoteOpen {
                id,
                protocol,
                key,
                handshake,
            } => {
                let open = Open {
                    local_id: u64::from(*id),
                    protocol: PROTOCOLS[usize::from(*protocol) % 3].into(),
                    id: &[*key % 4][..usize::from(*key % 4 != 0)],
                    handshake,
                };
                Some(Bytes::from(to_vec(&ControlFrame(Control::Open(open)))))
            }
            Op::RemoteClose { id } => Some(Bytes::from(to_vec(&ControlFrame(Control::Close {
                local_id: u64::from(*id),
            })))),
            Op::RemoteReject { id } => Some(Bytes::from(to_vec(&ControlFrame(Control::Reject {
                remote_id: u64::from(*id),
            })))),
            Op::RemoteMessage { id, ty, payload } => {
                Some(frame(u64::from(*id), u64::from(*ty), payload))
            }
            Op::RemoteBatch(items) => {
                let mut body = Vec::new();
                let mut last = None;
                for (id, item) in items.iter().take(64) {
                    if item.is_empty() {
                        continue;
                    }
                    if last != Some(*id) {
                        if last.is_some() {
                            body.push(0);
                        }
                        encode::uint(&mut body, u64::from(*id));
                        last = Some(*id);
                    }
                    encode::buffer(&mut body, item);
                }
                Some(frame(0, 0, &body))
            }
            Op::RemoteEnd => {
                mux.handle_close();
                None
            }
            Op::Open { protocol, key } => {
                let o = ChannelOptions::new(PROTOCOLS[usize::from(*protocol) % 3])
                    .with_id(vec![*key % 4; usize::from(*key % 4 != 0)])
                    .with_handshake(&b"hs"[..]);
                if let Ok(c) = mux.open_channel(&o) {
                    channels.push(c);
                }
                None
            }
            Op::Close(i) => {
                if !channels.is_empty() {
                    let c = channels[usize::from(*i) % channels.len()];
                    mux.close(c);
                }
                None
            }
            Op::Send { channel, ty, len } => {
                if !channels.is_empty() {
                    let c = channels[usize::from(*channel) % channels.len()];
                    let _ = mux.send(c, u64::from(*ty), &payload[..usize::from(*len)]);
                }
                None
            }
            Op::Pair { protocol } => {
                mux.pair(PROTOCOLS[usize::from(*protocol) % 3], None);
                None
            }
            Op::Unpair { protocol } => {
                mux.unpair(PROTOCOLS[usize::from(*protocol) % 3], None);
                None
            }
            Op::Accept(i) => {
                if !pairings.is_empty() {
                    let p = pairings[usize::from(*i) % pairings.len()];
                    if let Some(key) = mux.pairing_key(p).cloned() {
                        let o = ChannelOptions::for_key(key);
                        if let Ok(c) = mux.accept_pairing(p, &o) {
                            channels.push(c);
                        }
                    }
                }
                None
            }
            Op::Reject(i) => {
                if !pairings.is_empty() {
                    let p = pairings[usize::from(*i) % pairings.len()];
                    let _ = mux.reject_pairing(p);
                }
                None
            }
            Op::Cork => {
                mux.cork();
                None
            }
            Op::Uncork => {
                mux.uncork();
                None
            }
        };
        if let Some(f) = remote {
            let result = mux.handle_frame(f);
            if closed_by_error {
                assert!(result.is_ok(), "a closed mux still reads frames");
            }
            if result.is_err() {
                closed_by_error = true;
                assert!(mux.is_closed());
            }
        }
        drain(&mut mux, &mut pairings, &mut channels);
    }
});
