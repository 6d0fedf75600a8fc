//! A chat over a protocol extension: every peer on a topic gets the `chat` extension (a
//! protomux channel a JS app opens with `Protomux.from(conn).createChannel({protocol:
//! 'chat'})`), and messages go to one peer or to all of them.
//!
//! `cargo run -p corenet --example chat`

use corenet::extensions::ExtensionOptions;
use corenet::{Configure, Corestore, DiscoveryKey, Networker, NetworkerEvent, Testnet};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let testnet = Testnet::new(5, 0).await?;
    // Any 32 bytes name a topic; here, the hash of a room name.
    let room = DiscoveryKey(corenet::Topic::from_name("corenet example chat room").0);

    let mut peers = Vec::new();
    for name in ["ada", "bob", "cy"] {
        let net = Networker::builder(Corestore::in_memory())
            .bootstrap(testnet.bootstrap.clone())
            .build()
            .await?;
        // Handlers run for every message; `messages()` is the stream alternative.
        let chat = net
            .register_extension(
                "chat",
                ExtensionOptions::utf8()
                    .on_message(move |text: String, from| {
                        println!("{name} <- {}: {text}", &from.public_key().to_string()[..8]);
                    })
                    .on_error(move |err, from| {
                        eprintln!("{name}: bad message from {}: {err}", from.public_key());
                    }),
            )
            .await?;
        peers.push((name, net, chat));
    }

    // Greet every peer as it connects: a message sent from the peer-add handler waits until
    // the peer's side of the channel is open.
    let (_, ada, ada_chat) = &peers[0];
    let mut events = ada.events();
    let greeter = {
        let ada_chat = ada_chat.clone();
        tokio::spawn(async move {
            let mut greeted = 0;
            while greeted < 2 {
                if let Some(NetworkerEvent::PeerAdd(peer)) = events.recv().await {
                    let _ = ada_chat.send(
                        &format!("welcome, {}", &peer.remote_public_key.to_string()[..8]),
                        peer.extension_peer(),
                    );
                    greeted += 1;
                }
            }
        })
    };
    for (_, net, _) in &peers {
        net.configure(room, Configure::default()).await?;
    }
    greeter.await?;
    // `configure` returned once our own dials were set up; the peers we were dialled by may
    // still be finishing their side. Wait (bounded) until everyone sees everyone.
    for _ in 0..100 {
        if peers.iter().all(|(_, net, _)| net.peers().len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (_, _, bob_chat) = &peers[1];
    let sent_to = bob_chat.broadcast("hi all")?;
    println!("bob broadcast to {sent_to} peers");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    for (_, net, _) in &peers {
        net.close().await?;
    }
    testnet.destroy().await;
    Ok(())
}
