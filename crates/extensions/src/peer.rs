//! Who a message came from or goes to: one session (connection) with a remote peer.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use corenet_codec::PublicKey;

/// One session (connection) on the bus. Ids from [`SessionId::next`] are unique in the
/// process; an owner that numbers its connections itself can use [`SessionId::from_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// A fresh id, unique in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// An id chosen by the owner of the sessions.
    pub const fn from_raw(id: u64) -> Self {
        SessionId(id)
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What carries a session (corestore-networker's `peer.type`: `'tcp'` or `'utp'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// A TCP connection.
    Tcp,
    /// A UDX stream (JS `'utp'`).
    Udx,
    /// Anything else (in-memory pipes in tests).
    Other,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udx => "udx",
            Transport::Other => "other",
        })
    }
}

/// A remote peer as extension handlers see it: one session with its key, address and
/// transport. Messages are addressed to a session: two connections with the same key are two
/// peers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The session.
    session: SessionId,
    /// The remote's static key (from the secret stream).
    public_key: PublicKey,
    /// The remote's address, when the transport has one.
    remote_address: Option<SocketAddr>,
    /// What carries the session.
    transport: Transport,
}

impl Peer {
    /// A peer on a fresh session ([`SessionId::next`]), with no address and transport
    /// [`Transport::Other`] until set.
    pub fn new(public_key: PublicKey) -> Self {
        Peer {
            session: SessionId::next(),
            public_key,
            remote_address: None,
            transport: Transport::Other,
        }
    }

    /// The same peer with session id `session`. Default: a fresh [`SessionId::next`].
    pub fn with_session(mut self, session: SessionId) -> Self {
        self.session = session;
        self
    }

    /// The remote's address. Default: none.
    pub fn with_remote_address(mut self, address: SocketAddr) -> Self {
        self.remote_address = Some(address);
        self
    }

    /// What carries the session. Default: [`Transport::Other`].
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The remote's static key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The remote's address, if known.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.remote_address
    }

    /// What carries the session.
    pub fn transport(&self) -> Transport {
        self.transport
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.public_key, self.session)?;
        if let Some(a) = self.remote_address {
            write!(f, " {}/{}", self.transport, a)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_unique_unless_chosen() {
        let a = Peer::new(PublicKey::from_bytes([1; 32]));
        let b = Peer::new(PublicKey::from_bytes([1; 32]));
        assert_ne!(a.session(), b.session());
        assert_ne!(a, b);
        let c = b.clone().with_session(a.session());
        assert_eq!(a, c);
        let d = a
            .clone()
            .with_remote_address("127.0.0.1:9".parse().unwrap())
            .with_transport(Transport::Tcp);
        assert_eq!(d.remote_address(), Some("127.0.0.1:9".parse().unwrap()));
        assert!(d.to_string().ends_with("tcp/127.0.0.1:9"));
        assert_eq!(SessionId::from_raw(5).get(), 5);
    }
}
