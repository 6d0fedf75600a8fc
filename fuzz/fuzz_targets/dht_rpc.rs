//! dht-rpc datagrams (`corenet_dht::rpc::Message`): requests and responses as every DHT socket
//! receives them from anyone.
//!
//! Invariants: no panic; `decode` and `decode_bytes` agree; a decoded message re-encodes to
//! bytes that decode to the same message and re-encode identically; the closer-nodes list
//! stays within `MAX_CLOSER_NODES`.
#![no_main]

use bytes::Bytes;
use corenet_dht::rpc::message::MAX_CLOSER_NODES;
use corenet_dht::rpc::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let borrowed = Message::decode(data);
    let shared = Message::decode_bytes(&Bytes::copy_from_slice(data));
    assert_eq!(borrowed, shared, "decode and decode_bytes disagree");
    let Ok(msg) = borrowed else { return };
    if let Message::Response(r) = &msg {
        assert!(r.closer_nodes.len() <= MAX_CLOSER_NODES);
    }
    let bytes = msg.to_bytes();
    assert!(
        bytes.len() <= data.len() + 2,
        "re-encoding grew: {} -> {}",
        data.len(),
        bytes.len()
    );
    let back = Message::decode(&bytes).expect("re-encoded message does not decode");
    assert_eq!(back, msg, "decode(encode(m)) != m");
    assert_eq!(back.to_bytes(), bytes, "encoding is not canonical");
});
