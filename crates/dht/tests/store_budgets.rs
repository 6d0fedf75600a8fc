//! The record store's budgets seen from the wire (docs/dos-budgets.md §2): one persistent
//! hyperdht core, driven sans-IO with hand-made LOOKUP and signed ANNOUNCE requests.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use corenet_codec::{decode_prefix, to_bytes};
use corenet_dht::hyper::crypto::{sign_announce, Namespaces};
use corenet_dht::hyper::messages::{Announce, LookupReply, PeerRecord, MAX_RELAY_ADDRESSES};
use corenet_dht::hyper::store::{StoreLimits, LOOKUP_RECORDS};
use corenet_dht::hyper::{command, HyperConfig, HyperDht};
use corenet_dht::rpc::message::{Message, Request, Response};
use corenet_dht::rpc::{Config, SocketKind};
use corenet_noise::KeyPair;

const NODE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 49737);
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 40_000);

/// A persistent node that stores records (no network around it).
fn storing_node(now: Instant, store: StoreLimits) -> HyperDht {
    let rpc = Config::default()
        .with_public_address(NODE)
        .with_firewalled(false)
        .with_ephemeral(Some(false))
        .with_seed([3; 32]);
    let dht = HyperDht::new(
        HyperConfig {
            rpc,
            store,
            ..Default::default()
        },
        now,
    );
    assert!(dht.node().is_persistent());
    dht
}

/// Sends `req` from [`PEER`] and returns the node's answer to it, if any.
fn ask(dht: &mut HyperDht, now: Instant, req: Request) -> Option<Response> {
    dht.handle_datagram(now, SocketKind::Server, PEER, &req.to_bytes());
    let mut answer = None;
    while let Some(t) = dht.poll_transmit() {
        if let (PEER, Ok(Message::Response(r))) = (t.to, Message::decode(&t.bytes)) {
            if r.tid == req.tid {
                answer = Some(r);
            }
        }
    }
    answer
}

fn lookup(dht: &mut HyperDht, now: Instant, tid: u16, topic: [u8; 32]) -> Response {
    let req = Request {
        tid,
        to: NODE,
        command: command::LOOKUP,
        target: Some(topic),
        ..Default::default()
    };
    ask(dht, now, req).expect("a persistent node answers LOOKUP")
}

fn records(reply: &Response) -> LookupReply {
    reply
        .value
        .as_ref()
        .map(|v| {
            decode_prefix::<LookupReply>(v)
                .expect("a LOOKUP value decodes")
                .0
        })
        .unwrap_or_default()
}

/// A signed ANNOUNCE of `peer` under `topic` (token fetched with a LOOKUP first); returns
/// whether it was acknowledged.
fn announce(
    dht: &mut HyperDht,
    now: Instant,
    tid: u16,
    topic: [u8; 32],
    kp: &KeyPair,
    peer: PeerRecord,
) -> bool {
    let token = lookup(dht, now, tid, topic)
        .token
        .expect("a LOOKUP reply carries a token");
    let node_id = dht.node().id().0;
    let signature = sign_announce(
        kp,
        &Namespaces::new().announce,
        &topic,
        &node_id,
        &token,
        &peer,
        None,
    );
    let ann = Announce {
        peer: Some(peer),
        refresh: None,
        signature: Some(signature),
        bump: 0,
    };
    let req = Request {
        tid: tid.wrapping_add(1),
        to: NODE,
        token: Some(token),
        command: command::ANNOUNCE,
        target: Some(topic),
        value: Some(to_bytes(&ann)),
        ..Default::default()
    };
    ask(dht, now, req).is_some_and(|r| r.error == 0)
}

fn key_pair(i: u32) -> KeyPair {
    let mut seed = [0x11; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    KeyPair::from_seed(seed)
}

fn relay(i: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 7, 0, 1), 1000 + i)
}

#[test]
fn a_record_announced_with_10_relays_is_stored_with_3() {
    let now = Instant::now();
    let mut dht = storing_node(now, StoreLimits::default());
    let topic = [0x42; 32];
    let kp = key_pair(1);
    let relays: Vec<SocketAddrV4> = (0..10).map(relay).collect();
    let peer = PeerRecord {
        public_key: kp.public_key(),
        relay_addresses: relays.clone(),
    };
    assert!(announce(&mut dht, now, 10, topic, &kp, peer));
    let got = records(&lookup(&mut dht, now, 20, topic));
    assert_eq!(got.peers.len(), 1);
    assert_eq!(got.peers[0].public_key, kp.public_key());
    assert_eq!(
        got.peers[0].relay_addresses,
        relays[..MAX_RELAY_ADDRESSES].to_vec()
    );
}

#[test]
fn an_honest_record_survives_100_sybil_announces_and_no_lookup_reply_carries_more_than_20() {
    let now = Instant::now();
    let mut dht = storing_node(now, StoreLimits::default());
    let topic = [0x43; 32];
    let honest = key_pair(0);
    let record = |kp: &KeyPair| PeerRecord {
        public_key: kp.public_key(),
        relay_addresses: vec![relay(0)],
    };
    assert!(announce(&mut dht, now, 0, topic, &honest, record(&honest)));
    for i in 1..=100u32 {
        let kp = key_pair(i);
        assert!(announce(
            &mut dht,
            now,
            (i * 2) as u16,
            topic,
            &kp,
            record(&kp)
        ));
    }
    assert_eq!(dht.store().record_count(), 101);
    let mut honest_seen = 0;
    let mut keys = std::collections::HashSet::new();
    for tid in 0..100u16 {
        let reply = lookup(&mut dht, now, 1000 + tid, topic);
        let value = reply.value.clone().expect("records");
        // The wire: a uint count (20 fits one byte), then the records.
        assert_eq!(value[0] as usize, LOOKUP_RECORDS);
        let got = records(&reply);
        assert_eq!(got.peers.len(), LOOKUP_RECORDS);
        honest_seen += usize::from(
            got.peers
                .iter()
                .any(|p| p.public_key == honest.public_key()),
        );
        keys.extend(got.peers.iter().map(|p| p.public_key));
    }
    assert!(honest_seen > 0, "the honest record never came back");
    assert!(honest_seen < 100, "the sample is not random");
    assert_eq!(keys.len(), 101);
}

#[test]
fn an_announce_beyond_the_total_record_cap_is_acknowledged_and_not_stored() {
    let now = Instant::now();
    let mut dht = storing_node(
        now,
        StoreLimits {
            max_records: 3,
            ..Default::default()
        },
    );
    let kp = key_pair(7);
    let peer = PeerRecord {
        public_key: kp.public_key(),
        relay_addresses: vec![],
    };
    for t in 0..4u8 {
        // JS never refuses (it evicts a generation), and we answer as it does: the
        // announcer cannot tell the fourth apart (gap G9, the total cap).
        assert!(announce(
            &mut dht,
            now,
            u16::from(t) * 2,
            [t; 32],
            &kp,
            peer.clone()
        ));
    }
    assert_eq!(dht.store().record_count(), 3);
    assert_eq!(records(&lookup(&mut dht, now, 100, [2; 32])).peers.len(), 1);
    assert_eq!(lookup(&mut dht, now, 101, [3; 32]).value, None);
}
