//! The networker facade between corenet peers on a local testnet: replication over the one
//! connection per peer, peer-add / peer-remove exactly once, extensions (including a message
//! sent from the peer-add handler), configure / leave, persistence across restarts, and a
//! corrupt configuration file moved aside.
//!
//! The tests run on the default `#[tokio::test]` runtime (current thread): the facade works
//! from a plain tokio program that never sees actix.

use std::time::Duration;

use corenet::extensions::ExtensionOptions;
use corenet::{Configure, Corestore, Networker, NetworkerEvent, Testnet};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

async fn networker(testnet: &Testnet, store: Corestore) -> Networker {
    Networker::builder(store)
        .bootstrap(testnet.bootstrap.clone())
        .build()
        .await
        .expect("networker")
}

/// The next peer event (topic events are skipped).
async fn next_peer_event(events: &mut corenet::Events) -> NetworkerEvent {
    loop {
        let ev = timeout(WAIT, events.recv())
            .await
            .expect("a peer event in time")
            .expect("events open");
        if matches!(
            ev,
            NetworkerEvent::PeerAdd(_) | NetworkerEvent::PeerRemove(_)
        ) {
            return ev;
        }
    }
}

/// No further peer event within `d`.
async fn no_peer_event(events: &mut corenet::Events, d: Duration) {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return,
            Ok(Some(NetworkerEvent::PeerAdd(p))) => {
                panic!("unexpected PeerAdd {}", p.remote_public_key)
            }
            Ok(Some(NetworkerEvent::PeerRemove(p))) => {
                panic!("unexpected PeerRemove {}", p.remote_public_key)
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("networker events ended"),
        }
    }
}

#[tokio::test]
async fn two_peers_replicate_and_chat_over_one_connection() {
    let testnet = Testnet::new(3, 0).await.unwrap();

    let store_a = Corestore::in_memory();
    let core = store_a.get("notes").unwrap();
    core.append([&b"one"[..], &b"two"[..], &b"three"[..]])
        .unwrap();
    let a = networker(&testnet, store_a).await;
    assert!(
        a.persistence().is_none(),
        "in-memory stores are not persisted"
    );
    let chat_a = a
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .unwrap();
    let mut events_a = a.events();

    let store_b = Corestore::in_memory();
    let copy = store_b.get_by_key(core.key()).unwrap();
    let b = networker(&testnet, store_b).await;
    let chat_b = b
        .register_extension("chat", ExtensionOptions::utf8())
        .await
        .unwrap();
    let mut inbox_b = chat_b.messages();
    let mut inbox_a = chat_a.messages();
    let mut events_b = b.events();

    // Both announce and look up: they find each other twice, but keep one connection.
    a.configure(core.discovery_key(), Configure::default())
        .await
        .unwrap();
    b.configure(copy.discovery_key(), Configure::default())
        .await
        .unwrap();
    assert!(a.joined(&core.discovery_key()));

    // A message sent from the peer-add handler is delivered (hypercore #256).
    let NetworkerEvent::PeerAdd(b_seen_by_a) = next_peer_event(&mut events_a).await else {
        panic!("expected PeerAdd");
    };
    assert_eq!(b_seen_by_a.remote_public_key, b.public_key());
    chat_a
        .send("hello from a", b_seen_by_a.extension_peer())
        .unwrap();
    let (msg, from) = timeout(WAIT, inbox_b.recv()).await.unwrap().unwrap();
    assert_eq!(msg, "hello from a");
    assert_eq!(*from.public_key(), a.public_key());

    let NetworkerEvent::PeerAdd(a_seen_by_b) = next_peer_event(&mut events_b).await else {
        panic!("expected PeerAdd");
    };
    assert_eq!(a_seen_by_b.remote_public_key, a.public_key());
    chat_b.send("hello from b", &from).unwrap();
    let (msg, _) = timeout(WAIT, inbox_a.recv()).await.unwrap().unwrap();
    assert_eq!(msg, "hello from b");

    // Replication runs over the same connection.
    let block = timeout(WAIT, copy.fetch(2)).await.unwrap().unwrap();
    assert_eq!(&block[..], b"three");
    core.append([&b"four"[..]]).unwrap();
    timeout(WAIT, copy.wait_for_length(4))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &timeout(WAIT, copy.fetch(3)).await.unwrap().unwrap()[..],
        b"four"
    );

    // One peer each, readable synchronously, and no second PeerAdd for the duplicate dial.
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
    assert_eq!(a.peers()[0].remote_public_key, b.public_key());
    assert_eq!(a.peers()[0].remote_address.ip().octets(), [127, 0, 0, 1]);
    assert_eq!(chat_a.broadcast("to all").unwrap(), 1);
    let (msg, _) = timeout(WAIT, inbox_b.recv()).await.unwrap().unwrap();
    assert_eq!(msg, "to all");
    no_peer_event(&mut events_a, Duration::from_millis(500)).await;

    // B closes: B's own subscription reports A gone and then ends; A sees exactly one
    // PeerRemove.
    b.close().await.unwrap();
    let mut b_rest = Vec::new();
    while let Some(ev) = timeout(WAIT, events_b.recv()).await.unwrap() {
        if matches!(
            ev,
            NetworkerEvent::PeerAdd(_) | NetworkerEvent::PeerRemove(_)
        ) {
            b_rest.push(ev);
        }
    }
    assert!(
        matches!(&b_rest[..], [NetworkerEvent::PeerRemove(p)] if p.remote_public_key == a.public_key()),
        "B's events after its close: {b_rest:?}"
    );
    let NetworkerEvent::PeerRemove(gone) = next_peer_event(&mut events_a).await else {
        panic!("expected PeerRemove");
    };
    assert_eq!(gone.remote_public_key, b.public_key());
    assert!(a.peers().is_empty());
    no_peer_event(&mut events_a, Duration::from_millis(500)).await;
    assert!(matches!(
        b.configure(copy.discovery_key(), Configure::default())
            .await,
        Err(corenet::Error::Closed)
    ));
    a.close().await.unwrap();
    testnet.destroy().await;
}

#[tokio::test]
async fn configure_leave_and_aliases() {
    let testnet = Testnet::new(3, 0).await.unwrap();
    let net = networker(&testnet, Corestore::in_memory()).await;
    let dk = Corestore::in_memory().get("x").unwrap().discovery_key();

    net.join(dk).await.unwrap();
    assert!(net.joined(&dk));
    assert!(net.flushed(&dk).await);
    let c = net.status(&dk).unwrap();
    assert!(c.announce && c.lookup);
    assert_eq!(net.statuses().len(), 1);

    // Changing the options keeps the topic.
    let lookup_only = Configure::lookup_only();
    net.configure(dk, lookup_only).await.unwrap();
    assert_eq!(net.status(&dk), Some(lookup_only));

    // Both false leaves; `leave` is the alias.
    net.configure(
        dk,
        Configure {
            announce: false,
            lookup: false,
            flush: true,
        },
    )
    .await
    .unwrap();
    assert!(!net.joined(&dk));
    net.join(dk).await.unwrap();
    net.leave(dk).await.unwrap();
    assert!(!net.joined(&dk));
    assert!(net.statuses().is_empty());
    net.close().await.unwrap();
    testnet.destroy().await;
}

#[tokio::test]
async fn restart_resumes_identity_and_configuration() {
    let testnet = Testnet::new(3, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (announced, looked_up, left) = {
        let s = Corestore::in_memory();
        (
            s.get("a").unwrap().discovery_key(),
            s.get("b").unwrap().discovery_key(),
            s.get("c").unwrap().discovery_key(),
        )
    };

    let first_key = {
        let net = networker(&testnet, Corestore::open(dir.path()).unwrap()).await;
        let (file, recovered) = net.persistence().expect("disk stores are persisted");
        assert!(file.starts_with(dir.path()));
        assert!(recovered.is_none());
        net.configure(announced, Configure::announce_only())
            .await
            .unwrap();
        net.configure(looked_up, Configure::lookup_only())
            .await
            .unwrap();
        net.join(left).await.unwrap();
        net.leave(left).await.unwrap();
        let key = net.public_key();
        net.close().await.unwrap();
        key
    };

    // The restarted process has the same key and configuration, and is findable again.
    let net = networker(&testnet, Corestore::open(dir.path()).unwrap()).await;
    assert_eq!(net.public_key(), first_key);
    let mut restored: Vec<_> = net
        .statuses()
        .into_iter()
        .map(|(dk, c)| (dk, c.announce, c.lookup))
        .collect();
    restored.sort();
    let mut expected = vec![(announced, true, false), (looked_up, false, true)];
    expected.sort();
    assert_eq!(restored, expected);

    let finder = networker(&testnet, Corestore::in_memory()).await;
    let mut events = finder.events();
    finder
        .configure(
            announced,
            Configure {
                announce: false,
                lookup: true,
                flush: true,
            },
        )
        .await
        .unwrap();
    let NetworkerEvent::PeerAdd(p) = next_peer_event(&mut events).await else {
        panic!("expected PeerAdd");
    };
    assert_eq!(p.remote_public_key, first_key);

    finder.close().await.unwrap();
    net.close().await.unwrap();
    testnet.destroy().await;
}

#[tokio::test]
async fn a_corrupt_configuration_file_is_moved_aside_not_discarded() {
    let testnet = Testnet::new(1, 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let garbage = b"this is not a redb database, but someone's data".repeat(100);
    std::fs::write(dir.path().join(corenet::persist::FILE_NAME), &garbage).unwrap();

    let net = networker(&testnet, Corestore::open(dir.path()).unwrap()).await;
    let (_, recovered) = net.persistence().unwrap();
    let aside = recovered.expect("the corrupt file is reported");
    assert_eq!(std::fs::read(&aside).unwrap(), garbage);
    // The fresh store works.
    let dk = Corestore::in_memory().get("x").unwrap().discovery_key();
    net.configure(dk, Configure::lookup_only()).await.unwrap();
    net.close().await.unwrap();
    drop(net);
    let net = networker(&testnet, Corestore::open(dir.path()).unwrap()).await;
    assert_eq!(net.statuses().len(), 1);
    assert!(net.persistence().unwrap().1.is_none());
    net.close().await.unwrap();
    testnet.destroy().await;
}

/// Building outside a tokio runtime is an error, not a panic (the check comes before the
/// first await, so one poll with a no-op waker decides it).
#[test]
fn building_outside_a_runtime_is_an_error() {
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut build = Box::pin(Networker::builder(Corestore::in_memory()).build());
    match build.as_mut().poll(&mut cx) {
        Poll::Ready(Err(corenet::Error::NoRuntime)) => {}
        Poll::Ready(Err(e)) => panic!("unexpected error: {e}"),
        Poll::Ready(Ok(_)) => panic!("built without a runtime"),
        Poll::Pending => panic!("waited without a runtime"),
    }
}
