//! The `hypercore/alpha` channel messages against hypercore 11.37.1's own encoders
//! (`tests/vectors/replicator-vectors.json`, made by
//! `tests/interop/scripts/gen-replicator-vectors.js`): every value encodes to the JS bytes
//! and the JS bytes decode to the value, through [`Message::decode`] as the replicator reads
//! them. The replication capability matches `caps.replicate` in both roles.

use bytes::Bytes;
use corenet_codec::to_vec;
use corenet_replication::caps::replication_capability;
use corenet_replication::messages::{
    BitfieldMessage, Cancel, Extension, Handshake, Message, NoData, Range, Sync, Want,
};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/replicator-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("replicator-vectors.json")).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn b(v: &Value) -> bool {
    v.as_bool().unwrap()
}

/// Encodes `msg`, compares with the JS bytes, and decodes the JS bytes as type `ty`.
fn check(ty: u64, msg: Message, js: &Value) {
    let bytes = unhex(js);
    assert_eq!(hex::encode(to_vec(&msg)), hex::encode(&bytes), "{msg:?}");
    let back = Message::decode(ty, &Bytes::from(bytes)).unwrap().unwrap();
    assert_eq!(back, msg);
}

#[test]
fn messages_match_js() {
    let v = vectors();
    assert_eq!(v["hypercore"], "11.37.1");
    let mut n = 0;
    for s in v["sync"].as_array().unwrap() {
        let m = Sync {
            fork: u(&s["fork"]),
            length: u(&s["length"]),
            remote_length: u(&s["remoteLength"]),
            can_upgrade: b(&s["canUpgrade"]),
            uploading: b(&s["uploading"]),
            downloading: b(&s["downloading"]),
            has_manifest: b(&s["hasManifest"]),
            allow_push: b(&s["allowPush"]),
        };
        check(0, Message::Sync(m), &s["bytes"]);
        n += 1;
    }
    for c in v["cancel"].as_array().unwrap() {
        let m = Cancel {
            request: u(&c["request"]),
        };
        check(2, Message::Cancel(m), &c["bytes"]);
        n += 1;
    }
    for c in v["noData"].as_array().unwrap() {
        let m = NoData {
            request: u(&c["request"]),
            reason: u(&c["reason"]),
        };
        check(4, Message::NoData(m), &c["bytes"]);
        n += 1;
    }
    for (key, ty) in [("want", 5), ("unwant", 6)] {
        for w in v[key].as_array().unwrap() {
            let m = Want {
                start: u(&w["start"]),
                length: u(&w["length"]),
                any: b(&w["any"]),
            };
            let msg = if ty == 5 {
                Message::Want(m)
            } else {
                Message::Unwant(m)
            };
            check(ty, msg, &w["bytes"]);
            n += 1;
        }
    }
    for r in v["range"].as_array().unwrap() {
        let m = Range {
            drop: b(&r["drop"]),
            start: u(&r["start"]),
            length: u(&r["length"]),
        };
        check(8, Message::Range(m), &r["bytes"]);
        n += 1;
    }
    for r in v["bitfield"].as_array().unwrap() {
        let m = BitfieldMessage {
            start: u(&r["start"]),
            bitfield: r["bitfield"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| u(w) as u32)
                .collect(),
        };
        check(7, Message::Bitfield(m), &r["bytes"]);
        n += 1;
    }
    for e in v["extension"].as_array().unwrap() {
        let m = Extension {
            name: e["name"].as_str().unwrap().to_string(),
            message: Bytes::from(unhex(&e["message"])),
        };
        check(9, Message::Extension(m), &e["bytes"]);
        n += 1;
    }
    assert!(n > 50);
}

#[test]
fn handshake_and_capability_match_js() {
    let v = vectors();
    for h in v["handshake"].as_array().unwrap() {
        let m = Handshake {
            seeks: b(&h["seeks"]),
            capability: unhex(&h["capability"]).try_into().unwrap(),
        };
        let bytes = unhex(&h["bytes"]);
        assert_eq!(to_vec(&m), bytes);
        assert_eq!(corenet_codec::decode_exact::<Handshake>(&bytes).unwrap(), m);
    }
    let c = &v["capability"];
    let hh = unhex(&c["handshakeHash"]);
    let key: [u8; 32] = unhex(&c["key"]).try_into().unwrap();
    assert_eq!(
        hex::encode(replication_capability(true, &key, &hh)),
        c["initiator"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(replication_capability(false, &key, &hh)),
        c["responder"].as_str().unwrap()
    );
}

#[test]
fn optional_trailing_flags_decode_like_js() {
    // JS decodes a noData without its flags, and a want without flags, as reason 0 / any
    // false; corenet does the same (and never writes the short forms itself).
    let nd = Message::decode(4, &Bytes::from_static(&[7]))
        .unwrap()
        .unwrap();
    assert_eq!(
        nd,
        Message::NoData(NoData {
            request: 7,
            reason: 0
        })
    );
    let w = Message::decode(5, &Bytes::from_static(&[1, 2]))
        .unwrap()
        .unwrap();
    assert_eq!(
        w,
        Message::Want(Want {
            start: 1,
            length: 2,
            any: false
        })
    );
    // Unknown types are not an error.
    assert!(Message::decode(10, &Bytes::from_static(&[1]))
        .unwrap()
        .is_none());
    // Truncated required fields are.
    assert!(Message::decode(0, &Bytes::from_static(&[1, 2])).is_err());
    assert!(Message::decode(7, &Bytes::from_static(&[0, 2, 1, 2, 3, 4])).is_err());
}
