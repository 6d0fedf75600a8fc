//! The `ExtensionBus` actor and [`Extensions`], its `Send + Sync + Clone` handle.
//!
//! - The actor owns the registrations (by name) and the sessions (by [`SessionId`], each
//!   with its [`MuxHandle`]). Adding a session opens every registered extension's channel on
//!   its mux; registering opens the new extension's channel on every session. Both happen
//!   inside the handler, so once `add_session` returns the channels and pairing hooks exist
//!   (add a session before its mux driver runs and no early frame is missed).
//! - Each (session, extension) pair is a slot with its own task (see [`crate::extension`]),
//!   spawned on the session's runtime (the one that added it, normally the one running its
//!   mux driver) or else on the actor's arbiter; the data path (send, receive, dispatch) never
//!   crosses the actor's mailbox or the actor's thread.
//! - A session whose connection closes is removed by a watcher task, so that the bus does
//!   not keep dead sessions; the owner may also remove it first.
//! - [`Extensions::new`] runs the actor on a shared actix system thread, so the handle
//!   works from any tokio runtime; [`ExtensionBus::start`] embeds it in an existing actix
//!   system instead.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use bytes::Bytes;
use corenet_mux::MuxHandle;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::encoding::Encoding;
use crate::error::Error;
use crate::extension::{ExtShared, Extension, Registration};
use crate::options::ExtensionOptions;
use crate::peer::{Peer, SessionId};

/// Names an extension cannot take: they belong to hypercore replication, which shares the
/// connection's mux (the bus would take over its pairing hook).
pub const RESERVED_NAMES: &[&str] = &["hypercore/alpha", "hypercore"];

/// Longest extension name in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Checks an extension name.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let invalid = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("longer than 1024 bytes");
    }
    if RESERVED_NAMES.contains(&name) {
        return invalid("reserved for hypercore replication");
    }
    Ok(())
}

/// A session on the bus.
#[derive(Debug)]
struct Session {
    /// Its peer.
    peer: Peer,
    /// Its mux.
    mux: MuxHandle,
    /// Where its slot tasks run.
    runtime: Option<Handle>,
    /// Removes the session when the mux closes.
    watcher: JoinHandle<()>,
}

/// The actor: owns the registrations (by name) and the sessions (by [`SessionId`], each with
/// its [`MuxHandle`]).
///
/// - Adding a session opens every registered extension's channel on its mux, and registering
///   opens the new extension's channel on every session, inside the handler: once
///   [`AddSession`] is answered, the channels and pairing hooks exist (add a session before
///   its mux driver runs and no early frame is missed).
/// - Each (session, extension) pair is a slot served by its own task, spawned on the
///   session's runtime ([`AddSession::runtime`]) or else on the actor's arbiter. The data
///   path (send, receive, decode, dispatch) never crosses the actor's mailbox or thread.
/// - A session whose connection closes is removed by a watcher task; the owner may remove
///   it first with [`RemoveSession`].
/// - When the actor stops ([`Shutdown`], or every handle dropped), every extension is
///   destroyed.
///
/// Use it from tokio through [`Extensions`]; inside an actix system, start it with
/// `ExtensionBus::new().start()` and send it the messages directly.
#[derive(Debug, Default)]
pub struct ExtensionBus {
    /// Registrations by name.
    registrations: HashMap<Arc<str>, Arc<dyn Registration>>,
    /// Sessions by id.
    sessions: HashMap<SessionId, Session>,
}

impl ExtensionBus {
    /// An empty bus; start it with [`Actor::start`] inside an actix system (or use
    /// [`Extensions::new`]).
    pub fn new() -> Self {
        ExtensionBus::default()
    }

    fn remove_session(&mut self, session: SessionId) -> bool {
        let Some(s) = self.sessions.remove(&session) else {
            return false;
        };
        s.watcher.abort();
        for reg in self.registrations.values() {
            reg.detach(session);
        }
        debug!(%session, peer = %s.peer.public_key(), "session removed");
        true
    }
}

impl Actor for ExtensionBus {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        debug!("extension bus started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        for reg in self.registrations.values() {
            reg.destroy();
        }
        self.registrations.clear();
        for (_, s) in self.sessions.drain() {
            s.watcher.abort();
        }
        info!("extension bus stopped");
    }
}

/// `AddSession`: a connection to `peer` whose mux the bus may open extension channels on.
/// Every registered extension opens its channel on it now. Fails with
/// [`Error::DuplicateSession`] or, when the mux is closed, [`Error::Disconnected`].
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct AddSession {
    /// The peer (its session id must be new to the bus).
    pub peer: Peer,
    /// The connection's mux.
    pub mux: MuxHandle,
    /// The tokio runtime the session's slot tasks run on (receiving, decoding, handlers);
    /// best the one that runs its mux driver. `None`: the bus's own arbiter.
    /// [`Extensions::add_session`] passes the caller's runtime.
    pub runtime: Option<Handle>,
}

impl Handler<AddSession> for ExtensionBus {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: AddSession, ctx: &mut Self::Context) -> Self::Result {
        let id = msg.peer.session();
        if self.sessions.contains_key(&id) {
            return Err(Error::DuplicateSession(id));
        }
        if msg.mux.is_closed() {
            return Err(Error::Disconnected);
        }
        for reg in self.registrations.values() {
            if let Err(e) = reg
                .clone()
                .attach(&msg.peer, &msg.mux, msg.runtime.as_ref())
            {
                debug!(extension = %reg.name(), session = %id, error = %e, "cannot open the extension channel");
            }
        }
        let weak = ctx.address().downgrade();
        let mux = msg.mux.clone();
        let watcher = actix::spawn(async move {
            let _ = mux.closed().await;
            drop(mux);
            if let Some(bus) = weak.upgrade() {
                let _ = bus.send(RemoveSession { session: id }).await;
            }
        });
        debug!(session = %id, peer = %msg.peer.public_key(), "session added");
        self.sessions.insert(
            id,
            Session {
                peer: msg.peer,
                mux: msg.mux,
                runtime: msg.runtime,
                watcher,
            },
        );
        Ok(())
    }
}

/// `RemoveSession`: the connection is gone (or no longer the bus's). Its extension channels
/// close and messages queued for it fail. Returns whether the session existed.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RemoveSession {
    /// The session.
    pub session: SessionId,
}

impl Handler<RemoveSession> for ExtensionBus {
    type Result = bool;

    fn handle(&mut self, msg: RemoveSession, _ctx: &mut Self::Context) -> bool {
        self.remove_session(msg.session)
    }
}

/// `Register`: a new extension, opened on every session now and later. Fails with
/// [`Error::AlreadyRegistered`] or [`Error::InvalidName`].
#[derive(Debug)]
pub struct Register<E: Encoding> {
    /// The name (the protomux protocol).
    pub name: String,
    /// Encoding, handlers, limits.
    pub options: ExtensionOptions<E>,
}

impl<E: Encoding> actix::Message for Register<E> {
    type Result = Result<Extension<E>, Error>;
}

impl<E: Encoding> Handler<Register<E>> for ExtensionBus {
    type Result = Result<Extension<E>, Error>;

    fn handle(&mut self, msg: Register<E>, ctx: &mut Self::Context) -> Self::Result {
        check_name(&msg.name)?;
        if self.registrations.contains_key(msg.name.as_str()) {
            return Err(Error::AlreadyRegistered(msg.name));
        }
        let name: Arc<str> = msg.name.into();
        let shared = Arc::new(ExtShared::new(name.clone(), msg.options));
        for s in self.sessions.values() {
            if let Err(e) = shared.clone().attach(&s.peer, &s.mux, s.runtime.as_ref()) {
                debug!(extension = %name, session = %s.peer.session(), error = %e, "cannot open the extension channel");
            }
        }
        debug!(extension = %name, sessions = self.sessions.len(), "extension registered");
        self.registrations.insert(name, shared.clone());
        Ok(Extension::new(shared, ctx.address()))
    }
}

/// `Unregister`: what [`Extension::destroy`] sends. Only the registration with this id is
/// removed (not a later one under the same name).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// The name.
    pub(crate) name: Arc<str>,
    /// The registration.
    pub(crate) id: u64,
}

impl Handler<Unregister> for ExtensionBus {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _ctx: &mut Self::Context) {
        if self
            .registrations
            .get(&msg.name)
            .is_some_and(|r| r.id() == msg.id)
        {
            if let Some(reg) = self.registrations.remove(&msg.name) {
                reg.destroy();
            }
        }
    }
}

/// `SendTo`: an encoded message for one session (for actors that talk to the bus; the
/// typed [`Extension::send`] does not go through the mailbox).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct SendTo {
    /// The extension.
    pub extension: String,
    /// The session.
    pub session: SessionId,
    /// The encoded message.
    pub payload: Bytes,
}

impl Handler<SendTo> for ExtensionBus {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: SendTo, _ctx: &mut Self::Context) -> Self::Result {
        let reg = self
            .registrations
            .get(msg.extension.as_str())
            .ok_or(Error::Destroyed)?;
        reg.send_payload(msg.session, msg.payload)
    }
}

/// `Broadcast`: an encoded message for every session (see [`Extension::broadcast`]).
/// Returns how many sessions it was sent or queued to.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Broadcast {
    /// The extension.
    pub extension: String,
    /// The encoded message.
    pub payload: Bytes,
}

impl Handler<Broadcast> for ExtensionBus {
    type Result = Result<usize, Error>;

    fn handle(&mut self, msg: Broadcast, _ctx: &mut Self::Context) -> Self::Result {
        let reg = self
            .registrations
            .get(msg.extension.as_str())
            .ok_or(Error::Destroyed)?;
        reg.broadcast_payload(msg.payload)
    }
}

/// `GetSessions`: the peers of every session.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Peer>")]
pub struct GetSessions;

impl Handler<GetSessions> for ExtensionBus {
    type Result = MessageResult<GetSessions>;

    fn handle(&mut self, _: GetSessions, _ctx: &mut Self::Context) -> Self::Result {
        let mut peers: Vec<Peer> = self.sessions.values().map(|s| s.peer.clone()).collect();
        peers.sort_by_key(Peer::session);
        MessageResult(peers)
    }
}

/// `GetExtensions`: the registered names, sorted.
#[derive(Debug, Message)]
#[rtype(result = "Vec<String>")]
pub struct GetExtensions;

impl Handler<GetExtensions> for ExtensionBus {
    type Result = MessageResult<GetExtensions>;

    fn handle(&mut self, _: GetExtensions, _ctx: &mut Self::Context) -> Self::Result {
        let mut names: Vec<String> = self.registrations.keys().map(|n| n.to_string()).collect();
        names.sort();
        MessageResult(names)
    }
}

/// `Shutdown`: destroy every extension, forget every session, stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for ExtensionBus {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The shared actix system thread that [`Extensions::new`] uses.
fn system() -> &'static actix_rt::ArbiterHandle {
    static SYSTEM: OnceLock<actix_rt::ArbiterHandle> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("corenet-extensions".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                let _ = tx.send(actix_rt::Arbiter::current());
                system.run()
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the extension bus thread"))
            .ok();
        #[allow(clippy::expect_used)] // the thread sends before it runs; failing here is fatal
        rx.recv().expect("the extension bus thread starts")
    })
}

/// A handle to an extension bus: `Send + Sync + Clone`, usable from any async runtime
/// (the actor runs on its own thread unless embedded with [`Extensions::from_addr`]).
#[derive(Debug, Clone)]
pub struct Extensions {
    /// The actor.
    addr: Addr<ExtensionBus>,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions::new()
    }
}

impl Extensions {
    /// Starts a bus on the shared extension thread.
    pub fn new() -> Self {
        let addr = ExtensionBus::start_in_arbiter(system(), |_| ExtensionBus::new());
        Extensions { addr }
    }

    /// Wraps a bus started elsewhere (`ExtensionBus::new().start()` in an actix system).
    pub fn from_addr(addr: Addr<ExtensionBus>) -> Self {
        Extensions { addr }
    }

    /// The actor's address (for actors that talk to it directly).
    pub fn addr(&self) -> &Addr<ExtensionBus> {
        &self.addr
    }

    async fn ask<M>(&self, m: M) -> Result<M::Result, Error>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        ExtensionBus: Handler<M>,
    {
        self.addr.send(m).await.map_err(|_| Error::Shutdown)
    }

    /// Registers an extension: its channel opens on every current and future session.
    ///
    /// ```no_run
    /// # async fn demo(bus: corenet_extensions::Extensions) -> Result<(), corenet_extensions::Error> {
    /// use corenet_extensions::ExtensionOptions;
    /// let chat = bus
    ///     .register("chat", ExtensionOptions::utf8().on_message(|text, peer| {
    ///         println!("{} says {text}", peer.public_key());
    ///     }))
    ///     .await?;
    /// chat.broadcast("hello")?;
    /// # Ok(()) }
    /// ```
    pub async fn register<E: Encoding>(
        &self,
        name: &str,
        options: ExtensionOptions<E>,
    ) -> Result<Extension<E>, Error> {
        self.ask(Register {
            name: name.to_owned(),
            options,
        })
        .await?
    }

    /// Adds a session: every registered extension opens its channel on `mux`. Call it before
    /// the mux's driver runs (see [`MuxHandle::new`]) so that a peer's early opens find the
    /// pairing hooks. The session's extension channels are served by tasks on the calling
    /// tokio runtime (which should be the one that runs the mux driver): that is where
    /// `on_message` and `on_error` run. The bus keeps a handle of the mux until the session is
    /// removed or the connection closes.
    pub async fn add_session(&self, peer: Peer, mux: MuxHandle) -> Result<(), Error> {
        let runtime = Handle::try_current().ok();
        self.ask(AddSession { peer, mux, runtime }).await?
    }

    /// Removes a session; returns whether it existed.
    pub async fn remove_session(&self, session: SessionId) -> Result<bool, Error> {
        self.ask(RemoveSession { session }).await
    }

    /// The peers of every session, by session id.
    pub async fn sessions(&self) -> Result<Vec<Peer>, Error> {
        self.ask(GetSessions).await
    }

    /// The registered extensions' names, sorted.
    pub async fn extensions(&self) -> Result<Vec<String>, Error> {
        self.ask(GetExtensions).await
    }

    /// Destroys every extension (closing its channels) and stops the bus, which drops its
    /// handles of the sessions' muxes: a mux stays open as long as its owner holds a handle.
    pub async fn close(&self) {
        let _ = self.addr.send(Shutdown).await;
    }
}
