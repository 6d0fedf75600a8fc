//! The extension bus, Rust to Rust over in-memory duplex pipes carrying real secret streams
//! and muxes: each side has its own bus, as two processes would.

use std::time::Duration;

use bytes::Bytes;
use corenet_extensions::{
    Binary, Error, Exceeded, ExtensionOptions, Extensions, Peer, RateLimit, Undelivered, Utf8,
};
use corenet_mux::{ChannelOptions, DriverConfig, MuxHandle};
use corenet_noise::{Config, KeyPair, SecretStream};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

const WAIT: Duration = Duration::from_secs(10);

/// Logs to the test's output with `RUST_LOG` (e.g. `RUST_LOG=corenet_extensions=trace`).
fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// One end of a connection, from one bus's point of view.
struct End {
    /// The remote, as this side's bus knows it.
    remote: Peer,
    /// This side's mux.
    mux: MuxHandle,
}

/// Connects two buses: a fresh pipe, secret streams, muxes; both sessions are added before
/// the drivers run (as an owner should).
async fn connect(a: &Extensions, b: &Extensions) -> (End, End) {
    let (ma, mb) = muxes(true).await;
    let ea = add(a, ma).await;
    let eb = add(b, mb).await;
    (ea, eb)
}

/// Two muxes over a pipe. With `hold`, the drivers are not running yet: they start when
/// the returned handles' `add` runs them. Without, they run at once.
async fn muxes(hold: bool) -> (Pending, Pending) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let ta = tokio::spawn(async move {
        SecretStream::new(a, true, &KeyPair::generate(), Config::default()).await
    });
    let sb = SecretStream::new(b, false, &KeyPair::generate(), Config::default())
        .await
        .unwrap();
    let sa = ta.await.unwrap().unwrap();
    let (ha, da) = MuxHandle::new(sa, DriverConfig::default());
    let (hb, db) = MuxHandle::new(sb, DriverConfig::default());
    if hold {
        (Pending(ha, Some(da)), Pending(hb, Some(db)))
    } else {
        tokio::spawn(da);
        tokio::spawn(db);
        (Pending(ha, None), Pending(hb, None))
    }
}

/// A mux whose driver may not run yet.
struct Pending(
    MuxHandle,
    Option<corenet_mux::MuxDriver<tokio::io::DuplexStream>>,
);

/// Adds a mux to a bus as a session, then starts its driver.
async fn add(bus: &Extensions, Pending(mux, driver): Pending) -> End {
    trace();
    let remote = Peer::new(mux.stream_info().remote_public_key);
    bus.add_session(remote.clone(), mux.clone()).await.unwrap();
    if let Some(d) = driver {
        tokio::spawn(d);
    }
    End { remote, mux }
}

/// An `on_error` that forwards into a channel.
fn errors() -> (
    impl Fn(Error, &Peer) + Send + Sync + 'static,
    mpsc::Receiver<(Error, Peer)>,
) {
    let (tx, rx) = mpsc::channel(256);
    (
        move |e: Error, p: &Peer| {
            let _ = tx.try_send((e, p.clone()));
        },
        rx,
    )
}

async fn next<T>(rx: &mut mpsc::Receiver<T>) -> T {
    timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("the channel ended")
}

async fn recv<E: corenet_extensions::Encoding>(
    m: &mut corenet_extensions::Messages<E>,
) -> (E::Message, Peer) {
    timeout(WAIT, m.recv())
        .await
        .expect("no message in time")
        .expect("the stream ended")
}

/// Nothing arrives on `rx` for a while.
async fn quiet<T: std::fmt::Debug>(rx: &mut mpsc::Receiver<T>, wait: Duration) {
    if let Ok(Some(x)) = timeout(wait, rx.recv()).await {
        panic!("unexpected: {x:?}");
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    timeout(WAIT, async {
        while !f() {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test]
async fn messages_sent_right_after_add_session_are_not_lost() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let eb = b.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let mut inbox = eb.messages();
    let (to_b, to_a) = connect(&a, &b).await;
    // Nothing is open yet: these wait in the queue and go out in order.
    assert!(!ea.is_open(&to_b.remote));
    for i in 0..100 {
        ea.send(&format!("m{i}"), &to_b.remote).unwrap();
    }
    for i in 0..100 {
        let (text, from) = recv(&mut inbox).await;
        assert_eq!(text, format!("m{i}"));
        assert_eq!(from.public_key(), &to_b.mux.stream_info().public_key);
        assert_eq!(from.session(), to_a.remote.session());
    }
    // And back, on the open channel.
    let mut back = ea.messages();
    eb.send("pong", &to_a.remote).unwrap();
    assert_eq!(recv(&mut back).await.0, "pong");
    assert_eq!(ea.peers(), vec![to_b.remote.clone()]);
    assert_eq!(a.sessions().await.unwrap(), vec![to_b.remote.clone()]);
    assert_eq!(a.extensions().await.unwrap(), vec!["chat".to_string()]);
}

#[tokio::test]
async fn register_after_the_sessions_exist() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let (to_b, to_a) = connect(&a, &b).await;
    // A registers first: its open reaches B, which has neither the extension nor a hook,
    // and rejects it. A's messages wait.
    let (on_error, mut errs) = errors();
    let ea = a
        .register("late", ExtensionOptions::utf8().on_error(on_error))
        .await
        .unwrap();
    ea.send("early 1", &to_b.remote).unwrap();
    sleep(Duration::from_millis(100)).await;
    ea.send("early 2", &to_b.remote).unwrap();
    assert!(!ea.is_open(&to_b.remote));
    // B registers later: it opens on its session; A's hook accepts; the queue flushes.
    let eb = b.register("late", ExtensionOptions::utf8()).await.unwrap();
    let mut inbox = eb.messages();
    assert_eq!(recv(&mut inbox).await.0, "early 1");
    assert_eq!(recv(&mut inbox).await.0, "early 2");
    timeout(WAIT, ea.opened(&to_b.remote))
        .await
        .unwrap()
        .unwrap();
    timeout(WAIT, eb.opened(&to_a.remote))
        .await
        .unwrap()
        .unwrap();
    let mut back = ea.messages();
    eb.send("late reply", &to_a.remote).unwrap();
    assert_eq!(recv(&mut back).await.0, "late reply");
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn broadcast_reaches_every_peer() {
    let hub = Extensions::new();
    let ext = hub
        .register("news", ExtensionOptions::utf8())
        .await
        .unwrap();
    let mut leaves = Vec::new();
    for _ in 0..3 {
        let leaf = Extensions::new();
        let e = leaf
            .register("news", ExtensionOptions::utf8())
            .await
            .unwrap();
        let inbox = e.messages();
        let (to_leaf, _) = connect(&hub, &leaf).await;
        leaves.push((leaf, e, inbox, to_leaf));
    }
    // Right after connecting the channels are opening: the broadcast is queued for each.
    assert_eq!(ext.broadcast("first").unwrap(), 3);
    for (_, _, inbox, _) in &mut leaves {
        assert_eq!(recv(inbox).await.0, "first");
    }
    eventually("every channel open", || ext.peers().len() == 3).await;
    assert_eq!(ext.broadcast("second").unwrap(), 3);
    for (_, _, inbox, to_leaf) in &mut leaves {
        let (text, from) = recv(inbox).await;
        assert_eq!(text, "second");
        assert_eq!(from.public_key(), &to_leaf.mux.stream_info().public_key);
    }
    // A leaf that destroys the extension is skipped from then on.
    let (_, gone, _, to_gone) = leaves.remove(0);
    gone.destroy().await;
    eventually("the leaf's channel closed", || {
        !ext.is_open(&to_gone.remote)
    })
    .await;
    assert_eq!(ext.broadcast("third").unwrap(), 2);
    for (_, _, inbox, _) in &mut leaves {
        assert_eq!(recv(inbox).await.0, "third");
    }
}

#[tokio::test]
async fn destroy_closes_channels_and_a_new_registration_reopens_them() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let eb = b.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let mut a_inbox = ea.messages();
    let mut b_inbox = eb.messages();
    let (to_b, to_a) = connect(&a, &b).await;
    timeout(WAIT, eb.opened(&to_a.remote))
        .await
        .unwrap()
        .unwrap();

    ea.destroy().await;
    assert!(ea.is_destroyed());
    assert!(matches!(ea.send("x", &to_b.remote), Err(Error::Destroyed)));
    assert!(matches!(ea.broadcast("x"), Err(Error::Destroyed)));
    assert!(timeout(WAIT, a_inbox.recv()).await.unwrap().is_none());
    assert!(a.extensions().await.unwrap().is_empty());
    // B sees the close; its messages to A wait for A to come back.
    eventually("B saw the close", || !eb.is_open(&to_a.remote)).await;
    eb.send("while you were away", &to_a.remote).unwrap();

    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let mut a_inbox = ea.messages();
    assert_eq!(recv(&mut a_inbox).await.0, "while you were away");
    ea.send("back", &to_b.remote).unwrap();
    assert_eq!(recv(&mut b_inbox).await.0, "back");
}

#[tokio::test]
async fn messages_that_do_not_decode_go_to_on_error_and_close_nothing() {
    let (a, b) = (Extensions::new(), Extensions::new());
    // A sends raw bytes on "chat"; B reads "chat" as c.string.
    let ea = a
        .register("chat", ExtensionOptions::binary())
        .await
        .unwrap();
    let (on_error, mut errs) = errors();
    let (on_message, mut handled) = {
        let (tx, rx) = mpsc::channel(16);
        (
            move |m: String, _: &Peer| {
                let _ = tx.try_send(m);
            },
            rx,
        )
    };
    let eb = b
        .register(
            "chat",
            ExtensionOptions::utf8()
                .on_message(on_message)
                .on_error(on_error),
        )
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (to_b, to_a) = connect(&a, &b).await;

    ea.send(b"\x02\xff\xfe", &to_b.remote).unwrap(); // not UTF-8
    ea.send(b"\x05hi", &to_b.remote).unwrap(); // length past the end
    ea.send(b"\x01hi", &to_b.remote).unwrap(); // trailing byte
    ea.send(b"", &to_b.remote).unwrap(); // empty
    for _ in 0..4 {
        let (e, from) = next(&mut errs).await;
        assert!(
            matches!(
                e,
                Error::Decode {
                    encoding: "utf8",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(from.session(), to_a.remote.session());
    }
    // The channel is still open both ways; good messages reach the handler and the stream.
    ea.send(b"\x02ok", &to_b.remote).unwrap();
    assert_eq!(next(&mut handled).await, "ok");
    assert_eq!(recv(&mut inbox).await.0, "ok");
    assert!(eb.is_open(&to_a.remote) && ea.is_open(&to_b.remote));
    let mut back = ea.messages();
    eb.send("still here", &to_a.remote).unwrap();
    assert_eq!(&recv(&mut back).await.0[..], b"\x0astill here");
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn oversized_messages_are_refused_on_send_and_on_receive() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a
        .register(
            "blob",
            ExtensionOptions::binary().with_max_message_size(8 * 1024),
        )
        .await
        .unwrap();
    let (on_error, mut errs) = errors();
    let eb = b
        .register(
            "blob",
            ExtensionOptions::binary()
                .with_max_message_size(1024)
                .on_error(on_error),
        )
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (to_b, to_a) = connect(&a, &b).await;

    let big = vec![7u8; 8 * 1024 + 1];
    assert!(matches!(
        ea.send(&big, &to_b.remote),
        Err(Error::MessageTooLarge {
            len: 8193,
            max: 8192
        })
    ));
    assert!(matches!(
        eb.send(&big[..1025], &to_a.remote),
        Err(Error::MessageTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    // A's limit allows 2 KiB; B's does not: B drops it and says so, and stays open.
    ea.send(&big[..2048], &to_b.remote).unwrap();
    let (e, _) = next(&mut errs).await;
    assert!(
        matches!(
            e,
            Error::MessageTooLarge {
                len: 2048,
                max: 1024
            }
        ),
        "{e:?}"
    );
    ea.send(&big[..1024], &to_b.remote).unwrap();
    assert_eq!(recv(&mut inbox).await.0.len(), 1024);
    assert!(eb.is_open(&to_a.remote));
}

#[tokio::test]
async fn a_flooding_peer_is_cut_off() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let (a_on_error, mut a_errs) = errors();
    let ea = a
        .register(
            "chat",
            ExtensionOptions::utf8()
                .with_open_timeout(Duration::from_millis(300))
                .on_error(a_on_error),
        )
        .await
        .unwrap();
    let (on_error, mut errs) = errors();
    let (count_tx, mut counted) = mpsc::channel(1024);
    let eb = b
        .register(
            "chat",
            ExtensionOptions::utf8()
                // 50 per second with bursts of 20.
                .with_rate_limit(RateLimit::new(50, 20, 1 << 20, 1 << 20))
                .on_message(move |m: String, _: &Peer| {
                    let _ = count_tx.try_send(m);
                })
                .on_error(on_error),
        )
        .await
        .unwrap();
    let (to_b, to_a) = connect(&a, &b).await;
    timeout(WAIT, ea.opened(&to_b.remote))
        .await
        .unwrap()
        .unwrap();
    for i in 0..200 {
        ea.send(&i.to_string(), &to_b.remote).unwrap();
    }
    let (e, from) = next(&mut errs).await;
    assert!(
        matches!(
            e,
            Error::Flooded {
                exceeded: Exceeded::Messages
            }
        ),
        "{e:?}"
    );
    assert_eq!(from.session(), to_a.remote.session());
    // The burst got through, nothing after the cut.
    let mut n = 0;
    while counted.try_recv().is_ok() {
        n += 1;
    }
    assert!((20..=22).contains(&n), "{n} messages handled");
    // B no longer talks to A; A sees its channel closed and its messages wait, then fail.
    assert!(matches!(
        eb.send("x", &to_a.remote),
        Err(Error::PeerBlocked)
    ));
    assert!(eb.peers().is_empty());
    eventually("A saw the close", || !ea.is_open(&to_b.remote)).await;
    ea.send("anyone?", &to_b.remote).unwrap();
    let (e, _) = next(&mut a_errs).await;
    assert!(
        matches!(
            e,
            Error::Undelivered {
                messages: 1,
                reason: Undelivered::OpenTimeout(_)
            }
        ),
        "{e:?}"
    );
    // A re-registering does not get back in: B rejects its opens for this session.
    ea.destroy().await;
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    assert!(!ea.is_open(&to_b.remote));
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn opening_and_closing_in_a_loop_counts_as_flooding() {
    let b = Extensions::new();
    let (on_error, mut errs) = errors();
    let _eb = b
        .register(
            "churn",
            ExtensionOptions::binary()
                .with_rate_limit(RateLimit::new(5, 5, 1 << 20, 1 << 20))
                .on_error(on_error),
        )
        .await
        .unwrap();
    // A raw mux on A's side opens and closes the channel over and over.
    let (ma, mb) = muxes(true).await;
    let eb_end = add(&b, mb).await;
    let Pending(raw, driver) = ma;
    tokio::spawn(driver.unwrap());
    let mut flooded = false;
    for _ in 0..50 {
        let ch = raw.open(&ChannelOptions::new("churn")).unwrap();
        match timeout(WAIT, ch.opened()).await.unwrap() {
            Ok(_) => ch.close(),
            Err(_) => {
                flooded = true;
                break;
            }
        }
        sleep(Duration::from_millis(2)).await;
    }
    assert!(flooded, "the churn was never stopped");
    let (e, from) = next(&mut errs).await;
    assert!(matches!(e, Error::Flooded { .. }), "{e:?}");
    assert_eq!(from.session(), eb_end.remote.session());
}

#[tokio::test]
async fn a_channel_that_never_opens_fails_its_messages() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let (on_error, mut errs) = errors();
    let timeout_after = Duration::from_millis(300);
    let ea = a
        .register(
            "lonely",
            ExtensionOptions::utf8()
                .with_open_timeout(timeout_after)
                .on_error(on_error),
        )
        .await
        .unwrap();
    let (to_b, _to_a) = connect(&a, &b).await; // B never registers "lonely"
    let started = tokio::time::Instant::now();
    for i in 0..3 {
        ea.send(&format!("{i}"), &to_b.remote).unwrap();
    }
    let (e, from) = next(&mut errs).await;
    assert!(
        matches!(
            e,
            Error::Undelivered {
                messages: 3,
                reason: Undelivered::OpenTimeout(t)
            } if t == timeout_after
        ),
        "{e:?}"
    );
    assert!(started.elapsed() >= timeout_after);
    assert_eq!(from.session(), to_b.remote.session());
    // A caller that waits gets the error itself (and on_error stays quiet).
    let r = timeout(WAIT, ea.send_when_open("waiting", &to_b.remote))
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            Err(Error::Undelivered {
                messages: 1,
                reason: Undelivered::OpenTimeout(_)
            })
        ),
        "{r:?}"
    );
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn the_pending_queue_is_bounded() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a
        .register("q", ExtensionOptions::binary().with_pending_limit(4, 1000))
        .await
        .unwrap();
    let (to_b, _) = connect(&a, &b).await;
    for _ in 0..4 {
        ea.send(&[0u8; 10], &to_b.remote).unwrap();
    }
    assert!(matches!(
        ea.send(&[0u8; 10], &to_b.remote),
        Err(Error::QueueFull {
            messages: 4,
            bytes: 40
        })
    ));
}

#[tokio::test]
async fn removing_a_session_fails_its_queued_messages() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let (on_error, mut errs) = errors();
    let ea = a
        .register("q", ExtensionOptions::utf8().on_error(on_error))
        .await
        .unwrap();
    let (to_b, _) = connect(&a, &b).await;
    ea.send("one", &to_b.remote).unwrap();
    ea.send("two", &to_b.remote).unwrap();
    assert!(a.remove_session(to_b.remote.session()).await.unwrap());
    assert!(!a.remove_session(to_b.remote.session()).await.unwrap());
    let (e, _) = next(&mut errs).await;
    assert!(
        matches!(
            e,
            Error::Undelivered {
                messages: 2,
                reason: Undelivered::Disconnected
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        ea.send("three", &to_b.remote),
        Err(Error::UnknownPeer(_))
    ));
}

#[tokio::test]
async fn a_closed_connection_removes_the_session() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let _eb = b.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let (to_b, to_a) = connect(&a, &b).await;
    timeout(WAIT, ea.opened(&to_b.remote))
        .await
        .unwrap()
        .unwrap();
    to_a.mux.close();
    timeout(WAIT, async {
        while !a.sessions().await.unwrap().is_empty() || !b.sessions().await.unwrap().is_empty() {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the sessions were not removed");
    assert!(matches!(
        ea.send("x", &to_b.remote),
        Err(Error::UnknownPeer(_))
    ));
    // The bus still works for new connections.
    let (to_b2, _) = connect(&a, &b).await;
    timeout(WAIT, ea.opened(&to_b2.remote))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn json_messages_and_send_when_open() {
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        id: u32,
        text: String,
        tags: Vec<String>,
    }
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a
        .register("notes", ExtensionOptions::json::<Note>())
        .await
        .unwrap();
    let eb = b
        .register("notes", ExtensionOptions::json::<Note>())
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (to_b, _) = connect(&a, &b).await;
    let note = Note {
        id: 7,
        text: "h\u{e9}llo".into(),
        tags: vec!["a".into(), "b".into()],
    };
    // Waits for the open, then for the connection to take it.
    timeout(WAIT, ea.send_when_open(&note, &to_b.remote))
        .await
        .unwrap()
        .unwrap();
    assert!(ea.is_open(&to_b.remote));
    assert_eq!(recv(&mut inbox).await.0, note);
    timeout(WAIT, ea.send_when_open(&note, &to_b.remote))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv(&mut inbox).await.0, note);
}

#[tokio::test]
async fn handlers_and_several_streams_all_get_every_message() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let (tx, mut handled) = mpsc::channel(64);
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let eb = b
        .register(
            "chat",
            ExtensionOptions::utf8().on_message(move |m: String, p: &Peer| {
                let _ = tx.try_send((m, p.clone()));
            }),
        )
        .await
        .unwrap();
    let mut s1 = eb.messages();
    let mut s2 = eb.messages();
    let dropped = eb.messages();
    drop(dropped);
    let (to_b, to_a) = connect(&a, &b).await;
    for m in ["x", "y"] {
        ea.send(m, &to_b.remote).unwrap();
    }
    for m in ["x", "y"] {
        assert_eq!(
            next(&mut handled).await,
            (m.to_string(), to_a.remote.clone())
        );
        assert_eq!(recv(&mut s1).await.0, m);
        assert_eq!(recv(&mut s2).await.0, m);
    }
}

#[tokio::test]
async fn a_slow_stream_reader_holds_the_peer_back_without_cutting_it_off() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("slow", ExtensionOptions::utf8()).await.unwrap();
    let (on_error, mut errs) = errors();
    let eb = b
        .register(
            "slow",
            ExtensionOptions::utf8()
                .with_stream_buffer(4)
                // A burst of 30 messages: the 100 below would be a flood if the peer were
                // charged for the time we kept it waiting.
                .with_rate_limit(RateLimit::new(10, 30, 1 << 20, 1 << 20))
                .on_error(on_error),
        )
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (to_b, _) = connect(&a, &b).await;
    for i in 0..100 {
        ea.send(&i.to_string(), &to_b.remote).unwrap();
    }
    for i in 0..100 {
        if i % 10 == 0 {
            sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(recv(&mut inbox).await.0, i.to_string());
    }
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_remote_first_open_from_a_plain_protomux_channel_is_accepted() {
    let b = Extensions::new();
    let (on_error, mut errs) = errors();
    let eb = b
        .register("chat", ExtensionOptions::utf8().on_error(on_error))
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (ma, mb) = muxes(true).await;
    let to_a = add(&b, mb).await;
    let Pending(raw, driver) = ma;
    tokio::spawn(driver.unwrap());
    // B's open reaches a mux with no channel and no hook: rejected. Then the raw side opens
    // (as a JS app that creates its channel late), with and without an id.
    sleep(Duration::from_millis(50)).await;
    let with_id = raw
        .open(&ChannelOptions::new("chat").with_id(&b"room"[..]))
        .unwrap();
    assert!(timeout(WAIT, with_id.opened()).await.unwrap().is_err());
    let mut ch = raw.open(&ChannelOptions::new("chat")).unwrap();
    timeout(WAIT, ch.opened()).await.unwrap().unwrap();
    // Types other than 0 are ignored; type 0 is the message.
    ch.send_encoded(1, "ignored").await.unwrap();
    ch.send_encoded(0, "hello").await.unwrap();
    let (text, from) = recv(&mut inbox).await;
    assert_eq!(text, "hello");
    assert_eq!(from, to_a.remote);
    eb.send("hi raw", &to_a.remote).unwrap();
    let m = timeout(WAIT, ch.recv()).await.unwrap().unwrap();
    assert_eq!(
        (m.message_type, m.decode::<String>().unwrap()),
        (0, "hi raw".to_string())
    );
    quiet(&mut errs, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn registration_and_session_errors() {
    let a = Extensions::new();
    let _e = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    assert!(matches!(
        a.register("chat", ExtensionOptions::binary()).await,
        Err(Error::AlreadyRegistered(n)) if n == "chat"
    ));
    for bad in ["", "hypercore/alpha", "hypercore"] {
        assert!(matches!(
            a.register(bad, ExtensionOptions::binary()).await,
            Err(Error::InvalidName { .. })
        ));
    }
    let (ma, _mb) = muxes(false).await;
    let peer = Peer::new(ma.0.stream_info().remote_public_key);
    a.add_session(peer.clone(), ma.0.clone()).await.unwrap();
    assert!(matches!(
        a.add_session(peer.clone(), ma.0.clone()).await,
        Err(Error::DuplicateSession(s)) if s == peer.session()
    ));
    a.close().await;
    assert!(matches!(
        a.register("other", ExtensionOptions::binary()).await,
        Err(Error::Shutdown)
    ));
    assert!(matches!(a.sessions().await, Err(Error::Shutdown)));
}

#[tokio::test]
async fn binary_messages_keep_every_byte() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("bin", ExtensionOptions::binary()).await.unwrap();
    let eb = b
        .register("bin", ExtensionOptions::new(Binary))
        .await
        .unwrap();
    let mut inbox = eb.messages();
    let (to_b, _) = connect(&a, &b).await;
    let all: Vec<u8> = (0..=255).collect();
    ea.send(&all, &to_b.remote).unwrap();
    ea.send(&[], &to_b.remote).unwrap();
    assert_eq!(recv(&mut inbox).await.0, Bytes::from(all));
    assert!(recv(&mut inbox).await.0.is_empty());
    let _ = Utf8; // the encodings are plain values too
}

#[tokio::test]
async fn the_first_stream_keeps_what_arrived_before_it_was_taken_and_never_stalls() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("early", ExtensionOptions::utf8()).await.unwrap();
    let eb = b
        .register("early", ExtensionOptions::utf8().with_stream_buffer(4))
        .await
        .unwrap();
    let (to_b, _) = connect(&a, &b).await;
    for i in 0..10 {
        ea.send(&i.to_string(), &to_b.remote).unwrap();
    }
    // Nobody reads B's stream yet: it keeps four and drops the rest, without holding A back.
    sleep(Duration::from_millis(300)).await;
    ea.send("after", &to_b.remote).unwrap();
    sleep(Duration::from_millis(100)).await;
    let mut inbox = eb.messages();
    for want in ["0", "1", "2", "3"] {
        assert_eq!(recv(&mut inbox).await.0, want);
    }
    ea.send("claimed", &to_b.remote).unwrap();
    assert_eq!(recv(&mut inbox).await.0, "claimed");
    // A second stream starts now.
    let mut second = eb.messages();
    ea.send("both", &to_b.remote).unwrap();
    assert_eq!(recv(&mut inbox).await.0, "both");
    assert_eq!(recv(&mut second).await.0, "both");
}

#[tokio::test]
async fn a_panicking_handler_loses_one_message_not_the_channel() {
    let (a, b) = (Extensions::new(), Extensions::new());
    let ea = a.register("chat", ExtensionOptions::utf8()).await.unwrap();
    let (tx, mut handled) = mpsc::channel(16);
    let _eb = b
        .register(
            "chat",
            ExtensionOptions::utf8().on_message(move |m: String, _: &Peer| {
                assert_ne!(m, "boom", "the handler panics on purpose");
                let _ = tx.try_send(m);
            }),
        )
        .await
        .unwrap();
    let (to_b, _) = connect(&a, &b).await;
    for m in ["before", "boom", "after"] {
        ea.send(m, &to_b.remote).unwrap();
    }
    assert_eq!(next(&mut handled).await, "before");
    assert_eq!(next(&mut handled).await, "after");
    assert!(ea.is_open(&to_b.remote));
}
