//! protomux frames (`corenet_mux::wire`): the frame header, control messages (open, reject,
//! close, unknown) and batch bodies, as every secret-stream message is parsed.
//!
//! Invariants: no panic; every `uint` read stays within 2^53 - 1 (JS's limit); a decoded
//! control frame re-encodes to bytes that decode to the same value and re-encode identically;
//! batch iteration ends after an error, its items lie inside the body, only the last item can
//! be empty (a length running past the end, cut as JS cuts it), and re-encoding the items
//! gives a batch that iterates to the same items.
#![no_main]

use corenet_codec::{decode_exact, decode_prefix, to_vec, Encode};
use corenet_mux::wire::{Batch, BatchItems, Control, ControlFrame, Header, MAX_SAFE_INTEGER};
use libfuzzer_sys::fuzz_target;

fn check_batch(body: &[u8]) {
    let mut items = Vec::new();
    let mut iter = BatchItems::new(body);
    let mut failed = false;
    for item in iter.by_ref().take(1 << 16) {
        match item {
            Ok(i) => {
                assert!(i.channel <= MAX_SAFE_INTEGER);
                let start = i.data.as_ptr() as usize - body.as_ptr() as usize;
                assert!(start + i.data.len() <= body.len());
                items.push(i);
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if failed {
        assert!(
            iter.next().is_none(),
            "batch iteration goes on after an error"
        );
        return;
    }
    if let Some(pos) = items.iter().position(|i| i.data.is_empty()) {
        assert_eq!(pos, items.len() - 1, "an empty batch item before the end");
        items.pop();
    }
    let batch = Batch(items.clone());
    let bytes = to_vec(&batch);
    assert_eq!(bytes.len(), batch.encoded_len());
    let again: Vec<_> = BatchItems::new(&bytes)
        .collect::<Result<_, _>>()
        .expect("a re-encoded batch iterates");
    assert_eq!(again, items);
}

fuzz_target!(|data: &[u8]| {
    let Ok((header, used)) = decode_prefix::<Header>(data) else {
        return;
    };
    assert!(header.channel <= MAX_SAFE_INTEGER && header.message_type <= MAX_SAFE_INTEGER);
    let h = to_vec(&header);
    assert_eq!(decode_exact::<Header>(&h), Ok(header));
    assert!(h.len() <= used);
    if header.channel != 0 {
        return;
    }
    let Ok(ControlFrame(control)) = decode_exact::<ControlFrame<'_>>(data).or_else(|_| {
        // Reject and close ignore trailing bytes: read them as the mux does.
        let mut dec = corenet_codec::Decoder::new(&data[used..]);
        Control::decode_body(header.message_type, &mut dec).map(ControlFrame)
    }) else {
        return;
    };
    if let Control::Open(o) = &control {
        assert!(o.local_id <= MAX_SAFE_INTEGER);
    }
    let frame = ControlFrame(control.clone());
    let bytes = to_vec(&frame);
    assert_eq!(bytes.len(), frame.encoded_len());
    let back = decode_exact::<ControlFrame<'_>>(&bytes).expect("re-encoded control frame");
    assert_eq!(back.0, control);
    assert_eq!(to_vec(&back), bytes);
    if let Control::Batch(body) = control {
        check_batch(body);
    }
});
