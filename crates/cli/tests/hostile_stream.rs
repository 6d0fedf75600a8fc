//! A running seeder (`corenet share`) attacked where connections begin, black-box over real
//! sockets:
//! - PEER_HANDSHAKE requests sent straight to its socket carrying invalid Noise: random
//!   bytes, all-zero and low-order ephemeral points, a valid first message with its
//!   ciphertext flipped, valid Noise around a garbage or hostile payload, 60 KB messages;
//! - half-open connections: hundreds of valid handshakes from fresh keys whose UDX stream
//!   never answers (sent straight to the seeder, so it connects to their source at once and
//!   holds each until UDX gives up on it; the relayed, punch-waiting kind is capped by the
//!   DHT actor, `crates/dht/tests/actor_budgets.rs`);
//! - connections that complete and then send nothing, or announce a 16 MiB secret-stream
//!   frame and send a little of it.
//!
//! After each: the seeder is alive, a legitimate `corenet get` downloads the file intact,
//! and its resident memory grew by less than `common::hostile::MAX_GROWTH_KIB`.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::Bytes;
use common::hostile::{client, hex32, rng, runtime, Lab, Raw, LOCALHOST, SHARER_SEED};
use common::udp_ports;
use corenet_codec::{to_bytes, to_vec};
use corenet_dht::hyper::crypto::{server_target, Namespaces};
use corenet_dht::hyper::dht::command;
use corenet_dht::hyper::messages::{firewall, mode, HandshakeMessage, NoisePayload, UdxInfo};
use corenet_dht::rpc::message::Request;
use corenet_noise::{Handshake, HandshakeOptions, KeyPair, Pattern};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};
use tokio::io::AsyncWriteExt;

/// Low-order points of Curve25519 (the all-zero point among them): a DH with any of them
/// gives a known shared secret.
const LOW_ORDER: [[u8; 32]; 3] = [
    [0; 32],
    {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
];

fn sharer_key() -> KeyPair {
    KeyPair::from_seed(hex32(SHARER_SEED))
}

/// A first IK message to the seeder from `from`, carrying `payload`.
fn first_message(from: &KeyPair, payload: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut hs = Handshake::new(
        Pattern::IK,
        true,
        from,
        HandshakeOptions {
            prologue: Namespaces::new().peer_handshake.to_vec(),
            remote_public_key: Some(sharer_key().public_key()),
            rng_seed: Some(rng.gen()),
        },
    )
    .unwrap();
    hs.write_message(payload).unwrap()
}

/// What a real client says: version 1, its address, a UDX stream id, secret-stream 1.
fn client_payload(raw: &Raw, udx_id: u64) -> Vec<u8> {
    to_vec(&NoisePayload {
        firewall: firewall::OPEN,
        addresses4: vec![raw.addr],
        udx: Some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: udx_id,
            seq: 0,
        }),
        secret_stream: Some(1),
        ..NoisePayload::default()
    })
}

/// Sends a PEER_HANDSHAKE (FROM_CLIENT) with `noise` straight to `to`; the seeder's
/// answer, if any, as a handshake message.
fn handshake(raw: &mut Raw, to: SocketAddrV4, noise: Vec<u8>) -> Option<HandshakeMessage> {
    let msg = HandshakeMessage {
        mode: mode::FROM_CLIENT,
        noise: Bytes::from(noise),
        peer_address: None,
        relay_address: None,
    };
    let reply = raw.ask_within(
        to,
        Request {
            command: command::PEER_HANDSHAKE,
            target: Some(server_target(&sharer_key().public_key())),
            value: Some(to_bytes(&msg)),
            ..Request::default()
        },
        Duration::from_millis(200),
    )?;
    corenet_codec::decode_prefix::<HandshakeMessage>(reply.value.as_ref()?)
        .ok()
        .map(|(m, _)| m)
}

fn sharer_sockets(lab: &Lab) -> Vec<SocketAddrV4> {
    udp_ports(lab.sharer.pid())
        .into_iter()
        .map(|p| SocketAddrV4::new(LOCALHOST, p))
        .collect()
}

#[test]
fn invalid_noise_handshakes_get_no_connection() {
    let mut rng = rng("noise");
    let mut lab = Lab::new();
    lab.legit_get();
    let before = lab.rss();
    let sockets = sharer_sockets(&lab);
    let mut raw = Raw::new();
    let mut answered = 0usize;
    let mut sent = 0usize;
    for round in 0..60usize {
        let to = sockets[round % sockets.len()];
        let kp = KeyPair::generate();
        let valid = first_message(&kp, &client_payload(&raw, rng.gen()), &mut rng);
        let invalid: Vec<Vec<u8>> = vec![
            {
                let len = rng.gen_range(0..200);
                let mut v = vec![0u8; len];
                rng.fill_bytes(&mut v);
                v
            },
            {
                let mut v = valid.clone();
                v[..32].copy_from_slice(&LOW_ORDER[round % LOW_ORDER.len()]);
                v
            },
            {
                let mut v = valid.clone();
                let i = rng.gen_range(32..v.len());
                v[i] ^= 1 << rng.gen_range(0..8);
                v
            },
            valid[..rng.gen_range(0..valid.len())].to_vec(),
            {
                let mut v = vec![0u8; 60_000];
                rng.fill_bytes(&mut v);
                v[..valid.len()].copy_from_slice(&valid);
                v
            },
        ];
        for noise in invalid {
            sent += 1;
            if let Some(m) = handshake(&mut raw, to, noise) {
                // The seeder may answer with closer nodes, never with Noise.
                assert!(
                    m.noise.is_empty(),
                    "the seeder answered an invalid handshake"
                );
                answered += 1;
            }
        }
        // Valid Noise around payloads that are not a client's: garbage, another version,
        // an error, no UDX stream, no secret stream.
        let mut garbage = vec![0u8; rng.gen_range(0..300)];
        rng.fill_bytes(&mut garbage);
        let hostile = [
            garbage,
            to_vec(&NoisePayload {
                version: 2,
                ..NoisePayload::default()
            }),
            to_vec(&NoisePayload {
                error: 1,
                ..NoisePayload::default()
            }),
            to_vec(&NoisePayload {
                firewall: firewall::OPEN,
                addresses4: vec![raw.addr],
                ..NoisePayload::default()
            }),
        ];
        for payload in hostile {
            sent += 1;
            let noise = first_message(&KeyPair::generate(), &payload, &mut rng);
            if handshake(&mut raw, to, noise).is_some() {
                answered += 1;
            }
        }
    }
    println!("invalid handshakes: {sent} sent, {answered} answered without a connection");
    lab.check_after("invalid handshakes", before);
}

#[test]
fn half_open_handshakes_leave_the_seeder_serving() {
    let mut rng = rng("half-open");
    let mut lab = Lab::new();
    lab.legit_get();
    let before = lab.rss();
    let sockets = sharer_sockets(&lab);
    let mut raw = Raw::new();
    let mut accepted = 0usize;
    const HALF_OPEN: usize = 400;
    for i in 0..HALF_OPEN {
        let kp = KeyPair::generate();
        let noise = first_message(&kp, &client_payload(&raw, rng.gen()), &mut rng);
        if let Some(m) = handshake(&mut raw, sockets[i % sockets.len()], noise) {
            if !m.noise.is_empty() {
                accepted += 1;
            }
        }
    }
    println!("half-open: {accepted} of {HALF_OPEN} handshakes answered, none followed by a packet");
    assert!(accepted > 0, "the seeder answered no valid handshake");
    lab.check_after("half-open handshakes", before);
}

#[test]
fn silent_and_oversized_frame_connections_leave_the_seeder_serving() {
    let mut lab = Lab::new();
    lab.legit_get();
    let before = lab.rss();
    let rt = runtime();
    let boot = lab.boot_addr();
    let sharer = sharer_key().public_key();
    // Held open for the rest of the test.
    let _held = rt.block_on(async {
        let dht = client(boot).await;
        let mut held = Vec::new();
        for i in 0..24 {
            let kp = KeyPair::generate();
            let mut c = tokio::time::timeout(
                Duration::from_secs(20),
                dht.connect(&kp, sharer, Vec::new()),
            )
            .await
            .expect("connect timed out")
            .expect("connect");
            if i % 2 == 1 {
                // Our header goes out with the first frame; then a frame that claims
                // 16 MiB - 1 of which 64 KiB arrive.
                c.stream.send_keepalive().await.unwrap();
                let raw = c.stream.get_mut();
                raw.write_all(&[0xff, 0xff, 0xff]).await.unwrap();
                raw.write_all(&[0x5a; 64 * 1024]).await.unwrap();
                raw.flush().await.unwrap();
            }
            held.push(c);
        }
        (dht, held)
    });
    lab.check_after("silent and oversized-frame connections", before);
}
