//! Corestore replication between two Rust stores over one in-memory secret stream: every
//! open core pairs, a core the remote asks for is opened from disk on demand, cores opened
//! later on either side join the connection.

use std::time::Duration;

use corenet_noise::{Config, KeyPair, SecretStream};
use corenet_replication::Corestore;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

async fn streams() -> (
    SecretStream<tokio::io::DuplexStream>,
    SecretStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client = tokio::spawn(async move {
        SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
    });
    let server = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    (client.await.unwrap().unwrap(), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_replicate_all_to_all() {
    let dir = tempfile::tempdir().unwrap();
    let alice = Corestore::open(dir.path()).unwrap();
    let bob = Corestore::in_memory();

    // Alice has three cores; "stored" is on disk but not open when the connection starts.
    let open = alice.get("open").unwrap();
    open.append([&b"o0"[..], &b"o1"[..]]).unwrap();
    let stored_key = {
        let stored = alice.get("stored").unwrap();
        stored.append([&b"s0"[..], &b"s1"[..], &b"s2"[..]]).unwrap();
        stored.key()
    };
    // Bob's own core, which Alice will open by key after the connection is up.
    let bobs = bob.get("bobs").unwrap();
    bobs.append([&b"b0"[..]]).unwrap();

    // Bob opens Alice's open core before connecting.
    let open_copy = bob.get_by_key(open.key()).unwrap();

    let (sa, sb) = streams().await;
    let ma = alice.replicate_stream(sa).unwrap();
    let mb = bob.replicate_stream(sb).unwrap();

    assert_eq!(
        timeout(WAIT, open_copy.fetch(1)).await.unwrap().unwrap(),
        &b"o1"[..]
    );

    // A core Bob opens now asks Alice, who opens it from disk on demand.
    let stored_copy = bob.get_by_key(stored_key).unwrap();
    assert_eq!(
        timeout(WAIT, stored_copy.fetch(2)).await.unwrap().unwrap(),
        &b"s2"[..]
    );

    // The other way: Alice opens Bob's core by key after the connection started.
    let bobs_copy = alice.get_by_key(bobs.key()).unwrap();
    assert_eq!(
        timeout(WAIT, bobs_copy.fetch(0)).await.unwrap().unwrap(),
        &b"b0"[..]
    );

    // A core only one side has pairs with nothing and harms nothing.
    let lonely = bob.get_by_key(corenet_codec::PublicKey([7; 32])).unwrap();
    assert!(timeout(Duration::from_millis(200), lonely.fetch(0))
        .await
        .is_err());

    // Live: appends reach the other side.
    open.append([&b"o2"[..]]).unwrap();
    timeout(WAIT, open_copy.wait_for_length(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timeout(WAIT, open_copy.fetch(2)).await.unwrap().unwrap(),
        &b"o2"[..]
    );

    ma.close();
    mb.close();
    timeout(WAIT, ma.closed()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_cores_over_one_connection() {
    let alice = Corestore::in_memory();
    let bob = Corestore::in_memory();
    let mut copies = Vec::new();
    for i in 0..20u8 {
        let c = alice.get(&format!("core-{i}")).unwrap();
        c.append((0..=i).map(|j| vec![j; 10])).unwrap();
        copies.push((bob.get_by_key(c.key()).unwrap(), i));
    }
    let (sa, sb) = streams().await;
    let _ma = alice.replicate_stream(sa).unwrap();
    let _mb = bob.replicate_stream(sb).unwrap();
    for (copy, i) in &copies {
        let mut d = copy.download(0..u64::from(*i) + 1);
        timeout(WAIT, d.done()).await.unwrap().unwrap();
        assert_eq!(copy.get(u64::from(*i)).unwrap().unwrap(), vec![*i; 10]);
    }
}
