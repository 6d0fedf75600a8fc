//! Stream and socket settings.

use std::time::Duration;

/// The receive window libudx advertises (`UDX_DEFAULT_RWND_MAX`, 4 MiB).
pub const DEFAULT_RECV_WINDOW: u32 = 4 * 1024 * 1024;
/// Default bound on bytes a writer may queue (unacked plus unsent).
pub const DEFAULT_SEND_BUFFER: usize = 4 * 1024 * 1024;
/// libudx's initial and minimum RTO.
pub const DEFAULT_MIN_RTO: Duration = Duration::from_millis(1000);
/// libudx's RTO cap (`UDX_RTO_MAX_MS`).
pub const MAX_RTO: Duration = Duration::from_secs(30);
/// A packet that needed this many RTO timeouts fails the stream (`UDX_MAX_RTO_TIMEOUTS`).
pub const DEFAULT_MAX_RTO_TIMEOUTS: u8 = 6;
/// The base (and minimum) IP-level MTU (`UDX_MTU_BASE`).
pub const MTU_BASE: u16 = 1200;
/// The largest IP-level MTU probed (`UDX_MTU_MAX`).
pub const MTU_MAX: u16 = 1500;
/// Default capacity of the incoming and outgoing MESSAGE queues.
pub const DEFAULT_MESSAGE_QUEUE: usize = 256;
/// Default time a closed stream keeps acknowledging retransmissions of the peer's END.
pub const DEFAULT_TIME_WAIT: Duration = Duration::from_secs(2);
/// Initial congestion window in packets (libudx: 10).
pub const INITIAL_CWND: u32 = 10;

/// Settings of one stream. Every setter documents its default.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub(crate) recv_window: u32,
    pub(crate) send_buffer: usize,
    pub(crate) max_reorder: usize,
    pub(crate) min_rto: Duration,
    pub(crate) max_rto_timeouts: u8,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) zero_window_timeout: Option<Duration>,
    pub(crate) max_mtu: u16,
    pub(crate) mtu_probing: bool,
    pub(crate) message_queue: usize,
    pub(crate) time_wait: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            recv_window: DEFAULT_RECV_WINDOW,
            send_buffer: DEFAULT_SEND_BUFFER,
            max_reorder: 8192,
            min_rto: DEFAULT_MIN_RTO,
            max_rto_timeouts: DEFAULT_MAX_RTO_TIMEOUTS,
            keepalive: None,
            idle_timeout: None,
            zero_window_timeout: None,
            max_mtu: MTU_MAX,
            mtu_probing: true,
            message_queue: DEFAULT_MESSAGE_QUEUE,
            time_wait: DEFAULT_TIME_WAIT,
        }
    }
}

impl StreamConfig {
    /// Receive window in bytes: the most the stream buffers for the reader (in-order bytes not
    /// read yet plus out-of-order packets), advertised to the peer. Default 4 MiB (what every
    /// JS peer advertises). Clamped to at least 16 KiB.
    pub fn with_recv_window(mut self, bytes: u32) -> Self {
        self.recv_window = bytes.max(16 * 1024);
        self
    }

    /// Bytes a writer may queue before writes wait (sent but unacked plus not yet sent).
    /// Default 4 MiB. Clamped to at least 16 KiB.
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.max(16 * 1024);
        self
    }

    /// Most out-of-order packets held ahead of a hole; packets further ahead are dropped and
    /// counted (the sender retransmits them). Default 8192.
    pub fn with_max_reorder(mut self, packets: usize) -> Self {
        self.max_reorder = packets.max(16);
        self
    }

    /// Lower bound of the retransmission timeout. Default 1 s (libudx's value).
    pub fn with_min_rto(mut self, rto: Duration) -> Self {
        self.min_rto = rto.max(Duration::from_millis(10));
        self
    }

    /// A packet that hits this many retransmission timeouts fails the stream with
    /// [`Error::TimedOut`](crate::Error::TimedOut). Default 6 (libudx's; with the constant
    /// `2·RTO` spacing that is about 13 RTO, at least 13 s, for a dead peer).
    pub fn with_max_rto_timeouts(mut self, n: u8) -> Self {
        self.max_rto_timeouts = n.max(1);
        self
    }

    /// Sends a HEARTBEAT after this long with nothing in flight, to keep NAT bindings open.
    /// Default off (as in JS).
    pub fn with_keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// Fails the stream with [`Error::TimedOut`](crate::Error::TimedOut) when nothing arrives
    /// from the peer for this long. Default off (libudx has no idle timeout). Combine with a
    /// shorter keepalive on both sides.
    pub fn with_idle_timeout(mut self, after: Option<Duration>) -> Self {
        self.idle_timeout = after;
        self
    }

    /// Fails the stream with [`Error::ZeroWindow`](crate::Error::ZeroWindow) when the peer
    /// keeps a zero receive window this long while we have data to send. Default off (a slow
    /// reader is legitimate backpressure; memory stays bounded by the send buffer).
    pub fn with_zero_window_timeout(mut self, after: Option<Duration>) -> Self {
        self.zero_window_timeout = after;
        self
    }

    /// Largest IP-level MTU to probe for, between 1200 and 1500. Default 1500.
    pub fn with_max_mtu(mut self, mtu: u16) -> Self {
        self.max_mtu = mtu.clamp(MTU_BASE, MTU_MAX);
        self
    }

    /// Whether to probe for a larger MTU with padded DATA packets (the libudx format). Default
    /// on; off keeps every packet at 1200 bytes IP.
    pub fn with_mtu_probing(mut self, on: bool) -> Self {
        self.mtu_probing = on;
        self
    }

    /// Capacity of each MESSAGE queue (incoming: further messages are dropped and counted;
    /// outgoing: sends fail with [`Error::MessageQueueFull`](crate::Error::MessageQueueFull)).
    /// Default 256.
    pub fn with_message_queue(mut self, messages: usize) -> Self {
        self.message_queue = messages.max(1);
        self
    }

    /// How long a gracefully closed stream keeps acknowledging retransmissions of the peer's
    /// END (a TIME_WAIT, which libudx lacks). Default 2 s.
    pub fn with_time_wait(mut self, wait: Duration) -> Self {
        self.time_wait = wait;
        self
    }
}

/// Default bound of the queue of non-UDX datagrams waiting for the socket's owner.
pub const DEFAULT_DATAGRAM_QUEUE: usize = 1024;
/// Default kernel socket buffer sizes requested (the kernel may cap them).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Settings of a [`UdxSocket`](crate::UdxSocket). Every setter documents its default.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub(crate) datagram_queue: usize,
    pub(crate) recv_buffer: usize,
    pub(crate) send_buffer: usize,
    pub(crate) offload: bool,
    pub(crate) recv_batch: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            datagram_queue: DEFAULT_DATAGRAM_QUEUE,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            offload: true,
            recv_batch: 16,
        }
    }
}

impl SocketConfig {
    /// Capacity of the queue of datagrams handed to the socket's owner (everything that is
    /// not a packet for a live stream). When full, further datagrams are dropped and counted
    /// (UDP semantics: the DHT retries). Default 1024.
    pub fn with_datagram_queue(mut self, datagrams: usize) -> Self {
        self.datagram_queue = datagrams.max(1);
        self
    }

    /// `SO_RCVBUF` to request. Default 4 MiB (the kernel caps it at `net.core.rmem_max`).
    pub fn with_recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = bytes;
        self
    }

    /// `SO_SNDBUF` to request. Default 4 MiB (capped at `net.core.wmem_max`).
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes;
        self
    }

    /// Send batches of equal-size packets with UDP segmentation offload (GSO) where the
    /// platform has it. Default on; off sends one datagram per system call. (Receive-side
    /// coalescing, GRO, is enabled whenever the platform has it: it only merges what a GSO
    /// sender batched, and is split again here.)
    pub fn with_offload(mut self, on: bool) -> Self {
        self.offload = on;
        self
    }

    /// Receive buffers per `recvmmsg` batch (each 64 KiB with GRO, else 2 KiB). Default 16.
    pub fn with_recv_batch(mut self, buffers: usize) -> Self {
        self.recv_batch = buffers.clamp(1, 64);
        self
    }
}
