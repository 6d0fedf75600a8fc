//! Iterative Kademlia queries: walk toward a target, keep the k closest replies.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use bytes::Bytes;

use super::id::NodeId;
use super::Reply;

/// How a node relates to a running query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visit {
    /// Waiting in the pending stack.
    Pending,
    /// Request in flight.
    InFlight,
    /// Answered (or errored with a response).
    Done,
    /// Timed out.
    Down,
}

/// Per-address bookkeeping of a query.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Where the node is in the walk.
    pub(crate) visit: Visit,
    /// Nodes that told us about this one (DOWN_HINT recipients if it times out); at most 4.
    pub(crate) referrers: Vec<SocketAddrV4>,
    /// Hops from the seeds (seeds are 1).
    pub(crate) depth: u8,
}

/// A query's parameters.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    /// The key to walk toward.
    pub target: [u8; 32],
    /// An internal (dht-rpc) command.
    pub internal: bool,
    /// The command sent to each node.
    pub command: u64,
    /// The value sent to each node.
    pub value: Option<Bytes>,
    /// Seed addresses (for example the closest nodes of an earlier query). Empty: start from
    /// the routing table and the bootstrap nodes.
    pub nodes: Vec<SocketAddrV4>,
    /// Requests in flight at once. Default 10.
    pub concurrency: usize,
    /// Retransmissions per node. Default 5 (6 sends, as JS).
    pub retries: u8,
}

impl QuerySpec {
    /// A query for `command` toward `target` with the defaults.
    pub fn new(target: [u8; 32], command: u64) -> Self {
        QuerySpec {
            target,
            internal: false,
            command,
            value: None,
            nodes: Vec::new(),
            concurrency: 10,
            retries: 5,
        }
    }

    /// An internal FIND_NODE query.
    pub fn find_node(target: [u8; 32]) -> Self {
        QuerySpec {
            internal: true,
            ..QuerySpec::new(target, super::message::internal::FIND_NODE)
        }
    }

    /// Sets the value.
    pub fn with_value(mut self, value: Bytes) -> Self {
        self.value = Some(value);
        self
    }

    /// Seeds the walk with these nodes.
    pub fn with_nodes(mut self, nodes: Vec<SocketAddrV4>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets the concurrency.
    pub fn with_concurrency(mut self, c: usize) -> Self {
        self.concurrency = c.max(1);
        self
    }
}

/// A query in progress.
#[derive(Debug)]
pub(crate) struct Query {
    /// What to send.
    pub(crate) spec: QuerySpec,
    /// The target as an id.
    pub(crate) target: NodeId,
    /// Bucket size.
    pub(crate) k: usize,
    /// Addresses to contact, the most recently added on top.
    pub(crate) pending: Vec<(SocketAddrV4, Option<NodeId>)>,
    /// Every address seen.
    pub(crate) seen: HashMap<SocketAddrV4, Seen>,
    /// Up to k successful replies from nodes with a valid id, closest first.
    pub(crate) closest: Vec<Reply>,
    /// Requests in flight.
    pub(crate) inflight: usize,
    /// In-flight requests whose first timer fired.
    pub(crate) slow: usize,
    /// Successful replies.
    pub(crate) successes: usize,
    /// Error replies.
    pub(crate) errors: usize,
    /// Whether the routing table was used to seed it.
    pub(crate) from_table: bool,
    /// A background query (lower concurrency, no events).
    pub(crate) background: bool,
    /// Requests sent (first transmissions).
    pub(crate) requests: usize,
}

/// Referrers remembered per address.
const MAX_REFERRERS: usize = 4;

impl Query {
    pub(crate) fn new(spec: QuerySpec, k: usize, background: bool) -> Self {
        Query {
            target: NodeId(spec.target),
            spec,
            k,
            pending: Vec::new(),
            seen: HashMap::new(),
            closest: Vec::new(),
            inflight: 0,
            slow: 0,
            successes: 0,
            errors: 0,
            from_table: false,
            background,
            requests: 0,
        }
    }

    /// True when a node with this id would improve the closest set.
    pub(crate) fn is_closer(&self, id: &NodeId) -> bool {
        if self.closest.len() < self.k {
            return true;
        }
        match self.closest.last().and_then(|r| r.from_id) {
            Some(last) => self.target.cmp_distance(id, &last).is_lt(),
            None => true,
        }
    }

    /// Adds an address to contact, unless seen; records who referred it.
    pub(crate) fn add_pending(
        &mut self,
        addr: SocketAddrV4,
        id: Option<NodeId>,
        referrer: Option<SocketAddrV4>,
        depth: u8,
    ) -> Option<Visit> {
        if let Some(s) = self.seen.get_mut(&addr) {
            if let Some(r) = referrer {
                if s.referrers.len() < MAX_REFERRERS && !s.referrers.contains(&r) {
                    s.referrers.push(r);
                }
            }
            return Some(s.visit);
        }
        if let Some(id) = &id {
            if !self.is_closer(id) {
                return None;
            }
        }
        self.seen.insert(
            addr,
            Seen {
                visit: Visit::Pending,
                referrers: referrer.into_iter().collect(),
                depth,
            },
        );
        self.pending.push((addr, id));
        None
    }

    /// Inserts a successful reply into the closest set.
    pub(crate) fn add_closest(&mut self, reply: Reply) {
        let Some(id) = reply.from_id else {
            return;
        };
        if !self.is_closer(&id) || self.closest.iter().any(|r| r.from_id == Some(id)) {
            return;
        }
        let pos = self
            .closest
            .iter()
            .position(|r| {
                r.from_id
                    .is_some_and(|other| self.target.cmp_distance(&id, &other).is_lt())
            })
            .unwrap_or(self.closest.len());
        self.closest.insert(pos, reply);
        self.closest.truncate(self.k);
    }

    /// Effective concurrency: slow requests do not count against it.
    pub(crate) fn limit(&self) -> usize {
        self.spec.concurrency + self.slow
    }

    /// True when the walk is over.
    pub(crate) fn is_done(&self) -> bool {
        self.pending.is_empty()
            && (self.inflight == 0 || (self.inflight == self.slow && self.closest.len() >= self.k))
    }
}
