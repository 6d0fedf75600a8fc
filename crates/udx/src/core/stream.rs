//! The UDX stream state machine (libudx `udx_stream_t` and `process_packet`), sans-IO.
//!
//! It never touches a socket or the clock: the driver feeds it datagrams
//! ([`Stream::handle_packet`]) and timeouts ([`Stream::handle_timeout`]) with `now`, and after
//! every input drains [`Stream::poll_transmit`] until `None`, [`Stream::poll_event`], and
//! re-arms one timer at [`Stream::poll_timeout`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{StreamConfig, INITIAL_CWND, MTU_BASE};
use crate::core::bbr::{Bbr, RateSample};
use crate::core::ring::ByteRing;
use crate::core::rtt::RttEstimator;
use crate::error::{Error, ProtocolError};
use crate::wire::{
    self, flags, seq_diff, seq_le, seq_lt, Header, Packet, SackBlocks, HEADER_LEN, MAX_SACK_BLOCKS,
    SACK_BLOCK_LEN,
};

/// Send and receive buffers larger than this are released after an idle period
/// (`SHRINK_AFTER_IDLE`) once empty.
const SHRINK_ABOVE: usize = 64 * 1024;
/// How long a stream must be idle (no packet either way) before its empty buffers are released.
const SHRINK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// IPv4 + UDP header bytes.
const IPV4_OVERHEAD: u16 = 28;
/// IPv6 + UDP header bytes.
const IPV6_OVERHEAD: u16 = 48;
/// Bytes a stream accepts beyond its receive window (`StreamConfig::recv_window`): JS sends
/// one packet even when the window is smaller than a packet, and retransmissions ignore the
/// window. Received bytes never exceed the window plus this.
pub const WINDOW_SLACK: usize = 64 * 1024;
/// RFC 8985 TLP: extra time when only one packet is outstanding (`UDX_TLP_MAX_ACK_DELAY`).
const TLP_MAX_ACK_DELAY: Duration = Duration::from_millis(2);
/// Attempts per probe size before the MTU search settles (`UDX_MTU_MAX_PROBES`).
const MTU_MAX_PROBES: u8 = 3;
/// Stop the MTU search when the next step would gain less than this.
const MTU_MIN_STEP: u16 = 16;
/// Writes wait while this many bytes are queued but not yet sent, so that the application
/// yields to the driver instead of filling the whole send buffer in one go (udx-native:
/// `UDX_HIGH_WATERMARK`); they resume below half of it.
pub(crate) const UNSENT_HIGH_WATER: u64 = 256 * 1024;
/// Pacing bursts hold at least this much time at the pacing rate (timers tick in ms).
const PACING_BURST_TIME: Duration = Duration::from_millis(2);
/// ... and at least this many bytes.
const PACING_MIN_BURST: f64 = 24.0 * 1024.0;

/// One datagram (or a GSO batch of equal-size datagrams) written into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Bytes written at the start of the buffer.
    pub size: usize,
    /// Size of each datagram: `size` is a run of datagrams of this size, the last one possibly
    /// shorter (UDP GSO semantics). Equal to `size` for a single datagram.
    pub segment_size: usize,
}

impl Transmit {
    /// Number of datagrams in this transmit.
    pub fn segments(&self) -> usize {
        self.size.div_ceil(self.segment_size.max(1))
    }
}

/// Something the application may want to react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// New bytes, end of stream or an error can be read.
    Readable,
    /// Room opened in the send buffer after a write was refused.
    Writable,
    /// A MESSAGE datagram arrived.
    Message,
    /// Everything sent to the previous remote was acknowledged after `change_remote`.
    RemoteChanged,
    /// Everything written (and the END, if requested) was acknowledged.
    Flushed,
    /// The stream closed; [`Stream::close_result`] says how.
    Closed,
}

impl Event {
    fn bit(self) -> u8 {
        match self {
            Event::Readable => 1,
            Event::Writable => 2,
            Event::Message => 4,
            Event::RemoteChanged => 8,
            Event::Flushed => 16,
            Event::Closed => 32,
        }
    }
    const ALL: [Event; 6] = [
        Event::Readable,
        Event::Writable,
        Event::Message,
        Event::RemoteChanged,
        Event::Flushed,
        Event::Closed,
    ];
}

/// Counters, including every packet dropped for being malformed or out of bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Datagrams handed to the stream.
    pub packets_rx: u64,
    /// Datagrams produced by the stream.
    pub packets_tx: u64,
    /// Payload bytes delivered in order.
    pub bytes_delivered: u64,
    /// DATA/END packets retransmitted.
    pub retransmits: u64,
    /// Retransmission timeouts.
    pub rto_count: u64,
    /// Loss recoveries entered through RACK.
    pub fast_recoveries: u64,
    /// Packets declared lost.
    pub lost: u64,
    /// Dropped: data offset beyond the packet.
    pub dropped_bad_offset: u64,
    /// Dropped: beyond the receive window.
    pub dropped_window: u64,
    /// Dropped: too far ahead of the next expected packet.
    pub dropped_reorder: u64,
    /// Duplicate DATA/END packets.
    pub duplicates: u64,
    /// SACK blocks that made no sense (skipped).
    pub invalid_sacks: u64,
    /// Packets whose ack was beyond anything we sent (ack part ignored).
    pub bogus_acks: u64,
    /// Incoming MESSAGEs dropped because the queue was full.
    pub dropped_messages: u64,
    /// MTU probes acknowledged.
    pub mtu_probes_acked: u64,
    /// MTU probes lost.
    pub mtu_probes_lost: u64,
    /// Packets forwarded unprocessed to the stream this one relays to.
    pub packets_relayed: u64,
}

/// A snapshot of a stream's transport state (udx-native's `rtt`, `cwnd`, `inflight`, `mtu`
/// getters and a bit more).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// Smoothed RTT.
    pub rtt: Option<Duration>,
    /// Minimum RTT seen.
    pub min_rtt: Option<Duration>,
    /// Retransmission timeout.
    pub rto: Duration,
    /// Congestion window in packets.
    pub cwnd: u32,
    /// Packets in flight.
    pub inflight: u32,
    /// Pacing rate in bytes per second.
    pub pacing_rate: f64,
    /// Estimated bottleneck bandwidth in bytes per second.
    pub bandwidth: f64,
    /// Confirmed IP-level MTU.
    pub mtu: u16,
    /// The peer's advertised receive window in bytes.
    pub send_window: u32,
    /// Our advertised receive window in bytes.
    pub recv_window: u32,
}

/// State of a sent DATA/END packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktState {
    InFlight,
    Lost,
    Acked,
}

/// A DATA/END packet kept until cumulatively acknowledged.
#[derive(Debug, Clone)]
struct SentPacket {
    /// Stream offset of the payload.
    offset: u64,
    /// Payload length.
    len: u32,
    /// DATA and/or END.
    flags: u8,
    state: PktState,
    /// Ever retransmitted (Karn: no RTT samples).
    retransmitted: bool,
    /// MTU-probe padding (0: not a probe).
    padding: u8,
    /// Transmission count, to spot stale entries in the in-flight order.
    tx_gen: u32,
    time_sent: Instant,
    /// Destination, kept for retransmissions after `change_remote`.
    dest: SocketAddr,
    dest_id: u32,
    /// Rate-sampling state at send time.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

/// An out-of-order packet waiting for the hole before it.
#[derive(Debug)]
struct OooPacket {
    flags: u8,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaState {
    Open,
    Recovery,
    Loss,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MtuState {
    Base,
    Search,
    Complete,
}

#[derive(Debug, Clone)]
struct Mtu {
    /// Confirmed IP-level MTU.
    current: u16,
    /// Upper bound (config, lowered by failed probes).
    max: u16,
    state: MtuState,
    /// Size being probed.
    probe_size: u16,
    /// Failed attempts at `probe_size`.
    attempts: u8,
    /// A probe should go out with the next full packet.
    wanted: bool,
    /// The probe in flight, if any.
    outstanding: Option<u32>,
}

impl Mtu {
    fn new(max: u16, probing: bool) -> Self {
        Mtu {
            current: MTU_BASE,
            max,
            state: if probing && max > MTU_BASE {
                MtuState::Base
            } else {
                MtuState::Complete
            },
            probe_size: MTU_BASE,
            attempts: 0,
            wanted: false,
            outstanding: None,
        }
    }

    /// Next probe size: as far as 255 bytes of padding reach, within the bound.
    fn next_size(&mut self) {
        let next = self.max.min(self.current.saturating_add(255));
        if next < self.current.saturating_add(MTU_MIN_STEP) {
            self.state = MtuState::Complete;
            self.wanted = false;
        } else {
            self.probe_size = next;
            self.attempts = 0;
            self.wanted = true;
        }
    }
}

/// Token-bucket pacer in bytes.
#[derive(Debug, Clone)]
struct Pacer {
    tokens: f64,
    last: Option<Instant>,
}

/// The sender's remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remote {
    id: u32,
    addr: SocketAddr,
}

/// One UDX stream. See the module docs for the driving contract.
#[derive(Debug)]
pub struct Stream {
    local_id: u32,
    config: StreamConfig,
    remote: Option<Remote>,
    /// Sequence number assigned at `snd_nxt` at the time of `change_remote`.
    remote_changing: Option<u32>,

    // ---- send side ----
    snd_una: u32,
    snd_nxt: u32,
    /// Packets in `[snd_una, snd_nxt)`.
    sent: VecDeque<SentPacket>,
    /// Unacked and unsent bytes, starting at stream offset `buf_base`.
    send_buf: ByteRing,
    buf_base: u64,
    /// First byte not yet packetised.
    next_offset: u64,
    end_requested: bool,
    end_seq: Option<u32>,
    local_ended: bool,
    write_blocked: bool,
    write_error: Option<Error>,
    /// Send order of in-flight packets (seq, tx_gen); stale entries are skipped.
    inflight_order: VecDeque<(u32, u32)>,
    inflight: u32,
    /// Lost packets waiting for retransmission, in loss order.
    lost_queue: VecDeque<u32>,
    /// Packets selectively acked but not yet cumulatively.
    sacked: u32,
    send_rwnd: u32,
    wl1: u32,
    wl2: u32,
    rtt: RttEstimator,
    bbr: Bbr,
    ca: CaState,
    high_seq: u32,
    pacer: Pacer,
    /// Earliest time the pacer allows the next packet, when data is waiting for tokens.
    pacing_at: Option<Instant>,
    // RACK
    rack_time: Option<Instant>,
    rack_end: u32,
    rack_rtt: Duration,
    rack_fack: u32,
    reordering_seen: bool,
    // TLP
    tlp_pending: bool,
    tlp_in_flight: bool,
    tlp_is_retrans: bool,
    tlp_end: u32,
    tlp_permitted: bool,
    // rate sampling
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    app_limited_until: u64,
    mtu: Mtu,
    // timers
    rto_at: Option<Instant>,
    /// Retransmission timeouts since the last acknowledgement of anything.
    rto_streak: u8,
    tlp_at: Option<Instant>,
    reo_at: Option<Instant>,
    zwp_at: Option<Instant>,
    zero_window_since: Option<Instant>,
    last_tx: Instant,
    last_rx: Instant,
    heartbeat_pending: bool,
    /// Earliest next look at idle buffers (set when one could not be released).
    shrink_retry: Option<Instant>,

    // ---- receive side ----
    rcv_nxt: u32,
    recv_buf: ByteRing,
    /// Slot `i` holds seq `rcv_nxt + i`.
    ooo: VecDeque<Option<OooPacket>>,
    ooo_bytes: usize,
    ooo_count: usize,
    pool: Vec<Vec<u8>>,
    remote_end: Option<u32>,
    read_eof: bool,
    read_error: Option<Error>,
    /// The application went away: received bytes are dropped after being acknowledged.
    discard_reads: bool,
    ack_pending: bool,
    last_adv_rwnd: u32,

    // ---- messages ----
    msgs_in: VecDeque<Vec<u8>>,
    msgs_out: VecDeque<Vec<u8>>,

    // ---- relay ----
    /// Packets are forwarded by the shell (libudx `relayed`): this stream sends nothing of
    /// its own and closes without a DESTROY.
    relayed: bool,
    /// Highest seq among the forwarded packets (libudx keeps it in `stream->seq`).
    relay_seq: Option<u32>,

    // ---- lifecycle ----
    closed: Option<Result<(), Error>>,
    destroy_pending: bool,
    drain_until: Option<Instant>,
    finished: bool,
    events: u8,
    stats: StreamStats,
}

/// What `poll_transmit` should send next in the data path.
enum Next {
    Retransmit(u32),
    New { len: u32, flags: u8, padding: u8 },
}

impl Stream {
    /// A stream with local id `local_id`, not connected yet. It can take writes and packets
    /// before [`Stream::connect`]; it sends nothing (acks are deferred) until then.
    pub fn new(local_id: u32, config: StreamConfig, now: Instant) -> Self {
        let recv_cap = config.recv_window as usize + WINDOW_SLACK;
        let mss = usize::from(MTU_BASE - IPV6_OVERHEAD) - HEADER_LEN;
        Stream {
            local_id,
            remote: None,
            remote_changing: None,
            snd_una: 0,
            snd_nxt: 0,
            sent: VecDeque::new(),
            send_buf: ByteRing::new(config.send_buffer),
            buf_base: 0,
            next_offset: 0,
            end_requested: false,
            end_seq: None,
            local_ended: false,
            write_blocked: false,
            write_error: None,
            inflight_order: VecDeque::new(),
            inflight: 0,
            lost_queue: VecDeque::new(),
            sacked: 0,
            send_rwnd: crate::config::DEFAULT_RECV_WINDOW,
            wl1: 0,
            wl2: 0,
            rtt: RttEstimator::new(config.min_rto),
            bbr: Bbr::new(mss),
            ca: CaState::Open,
            high_seq: 0,
            pacer: Pacer {
                tokens: 25_000.0,
                last: None,
            },
            pacing_at: None,
            rack_time: None,
            rack_end: 0,
            rack_rtt: Duration::ZERO,
            rack_fack: 0,
            reordering_seen: false,
            tlp_pending: false,
            tlp_in_flight: false,
            tlp_is_retrans: false,
            tlp_end: 0,
            tlp_permitted: true,
            delivered: 0,
            delivered_time: None,
            first_sent_time: None,
            app_limited_until: 0,
            mtu: Mtu::new(config.max_mtu, config.mtu_probing),
            rto_at: None,
            rto_streak: 0,
            tlp_at: None,
            reo_at: None,
            zwp_at: None,
            zero_window_since: None,
            last_tx: now,
            last_rx: now,
            heartbeat_pending: false,
            shrink_retry: None,
            rcv_nxt: 0,
            recv_buf: ByteRing::new(recv_cap),
            ooo: VecDeque::new(),
            ooo_bytes: 0,
            ooo_count: 0,
            pool: Vec::new(),
            remote_end: None,
            read_eof: false,
            read_error: None,
            discard_reads: false,
            ack_pending: false,
            last_adv_rwnd: config.recv_window,
            msgs_in: VecDeque::new(),
            msgs_out: VecDeque::new(),
            relayed: false,
            relay_seq: None,
            closed: None,
            destroy_pending: false,
            drain_until: None,
            finished: false,
            events: 0,
            stats: StreamStats::default(),
            config,
        }
    }

    // ------------------------------------------------------------------ accessors

    /// Our stream id (the id the peer addresses packets to).
    pub fn local_id(&self) -> u32 {
        self.local_id
    }

    /// The peer's stream id and address, once connected.
    pub fn remote(&self) -> Option<(u32, SocketAddr)> {
        self.remote.map(|r| (r.id, r.addr))
    }

    /// True once connected.
    pub fn is_connected(&self) -> bool {
        self.remote.is_some()
    }

    /// Smoothed RTT, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// Congestion window in packets.
    pub fn cwnd(&self) -> u32 {
        self.bbr.cwnd()
    }

    /// Packets in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// The confirmed IP-level MTU.
    pub fn mtu(&self) -> u16 {
        self.mtu.current
    }

    /// Current pacing rate in bytes per second.
    pub fn pacing_rate(&self) -> f64 {
        self.bbr.pacing_rate()
    }

    /// A snapshot of the transport state.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            rtt: self.rtt.srtt(),
            min_rtt: self.rtt.min_rtt(),
            rto: self.rtt.rto(),
            cwnd: self.bbr.cwnd(),
            inflight: self.inflight,
            pacing_rate: self.bbr.pacing_rate(),
            bandwidth: self.bbr.max_bw() * self.max_payload() as f64,
            mtu: self.mtu.current,
            send_window: self.send_rwnd,
            recv_window: self.rwnd(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// How the stream closed, once it has.
    pub fn close_result(&self) -> Option<&Result<(), Error>> {
        self.closed.as_ref()
    }

    /// True once closed (it may still answer retransmissions during its TIME_WAIT).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// True when the stream has nothing left to do and can be forgotten: closed, its last
    /// packets produced, and its TIME_WAIT over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True when every byte written (and the END, if requested) has been acknowledged.
    pub fn is_flushed(&self) -> bool {
        self.snd_una == self.snd_nxt
            && self.next_offset == self.buf_base + self.send_buf.len() as u64
    }

    /// Bytes that can be written now.
    pub fn send_capacity(&self) -> usize {
        let room = UNSENT_HIGH_WATER.saturating_sub(self.unsent()) as usize;
        self.send_buf.free().min(room)
    }

    /// Bytes ready to read.
    pub fn readable_bytes(&self) -> usize {
        self.recv_buf.len()
    }

    /// The largest MESSAGE payload: one packet at the base MTU (1152 bytes over IPv4, 1132
    /// over IPv6), which any JS peer takes.
    pub fn max_message_len(&self) -> usize {
        let overhead = self.remote.map_or(IPV6_OVERHEAD, |r| overhead(&r.addr));
        usize::from(MTU_BASE - overhead) - HEADER_LEN
    }

    fn max_payload(&self) -> usize {
        let overhead = self.remote.map_or(IPV6_OVERHEAD, |r| overhead(&r.addr));
        usize::from(self.mtu.current - overhead) - HEADER_LEN
    }

    fn rwnd(&self) -> u32 {
        let used = self.recv_buf.len() + self.ooo_bytes;
        (self.config.recv_window as usize).saturating_sub(used) as u32
    }

    fn event(&mut self, e: Event) {
        self.events |= e.bit();
    }

    // ------------------------------------------------------------------ commands

    /// Records the peer's stream id and address; packets start flowing (a deferred ACK goes
    /// out first).
    pub fn connect(&mut self, now: Instant, remote_id: u32, addr: SocketAddr) -> Result<(), Error> {
        if self.remote.is_some() {
            return Err(Error::AlreadyConnected);
        }
        if let Some(Err(e)) = &self.closed {
            return Err(e.clone());
        }
        self.remote = Some(Remote {
            id: remote_id,
            addr,
        });
        self.last_rx = now;
        self.last_tx = now;
        if self.rwnd() == 0 {
            self.zero_window_since = None;
        }
        self.bbr = Bbr::new(self.max_payload());
        tracing::debug!(id = self.local_id, remote_id, %addr, "udx stream connected");
        Ok(())
    }

    /// Sends new packets to another remote (id and address); packets already in flight are
    /// retransmitted to the old one. [`Event::RemoteChanged`] fires once everything sent
    /// before the change is acknowledged (at once if nothing is outstanding). The MTU search
    /// restarts at the base.
    pub fn change_remote(
        &mut self,
        _now: Instant,
        remote_id: u32,
        addr: SocketAddr,
    ) -> Result<(), Error> {
        if self.remote.is_none() {
            return Err(Error::NotConnected);
        }
        if let Some(Err(e)) = &self.closed {
            return Err(e.clone());
        }
        self.remote = Some(Remote {
            id: remote_id,
            addr,
        });
        self.mtu = Mtu::new(self.config.max_mtu, self.config.mtu_probing);
        if self.snd_una != self.snd_nxt {
            self.remote_changing = Some(self.snd_nxt);
        } else {
            self.remote_changing = None;
            self.event(Event::RemoteChanged);
        }
        tracing::debug!(id = self.local_id, remote_id, %addr, "udx stream remote changed");
        Ok(())
    }

    /// True while a `change_remote` waits for its acknowledgement.
    pub fn is_remote_changing(&self) -> bool {
        self.remote_changing.is_some()
    }

    /// Queues bytes; returns how many fit in the send buffer (0 when full: wait for
    /// [`Event::Writable`]). Works before `connect`.
    pub fn write(&mut self, now: Instant, data: &[u8]) -> Result<usize, Error> {
        if let Some(e) = &self.write_error {
            return Err(e.clone());
        }
        if self.end_requested {
            return Err(Error::WriteAfterEnd);
        }
        let room = UNSENT_HIGH_WATER.saturating_sub(self.unsent()) as usize;
        let n = self.send_buf.push(&data[..data.len().min(room)]);
        if n < data.len() {
            self.write_blocked = true;
        }
        if n > 0 && self.send_rwnd == 0 && self.snd_una == self.snd_nxt && self.remote.is_some() {
            // Zero-window probe at once on an idle stream (libudx `_udx_stream_write`).
            self.heartbeat_pending = true;
            self.arm_zwp(now);
        }
        Ok(n)
    }

    /// Ends our write side gracefully: an END follows the queued bytes. Idempotent.
    pub fn end(&mut self, _now: Instant) -> Result<(), Error> {
        if let Some(e) = &self.write_error {
            return Err(e.clone());
        }
        self.end_requested = true;
        Ok(())
    }

    /// True once `end` was called.
    pub fn is_write_ended(&self) -> bool {
        self.end_requested
    }

    /// Reads in-order bytes: `Ok(Some(n))` with `n > 0` bytes, `Ok(Some(0))` at end of
    /// stream, `Ok(None)` when nothing is ready (wait for [`Event::Readable`]), or the error
    /// that closed the stream once buffered bytes are consumed.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        if !self.recv_buf.is_empty() {
            if buf.is_empty() {
                return Ok(Some(0));
            }
            let n = self.recv_buf.pop_into(buf);
            self.after_read();
            return Ok(Some(n));
        }
        if self.read_eof {
            return Ok(Some(0));
        }
        if let Some(e) = &self.read_error {
            return Err(e.clone());
        }
        Ok(None)
    }

    fn after_read(&mut self) {
        // Window update when a small or closed window opened up.
        let rwnd = self.rwnd();
        let quarter = self.config.recv_window / 4;
        if self.closed.is_none()
            && rwnd > self.last_adv_rwnd
            && (self.last_adv_rwnd < quarter || rwnd - self.last_adv_rwnd >= quarter)
        {
            self.ack_pending = true;
        }
    }

    /// The application went away: acknowledge and drop whatever arrives from now on.
    pub fn discard_reads(&mut self) {
        self.discard_reads = true;
        self.recv_buf.consume(self.recv_buf.len());
        self.after_read();
    }

    /// Queues an unordered, unreliable MESSAGE (sent with the next transmit).
    pub fn send_message(&mut self, data: &[u8]) -> Result<(), Error> {
        if let Some(e) = &self.write_error {
            return Err(e.clone());
        }
        if self.closed.is_some() {
            return Err(Error::SocketClosed);
        }
        if self.remote.is_none() {
            return Err(Error::NotConnected);
        }
        let max = self.max_message_len();
        if data.len() > max {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                max,
            });
        }
        if self.msgs_out.len() >= self.config.message_queue {
            return Err(Error::MessageQueueFull);
        }
        self.msgs_out.push_back(data.to_vec());
        Ok(())
    }

    /// The next received MESSAGE.
    pub fn recv_message(&mut self) -> Option<Vec<u8>> {
        self.msgs_in.pop_front()
    }

    /// Aborts the stream: one DESTROY goes out (if connected) and the stream closes with
    /// [`Error::Destroyed`]. Idempotent.
    pub fn destroy(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        tracing::debug!(id = self.local_id, "udx stream destroyed locally");
        // A relayed stream's peer talks to the far end, not to us: no DESTROY (libudx).
        self.close(now, Err(Error::Destroyed), !self.relayed);
    }

    // ------------------------------------------------------------------ relay

    /// Marks the stream as relayed (libudx `udx_stream_relay_to`): from now on the driver
    /// forwards its packets to another stream instead of handing them to
    /// [`Stream::handle_packet`], and reports each with [`Stream::handle_relayed`]. A relayed
    /// stream sends nothing of its own and [`Stream::destroy`] closes it without a DESTROY.
    /// Irreversible, as in libudx.
    pub fn set_relayed(&mut self) {
        self.relayed = true;
        self.ack_pending = false;
        self.heartbeat_pending = false;
        self.msgs_out.clear();
    }

    /// True once [`Stream::set_relayed`] was called.
    pub fn is_relayed(&self) -> bool {
        self.relayed
    }

    /// Accounts for a packet the driver forwarded (libudx `relay_packet`): the highest seq
    /// seen is kept, and a forwarded DESTROY closes this stream with
    /// [`Error::ConnectionReset`] (without a DESTROY of its own). `datagram` is the packet
    /// as received (at least a header; anything shorter is ignored).
    pub fn handle_relayed(&mut self, now: Instant, datagram: &[u8]) {
        if self.finished {
            return;
        }
        let Ok(h) = Header::decode(datagram) else {
            return;
        };
        self.stats.packets_rx += 1;
        self.stats.packets_relayed += 1;
        self.last_rx = now;
        self.relay_seq = Some(match self.relay_seq {
            Some(s) if seq_le(h.seq, s) => s,
            _ => h.seq,
        });
        if h.has(flags::DESTROY) && self.closed.is_none() {
            tracing::debug!(
                id = self.local_id,
                "udx: relayed DESTROY closes the relay stream"
            );
            self.close(now, Err(Error::ConnectionReset), false);
        }
    }

    /// The highest seq among forwarded packets (`None` before the first).
    pub fn relayed_seq(&self) -> Option<u32> {
        self.relay_seq
    }

    // ------------------------------------------------------------------ input

    /// Handles one datagram addressed to this stream (the caller matched the id).
    pub fn handle_packet(&mut self, now: Instant, datagram: &[u8]) {
        if self.finished {
            return;
        }
        self.stats.packets_rx += 1;
        let pkt = match Packet::decode(datagram) {
            Ok(p) => p,
            Err(wire::WireError::BadDataOffset { offset, available }) => {
                self.stats.dropped_bad_offset += 1;
                tracing::debug!(
                    id = self.local_id,
                    offset,
                    available,
                    "udx: data offset beyond packet, dropped"
                );
                return;
            }
            Err(e) => {
                tracing::debug!(id = self.local_id, error = %e, "udx: malformed packet dropped");
                return;
            }
        };
        self.last_rx = now;
        let h = pkt.header;
        tracing::trace!(
            id = self.local_id,
            flags = h.flags,
            seq = h.seq,
            ack = h.ack,
            len = pkt.payload.len(),
            "udx rx"
        );
        if h.has(flags::HEARTBEAT) {
            self.ack_pending = true;
            return;
        }
        let sequenced = h.has(flags::DATA | flags::END);
        if self.closed.is_some() {
            // TIME_WAIT: keep acknowledging retransmissions of the peer's last packets.
            if sequenced {
                self.ack_pending = true;
            }
            return;
        }
        if sequenced {
            // Every DATA/END gets an ACK, duplicates and stale ones included.
            self.ack_pending = true;
        }
        if seq_le(self.rcv_nxt, h.seq) {
            if sequenced {
                self.receive(now, &h, pkt.payload);
                if self.closed.is_some() {
                    return;
                }
            }
            if h.has(flags::DESTROY) {
                if seq_le(h.ack, self.snd_nxt) {
                    self.process_ack(now, &h, SackBlocks::default());
                }
                self.on_remote_destroy(now);
                return;
            }
        }
        if h.has(flags::MESSAGE) {
            if self.msgs_in.len() < self.config.message_queue {
                self.msgs_in.push_back(pkt.payload.to_vec());
                self.event(Event::Message);
            } else {
                self.stats.dropped_messages += 1;
                tracing::debug!(
                    id = self.local_id,
                    "udx: message queue full, message dropped"
                );
            }
        }
        if seq_lt(self.snd_nxt, h.ack) {
            self.stats.bogus_acks += 1;
            tracing::debug!(
                id = self.local_id,
                ack = h.ack,
                snd_nxt = self.snd_nxt,
                "udx: ack beyond anything sent, ignored"
            );
            return;
        }
        self.process_ack(now, &h, pkt.sacks);
        self.check_graceful_close(now);
    }

    fn receive(&mut self, now: Instant, h: &Header, payload: &[u8]) {
        let seq = h.seq;
        if let Some(end) = self.remote_end {
            if seq_lt(end, seq) {
                let err = if h.has(flags::END) {
                    ProtocolError::ConflictingEnd {
                        first: end,
                        second: seq,
                    }
                } else {
                    ProtocolError::DataAfterEnd { seq, end }
                };
                tracing::debug!(id = self.local_id, %err, "udx: peer violated the protocol");
                self.close(now, Err(Error::Protocol(err)), true);
                return;
            }
            if h.has(flags::END) && seq != end {
                let err = ProtocolError::ConflictingEnd {
                    first: end,
                    second: seq,
                };
                tracing::debug!(id = self.local_id, %err, "udx: peer violated the protocol");
                self.close(now, Err(Error::Protocol(err)), true);
                return;
            }
        }
        if self.read_eof {
            return;
        }
        let idx = seq.wrapping_sub(self.rcv_nxt) as usize;
        let in_order_data = idx == 0 && h.has(flags::DATA);
        if in_order_data {
            if !self.discard_reads && self.recv_buf.free() < payload.len() {
                self.stats.dropped_window += 1;
                tracing::debug!(
                    id = self.local_id,
                    seq,
                    "udx: receive buffer full, packet dropped"
                );
                return;
            }
            if h.has(flags::END) {
                self.remote_end = Some(seq);
            }
            self.deliver(payload);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            if let Some(Some(p)) = self.ooo.pop_front() {
                // A duplicate of what we just delivered.
                self.ooo_count -= 1;
                self.ooo_bytes -= p.data.len();
                self.recycle(p.data);
            }
        } else {
            if idx >= self.config.max_reorder {
                self.stats.dropped_reorder += 1;
                tracing::debug!(
                    id = self.local_id,
                    seq,
                    rcv_nxt = self.rcv_nxt,
                    "udx: packet too far ahead, dropped"
                );
                return;
            }
            if self.ooo.get(idx).is_some_and(Option::is_some) {
                self.stats.duplicates += 1;
                return;
            }
            let used = self.recv_buf.len() + self.ooo_bytes + payload.len();
            if used > self.config.recv_window as usize + WINDOW_SLACK {
                self.stats.dropped_window += 1;
                tracing::debug!(
                    id = self.local_id,
                    seq,
                    "udx: beyond the receive window, dropped"
                );
                return;
            }
            if h.has(flags::END) {
                self.remote_end = Some(seq);
            }
            let mut data = self.pool.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(payload);
            while self.ooo.len() <= idx {
                self.ooo.push_back(None);
            }
            self.ooo_bytes += data.len();
            self.ooo_count += 1;
            self.ooo[idx] = Some(OooPacket {
                flags: h.flags & (flags::DATA | flags::END),
                data,
            });
        }
        // Drain what became contiguous.
        while let Some(Some(_)) = self.ooo.front() {
            let Some(Some(p)) = self.ooo.pop_front() else {
                break;
            };
            self.ooo_count -= 1;
            self.ooo_bytes -= p.data.len();
            if p.flags & flags::DATA != 0 {
                self.deliver(&p.data);
            }
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.recycle(p.data);
        }
        if let Some(end) = self.remote_end {
            if seq_lt(end, self.rcv_nxt) && !self.read_eof {
                self.read_eof = true;
                tracing::debug!(id = self.local_id, "udx: remote ended");
                self.event(Event::Readable);
                self.check_graceful_close(now);
            }
        }
    }

    fn deliver(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.stats.bytes_delivered += data.len() as u64;
        if self.discard_reads {
            return;
        }
        self.recv_buf.push(data);
        self.event(Event::Readable);
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 64 && buf.capacity() <= wire::MAX_DATAGRAM {
            self.pool.push(buf);
        }
    }

    fn on_remote_destroy(&mut self, now: Instant) {
        // JS destroys right after a graceful END exchange (streamx auto-destroy): that is a
        // normal close when the peer ended and got everything we sent.
        let graceful =
            self.read_eof && (self.local_ended || (self.end_requested && self.is_flushed()));
        tracing::debug!(
            id = self.local_id,
            graceful,
            "udx: peer destroyed the stream"
        );
        if graceful {
            self.close(now, Ok(()), false);
        } else {
            // If the peer's END arrived, reads still end cleanly (read_eof is kept); our
            // unacknowledged writes are lost either way.
            self.close(now, Err(Error::ConnectionReset), false);
        }
    }

    fn process_ack(&mut self, now: Instant, h: &Header, sacks: SackBlocks<'_>) {
        let ack = h.ack;
        // Window update, RFC 793 style.
        if seq_le(self.snd_una, ack)
            && (seq_lt(self.wl1, h.seq) || (self.wl1 == h.seq && seq_le(self.wl2, ack)))
        {
            self.send_rwnd = h.rwnd;
            self.wl1 = h.seq;
            self.wl2 = ack;
            if h.rwnd > 0 {
                self.zwp_at = None;
                self.zero_window_since = None;
            }
        }
        if let Some(target) = self.remote_changing {
            if seq_le(target, ack) {
                self.remote_changing = None;
                self.event(Event::RemoteChanged);
            }
        }
        if self.tlp_in_flight
            && seq_le(self.tlp_end, ack)
            && (!self.tlp_is_retrans || seq_lt(self.tlp_end, ack))
        {
            self.tlp_in_flight = false;
        }
        if self.ca != CaState::Open && seq_lt(self.high_seq, ack) {
            self.ca = CaState::Open;
            self.bbr.on_exit_recovery();
        }
        let had_data_inflight = self.snd_una != self.snd_nxt;
        let mut rs = RateSample::default();
        let mut rate = RateTrack::default();
        let ack_advanced = seq_lt(self.snd_una, ack);
        // Cumulative part.
        while seq_lt(self.snd_una, ack) {
            if self
                .sent
                .front()
                .is_some_and(|p| p.state == PktState::Acked)
            {
                self.sacked = self.sacked.saturating_sub(1);
            } else {
                self.ack_one(now, self.snd_una, false, &mut rs, &mut rate);
            }
            self.sent.pop_front();
            self.snd_una = self.snd_una.wrapping_add(1);
        }
        if ack_advanced {
            let base = self.sent.front().map_or(self.next_offset, |p| p.offset);
            let n = (base - self.buf_base) as usize;
            if n > 0 {
                self.send_buf.consume(n);
                self.buf_base = base;
                if self.write_blocked && !self.end_requested {
                    self.write_blocked = false;
                    self.event(Event::Writable);
                }
            }
        }
        // Selective part.
        let mut valid = 0;
        for (start, end) in sacks.iter() {
            if valid >= MAX_SACK_BLOCKS
                || !seq_lt(start, end)
                || !seq_le(end, self.snd_nxt)
                || !seq_le(self.snd_una, start)
            {
                self.stats.invalid_sacks += 1;
                continue;
            }
            valid += 1;
            let mut s = start;
            while s != end {
                self.ack_one(now, s, true, &mut rs, &mut rate);
                s = s.wrapping_add(1);
            }
        }
        if rs.acked == 0 {
            return;
        }
        self.rto_streak = 0;
        if self.delivered_time.is_some() {
            self.delivered_time = Some(now);
        }
        // Loss detection (RACK).
        let (lost, probe_lost) = self.detect_loss(now);
        rs.losses = lost;
        if lost > probe_lost && self.ca == CaState::Open {
            self.stats.fast_recoveries += 1;
            self.ca = CaState::Recovery;
            self.high_seq = self.snd_nxt;
            self.tlp_in_flight = false;
            self.tlp_is_retrans = false;
            self.bbr.on_enter_recovery(self.inflight + rs.acked);
        }
        // Rate sample.
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        if rate.prior_time.is_some() {
            rs.delivered = self.delivered - rate.prior_delivered;
            rs.prior_delivered = rate.prior_delivered;
            rs.interval = rate.send_elapsed.max(rate.ack_elapsed);
            if let Some(min) = self.rtt.min_rtt() {
                if rs.interval < min {
                    rs.delivered = 0;
                }
            }
        }
        if had_data_inflight {
            let mss = self.max_payload();
            self.bbr
                .on_ack(now, &rs, self.delivered, self.inflight, mss);
        }
        // Timers.
        if self.snd_una == self.snd_nxt {
            self.rto_at = None;
            self.tlp_at = None;
            self.reo_at = None;
        } else if ack_advanced {
            self.rto_at = Some(now + self.rtt.rto());
            self.schedule_tlp(now);
        }
        self.arm_zwp(now);
        if ack_advanced && self.is_flushed() {
            self.event(Event::Flushed);
        }
        // Local END acknowledged?
        if self.end_seq.is_some() && !self.local_ended && self.snd_una == self.snd_nxt {
            self.local_ended = true;
            tracing::debug!(id = self.local_id, "udx: our END was acknowledged");
        }
    }

    fn ack_one(
        &mut self,
        now: Instant,
        seq: u32,
        sack: bool,
        rs: &mut RateSample,
        rate: &mut RateTrack,
    ) {
        let idx = seq.wrapping_sub(self.snd_una) as usize;
        let Some(p) = self.sent.get_mut(idx) else {
            return;
        };
        match p.state {
            PktState::Acked => return,
            PktState::InFlight => self.inflight -= 1,
            PktState::Lost => {} // its lost_queue entry goes stale
        }
        p.state = PktState::Acked;
        if sack {
            self.sacked += 1;
        }
        self.delivered += 1;
        rs.acked += 1;
        if rate.prior_time.is_none() || p.delivered >= rate.prior_delivered {
            rate.prior_delivered = p.delivered;
            rate.prior_time = Some(p.delivered_time);
            rate.send_elapsed = p.time_sent.saturating_duration_since(p.first_sent_time);
            rate.ack_elapsed = now.saturating_duration_since(p.delivered_time);
            rs.is_app_limited = p.app_limited;
            self.first_sent_time = Some(p.time_sent);
        }
        let sample = self.rtt.clamp(now.saturating_duration_since(p.time_sent));
        let retransmitted = p.retransmitted;
        let time_sent = p.time_sent;
        let padding = p.padding;
        if !retransmitted {
            self.rtt.update(now, sample);
            self.tlp_permitted = true;
            rs.rtt = Some(sample);
        }
        if !retransmitted || self.rtt.min_rtt().is_none_or(|m| sample >= m) {
            self.rack_rtt = sample;
            let next = seq.wrapping_add(1);
            if self
                .rack_time
                .is_none_or(|t| sent_after(time_sent, next, t, self.rack_end))
            {
                self.rack_time = Some(time_sent);
                self.rack_end = next;
            }
        }
        let next = seq.wrapping_add(1);
        if seq_lt(self.rack_fack, next) {
            self.rack_fack = next;
        } else if seq_lt(next, self.rack_fack) && !retransmitted {
            self.reordering_seen = true;
        }
        // MTU.
        if padding > 0 && self.mtu.outstanding == Some(seq) && self.mtu.state == MtuState::Search {
            self.stats.mtu_probes_acked += 1;
            self.mtu.outstanding = None;
            self.mtu.current = self.mtu.probe_size;
            tracing::debug!(
                id = self.local_id,
                mtu = self.mtu.current,
                "udx: MTU probe acknowledged"
            );
            self.mtu.next_size();
        }
        if self.mtu.state == MtuState::Base {
            self.mtu.state = MtuState::Search;
            self.mtu.next_size();
        }
    }

    fn reo_wnd(&self) -> Duration {
        if !self.reordering_seen && (self.ca != CaState::Open || self.sacked >= 3) {
            return Duration::ZERO;
        }
        let quarter = self.rtt.min_rtt().unwrap_or_default() / 4;
        quarter.min(self.rtt.srtt().unwrap_or_default())
    }

    /// RACK (RFC 8985 6.2): returns (packets lost, of which MTU probes).
    fn detect_loss(&mut self, now: Instant) -> (u32, u32) {
        self.reo_at = None;
        let Some(rack_time) = self.rack_time else {
            return (0, 0);
        };
        let reo = self.reo_wnd();
        let mut lost = 0;
        let mut probes = 0;
        let mut stale = 0usize;
        let mut i = 0;
        while i < self.inflight_order.len() {
            let (seq, gen) = self.inflight_order[i];
            let idx = seq.wrapping_sub(self.snd_una) as usize;
            let live = self
                .sent
                .get(idx)
                .is_some_and(|p| p.state == PktState::InFlight && p.tx_gen == gen);
            if !live {
                if i == 0 {
                    self.inflight_order.pop_front();
                } else {
                    stale += 1;
                    i += 1;
                }
                continue;
            }
            let p = &self.sent[idx];
            if p.time_sent > rack_time {
                break;
            }
            if sent_after(rack_time, self.rack_end, p.time_sent, seq.wrapping_add(1)) {
                let deadline = p.time_sent + self.rack_rtt + reo;
                if deadline <= now {
                    if self.mark_lost(seq) {
                        probes += 1;
                    }
                    lost += 1;
                    if i == 0 {
                        self.inflight_order.pop_front();
                        continue;
                    }
                    stale += 1;
                } else {
                    self.reo_at = Some(self.reo_at.map_or(deadline, |t| t.min(deadline)));
                }
            }
            i += 1;
        }
        if stale > 64 && stale > self.inflight_order.len() / 2 {
            let sent = &self.sent;
            let una = self.snd_una;
            self.inflight_order.retain(|&(seq, gen)| {
                sent.get(seq.wrapping_sub(una) as usize)
                    .is_some_and(|p| p.state == PktState::InFlight && p.tx_gen == gen)
            });
        }
        (lost, probes)
    }

    /// Marks an in-flight packet lost; returns true if it was an MTU probe.
    fn mark_lost(&mut self, seq: u32) -> bool {
        let idx = seq.wrapping_sub(self.snd_una) as usize;
        let Some(p) = self.sent.get_mut(idx) else {
            return false;
        };
        if p.state != PktState::InFlight {
            return false;
        }
        p.state = PktState::Lost;
        self.inflight -= 1;
        self.stats.lost += 1;
        self.lost_queue.push_back(seq);
        if p.padding > 0 {
            p.padding = 0;
            if self.mtu.outstanding == Some(seq) {
                self.mtu.outstanding = None;
                self.stats.mtu_probes_lost += 1;
                self.mtu.attempts += 1;
                if self.mtu.attempts >= MTU_MAX_PROBES {
                    // This size does not pass: halve the step.
                    self.mtu.max = self.mtu.probe_size - 1;
                    let mid = self.mtu.current + (self.mtu.probe_size - self.mtu.current) / 2;
                    if mid < self.mtu.current + MTU_MIN_STEP {
                        self.mtu.state = MtuState::Complete;
                        self.mtu.wanted = false;
                        tracing::debug!(
                            id = self.local_id,
                            mtu = self.mtu.current,
                            "udx: MTU search complete"
                        );
                    } else {
                        self.mtu.probe_size = mid;
                        self.mtu.attempts = 0;
                        self.mtu.wanted = true;
                    }
                } else {
                    self.mtu.wanted = true;
                }
            }
            return true;
        }
        false
    }

    fn schedule_tlp(&mut self, now: Instant) {
        self.tlp_at = None;
        if self.snd_una == self.snd_nxt || self.ca != CaState::Open || self.sacked > 0 {
            return;
        }
        let Some(srtt) = self.rtt.srtt() else {
            return;
        };
        let mut pto = 2 * srtt;
        if self.inflight + self.lost_queue.len() as u32 == 1 {
            pto += TLP_MAX_ACK_DELAY;
        }
        let at = now + pto.max(Duration::from_millis(1));
        self.tlp_at = Some(match self.rto_at {
            Some(rto) => at.min(rto),
            None => at,
        });
    }

    fn arm_zwp(&mut self, now: Instant) {
        let waiting = self.next_offset < self.buf_base + self.send_buf.len() as u64
            || (self.end_requested && self.end_seq.is_none());
        if self.send_rwnd == 0 && self.snd_una == self.snd_nxt && waiting && self.remote.is_some() {
            if self.zwp_at.is_none() {
                self.zwp_at = Some(now + self.rtt.rto());
            }
            self.zero_window_since.get_or_insert(now);
        } else {
            self.zwp_at = None;
            if self.send_rwnd > 0 {
                self.zero_window_since = None;
            }
        }
    }

    fn check_graceful_close(&mut self, now: Instant) {
        if self.closed.is_none() && self.local_ended && self.read_eof {
            tracing::debug!(id = self.local_id, "udx stream closed gracefully");
            self.close(now, Ok(()), false);
        }
    }

    fn close(&mut self, now: Instant, result: Result<(), Error>, send_destroy: bool) {
        if self.closed.is_some() {
            return;
        }
        if let Err(e) = &result {
            if !self.read_eof {
                self.read_error = Some(e.clone());
            }
            self.write_error = Some(e.clone());
        } else {
            self.read_eof = true;
            self.write_error = Some(Error::WriteAfterEnd);
        }
        self.destroy_pending = send_destroy && self.remote.is_some();
        self.drain_until = if result.is_ok() {
            // Long enough to ack the peer's retransmissions of its last packets for its whole
            // retransmission budget (assuming an RTO like ours), or the configured minimum.
            let budget = self.rtt.rto() * (2 * u32::from(self.config.max_rto_timeouts) + 1);
            Some(now + self.config.time_wait.max(budget))
        } else {
            None
        };
        self.closed = Some(result);
        self.sent.clear();
        self.inflight_order.clear();
        self.lost_queue.clear();
        self.send_buf.consume(self.send_buf.len());
        self.send_buf.shrink_if_empty();
        self.inflight = 0;
        for p in self.ooo.drain(..).flatten() {
            drop(p);
        }
        self.ooo_bytes = 0;
        self.ooo_count = 0;
        self.pool.clear();
        self.msgs_out.clear();
        self.rto_at = None;
        self.tlp_at = None;
        self.reo_at = None;
        self.zwp_at = None;
        self.pacing_at = None;
        self.heartbeat_pending = false;
        self.tlp_pending = false;
        self.event(Event::Closed);
        self.event(Event::Readable);
        self.event(Event::Writable);
        self.update_finished(now);
    }

    fn update_finished(&mut self, now: Instant) {
        if self.closed.is_some()
            && !self.destroy_pending
            && self.drain_until.is_none_or(|t| now >= t)
        {
            self.finished = true;
        }
    }

    /// Handles expired timers (call at or after [`Stream::poll_timeout`]; early calls are
    /// harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        if self.closed.is_some() || self.relayed {
            self.update_finished(now);
            return;
        }
        if let Some(idle) = self.config.idle_timeout {
            if self.remote.is_some() && now.saturating_duration_since(self.last_rx) >= idle {
                tracing::debug!(id = self.local_id, "udx stream idle timeout");
                self.close(now, Err(Error::TimedOut), false);
                return;
            }
        }
        if self.pacing_at.is_some_and(|t| t <= now) {
            self.pacing_at = None;
        }
        self.shrink_if_idle(now);
        if self.reo_at.is_some_and(|t| t <= now) {
            let (lost, probes) = self.detect_loss(now);
            if lost > probes && self.ca == CaState::Open {
                self.stats.fast_recoveries += 1;
                self.ca = CaState::Recovery;
                self.high_seq = self.snd_nxt;
                self.bbr.on_enter_recovery(self.inflight);
            }
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.on_rto(now);
            if self.closed.is_some() {
                return;
            }
        }
        if self.tlp_at.is_some_and(|t| t <= now) {
            self.tlp_at = None;
            if self.snd_una != self.snd_nxt && !self.tlp_in_flight && self.tlp_permitted {
                self.tlp_pending = true;
            }
        }
        if self.zwp_at.is_some_and(|t| t <= now) {
            if let (Some(limit), Some(since)) =
                (self.config.zero_window_timeout, self.zero_window_since)
            {
                if now.saturating_duration_since(since) >= limit {
                    tracing::debug!(id = self.local_id, "udx: zero window for too long");
                    self.close(now, Err(Error::ZeroWindow), true);
                    return;
                }
            }
            self.heartbeat_pending = true;
            self.zwp_at = Some(now + 2 * self.rtt.rto());
        }
        if let Some(ka) = self.config.keepalive {
            if self.remote.is_some()
                && self.snd_una == self.snd_nxt
                && now.saturating_duration_since(self.last_tx) >= ka
            {
                self.heartbeat_pending = true;
            }
        }
    }

    fn on_rto(&mut self, now: Instant) {
        self.rto_at = None;
        if self.snd_una == self.snd_nxt {
            return;
        }
        // libudx counts RTO timeouts per packet for the whole life of the stream, so on a lossy
        // but live path a packet can collect six over separate episodes and kill the stream.
        // We count consecutive timeouts without any acknowledgement in between: a dead peer
        // is still detected after the same six (about 13 RTO), a live one never.
        if self.rto_streak >= self.config.max_rto_timeouts {
            // The peer's END arrived and only our END is unacknowledged: JS has no TIME_WAIT
            // and may have forgotten the stream before its final ACK reached us.
            let only_end_left =
                self.read_eof && self.end_seq == Some(self.snd_una) && self.sent.len() == 1;
            if only_end_left {
                tracing::debug!(
                    id = self.local_id,
                    "udx: END unacknowledged after the peer ended, closing gracefully"
                );
                self.close(now, Ok(()), false);
            } else {
                tracing::debug!(id = self.local_id, "udx stream timed out");
                self.close(now, Err(Error::TimedOut), false);
            }
            return;
        }
        self.stats.rto_count += 1;
        tracing::debug!(id = self.local_id, una = self.snd_una, nxt = self.snd_nxt, rto = ?self.rtt.rto(), "udx: retransmission timeout");
        self.ca = CaState::Loss;
        self.high_seq = self.snd_nxt;
        self.tlp_in_flight = false;
        self.tlp_is_retrans = false;
        self.tlp_pending = false;
        self.tlp_at = None;
        let reo = self.reo_wnd();
        let rack_rtt = self.rack_rtt;
        self.rto_streak += 1;
        let mut to_lose = Vec::new();
        for (i, p) in self.sent.iter().enumerate() {
            if p.state == PktState::InFlight && (i == 0 || p.time_sent + rack_rtt + reo <= now) {
                to_lose.push(self.snd_una.wrapping_add(i as u32));
            }
        }
        for seq in to_lose {
            self.mark_lost(seq);
        }
        // Retransmit in sequence order.
        let sent = &self.sent;
        let una = self.snd_una;
        let mut q: Vec<u32> = self
            .lost_queue
            .drain(..)
            .filter(|s| {
                sent.get(s.wrapping_sub(una) as usize)
                    .is_some_and(|p| p.state == PktState::Lost)
            })
            .collect();
        q.sort_by_key(|s| s.wrapping_sub(una));
        q.dedup();
        self.lost_queue.extend(q);
        self.bbr.on_rto();
        // Constant 2·RTO spacing between timeouts, as libudx (not exponential).
        self.rto_at = Some(now + 2 * self.rtt.rto());
    }

    // ------------------------------------------------------------------ output

    /// Writes the next datagram(s) into `buf` (at least [`wire::MAX_DATAGRAM`] bytes, more
    /// for GSO batches). With `max_segments > 1`, several equal-size DATA packets to one
    /// destination may be batched (UDP GSO). Call until it returns `None`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Option<Transmit> {
        let remote = self.remote?;
        if self.relayed {
            self.destroy_pending = false;
            self.update_finished(now);
            return None;
        }
        if self.destroy_pending {
            self.destroy_pending = false;
            let h = Header {
                flags: flags::DESTROY,
                data_offset: 0,
                id: remote.id,
                rwnd: 0,
                seq: self.snd_nxt,
                ack: self.rcv_nxt,
            };
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.update_finished(now);
            return self.emit_header(now, buf, &h, remote.addr);
        }
        if self.finished {
            return None;
        }
        if self.ack_pending && self.ooo_count > 0 && self.closed.is_none() {
            return self.emit_ack(now, buf, remote);
        }
        if self.closed.is_some() {
            if self.ack_pending {
                return self.emit_ack(now, buf, remote);
            }
            return None;
        }
        if let Some(t) = self.transmit_data(now, buf, max_segments.max(1), remote) {
            self.ack_pending = false;
            return Some(t);
        }
        if self.ack_pending {
            return self.emit_ack(now, buf, remote);
        }
        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            let h = self.header(flags::HEARTBEAT, remote.id, self.snd_nxt);
            return self.emit_header(now, buf, &h, remote.addr);
        }
        if let Some(msg) = self.msgs_out.pop_front() {
            let h = self.header(flags::MESSAGE, remote.id, self.snd_nxt);
            let size = HEADER_LEN + msg.len();
            let out = buf.get_mut(..size)?;
            if h.encode(out).is_err() {
                return None;
            }
            out[HEADER_LEN..].copy_from_slice(&msg);
            self.count_tx(now, 1);
            return Some(Transmit {
                destination: remote.addr,
                size,
                segment_size: size,
            });
        }
        None
    }

    fn header(&mut self, flags: u8, id: u32, seq: u32) -> Header {
        let rwnd = self.rwnd();
        self.last_adv_rwnd = rwnd;
        Header {
            flags,
            data_offset: 0,
            id,
            rwnd,
            seq,
            ack: self.rcv_nxt,
        }
    }

    fn count_tx(&mut self, now: Instant, packets: u64) {
        self.stats.packets_tx += packets;
        self.last_tx = now;
    }

    fn emit_header(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        h: &Header,
        to: SocketAddr,
    ) -> Option<Transmit> {
        h.encode(buf).ok()?;
        self.count_tx(now, 1);
        tracing::trace!(
            id = self.local_id,
            flags = h.flags,
            seq = h.seq,
            ack = h.ack,
            "udx tx"
        );
        Some(Transmit {
            destination: to,
            size: HEADER_LEN,
            segment_size: HEADER_LEN,
        })
    }

    fn emit_ack(&mut self, now: Instant, buf: &mut [u8], remote: Remote) -> Option<Transmit> {
        self.ack_pending = false;
        let mut blocks = [(0u32, 0u32); MAX_SACK_BLOCKS];
        let mut n = 0;
        let mut run: Option<u32> = None;
        for (i, slot) in self.ooo.iter().enumerate() {
            let seq = self.rcv_nxt.wrapping_add(i as u32);
            match (slot.is_some(), run) {
                (true, None) => run = Some(seq),
                (false, Some(start)) => {
                    blocks[n] = (start, seq);
                    n += 1;
                    run = None;
                    if n == MAX_SACK_BLOCKS {
                        break;
                    }
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            if n < MAX_SACK_BLOCKS {
                blocks[n] = (start, self.rcv_nxt.wrapping_add(self.ooo.len() as u32));
                n += 1;
            }
        }
        let flags = if n > 0 { flags::SACK } else { 0 };
        let h = self.header(flags, remote.id, self.snd_nxt);
        h.encode(buf).ok()?;
        let len = wire::encode_sacks(&blocks[..n], buf.get_mut(HEADER_LEN..)?).ok()?;
        let size = HEADER_LEN + len;
        debug_assert_eq!(len, n * SACK_BLOCK_LEN);
        self.count_tx(now, 1);
        tracing::trace!(
            id = self.local_id,
            ack = self.rcv_nxt,
            sacks = n,
            "udx tx ack"
        );
        Some(Transmit {
            destination: remote.addr,
            size,
            segment_size: size,
        })
    }

    fn refill_pacer(&mut self, now: Instant) {
        let rate = self.bbr.pacing_rate().max(1.0);
        let burst = (rate * PACING_BURST_TIME.as_secs_f64()).max(PACING_MIN_BURST);
        if let Some(last) = self.pacer.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.pacer.tokens = (self.pacer.tokens + rate * dt).min(burst);
        }
        self.pacer.last = Some(now);
    }

    fn send_window(&self) -> u32 {
        let rwnd_pkts = if self.send_rwnd == 0 {
            0
        } else {
            (self.send_rwnd as usize / self.max_payload()).max(1) as u32
        };
        self.bbr.cwnd().min(rwnd_pkts)
    }

    fn unsent(&self) -> u64 {
        self.buf_base + self.send_buf.len() as u64 - self.next_offset
    }

    /// Picks the next data-path packet, honouring windows and pacing.
    fn next_packet(&mut self, now: Instant) -> Option<(Next, bool)> {
        if self.tlp_pending {
            // One probe ignoring windows: new data if any, else the newest packet again.
            if let Some(n) = self.plan_new(true) {
                return Some((n, true));
            }
            let last = self.snd_nxt.wrapping_sub(1);
            let idx = last.wrapping_sub(self.snd_una) as usize;
            if self
                .sent
                .get(idx)
                .is_some_and(|p| p.state == PktState::InFlight)
            {
                return Some((Next::Retransmit(last), true));
            }
            self.tlp_pending = false;
        }
        if self.pacer.tokens <= 0.0 {
            let wanted = !self.lost_queue.is_empty() || self.plan_new(false).is_some();
            if wanted {
                let rate = self.bbr.pacing_rate().max(1.0);
                let wait = Duration::from_secs_f64((-self.pacer.tokens + 1.0) / rate);
                self.pacing_at = Some(now + wait.max(Duration::from_micros(50)));
            }
            return None;
        }
        while let Some(&seq) = self.lost_queue.front() {
            let idx = seq.wrapping_sub(self.snd_una) as usize;
            if self
                .sent
                .get(idx)
                .is_some_and(|p| p.state == PktState::Lost)
            {
                if self.inflight < self.bbr.cwnd() {
                    return Some((Next::Retransmit(seq), false));
                }
                return None;
            }
            self.lost_queue.pop_front();
        }
        if self.inflight >= self.send_window() {
            return None;
        }
        match self.plan_new(false) {
            Some(n) => Some((n, false)),
            None => {
                // Application-limited: nothing to send though the window has room.
                self.app_limited_until = (self.delivered + u64::from(self.inflight)).max(1);
                None
            }
        }
    }

    fn plan_new(&self, tlp: bool) -> Option<Next> {
        let unsent = self.unsent();
        let max = self.max_payload();
        if unsent == 0 {
            if self.end_requested && self.end_seq.is_none() {
                return Some(Next::New {
                    len: 0,
                    flags: flags::END,
                    padding: 0,
                });
            }
            return None;
        }
        let len = unsent.min(max as u64) as u32;
        let mut f = flags::DATA;
        if self.end_requested && u64::from(len) == unsent {
            f |= flags::END;
        }
        let mut padding = 0;
        if self.mtu.wanted
            && self.mtu.outstanding.is_none()
            && self.mtu.state == MtuState::Search
            && !tlp
            && self.remote_changing.is_none()
            && len as usize == max
        {
            let pad =
                usize::from(self.mtu.probe_size).saturating_sub(usize::from(self.mtu.current));
            if (1..=255).contains(&pad) {
                padding = pad as u8;
            }
        }
        Some(Next::New {
            len,
            flags: f,
            padding,
        })
    }

    fn transmit_data(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
        remote: Remote,
    ) -> Option<Transmit> {
        self.refill_pacer(now);
        let mut total = 0usize;
        let mut segment = 0usize;
        let mut count = 0usize;
        let mut dest = remote.addr;
        while count < max_segments {
            let Some((next, tlp)) = self.next_packet(now) else {
                break;
            };
            let (size, to, probe) = match &next {
                Next::Retransmit(seq) => {
                    let p = &self.sent[seq.wrapping_sub(self.snd_una) as usize];
                    (HEADER_LEN + p.len as usize, p.dest, false)
                }
                Next::New { len, padding, .. } => (
                    HEADER_LEN + *padding as usize + *len as usize,
                    remote.addr,
                    *padding > 0,
                ),
            };
            if count > 0 && (to != dest || size > segment || probe) {
                break;
            }
            if total + size > buf.len() {
                break;
            }
            let out = &mut buf[total..total + size];
            match next {
                Next::Retransmit(seq) => self.write_retransmit(now, seq, out, tlp),
                Next::New {
                    len,
                    flags,
                    padding,
                } => self.write_new(now, len, flags, padding, out, remote, tlp),
            }
            if tlp {
                self.tlp_pending = false;
            }
            self.pacer.tokens -= size as f64;
            total += size;
            count += 1;
            if count == 1 {
                segment = size;
                dest = to;
            }
            if size < segment || probe || tlp {
                break;
            }
        }
        if count == 0 {
            return None;
        }
        if self.write_blocked && self.unsent() < UNSENT_HIGH_WATER / 2 && self.send_buf.free() > 0 {
            self.write_blocked = false;
            self.event(Event::Writable);
        }
        self.count_tx(now, count as u64);
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
        Some(Transmit {
            destination: dest,
            size: total,
            segment_size: segment,
        })
    }

    fn stamp_rate(&mut self, now: Instant) -> (u64, Instant, Instant, bool) {
        if self.inflight == 0 {
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
            self.bbr.on_idle_restart(now, self.max_payload());
        }
        (
            self.delivered,
            self.delivered_time.unwrap_or(now),
            self.first_sent_time.unwrap_or(now),
            self.app_limited_until != 0,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn write_new(
        &mut self,
        now: Instant,
        len: u32,
        f: u8,
        padding: u8,
        out: &mut [u8],
        remote: Remote,
        tlp: bool,
    ) {
        let seq = self.snd_nxt;
        let mut h = self.header(f, remote.id, seq);
        h.data_offset = padding;
        let _ = h.encode(out);
        let pad_end = HEADER_LEN + padding as usize;
        out[HEADER_LEN..pad_end].fill(0);
        let at = (self.next_offset - self.buf_base) as usize;
        self.send_buf
            .copy_at(at, &mut out[pad_end..pad_end + len as usize]);
        let (delivered, delivered_time, first_sent_time, app_limited) = self.stamp_rate(now);
        self.sent.push_back(SentPacket {
            offset: self.next_offset,
            len,
            flags: f,
            state: PktState::InFlight,
            retransmitted: false,
            padding,
            tx_gen: 0,
            time_sent: now,
            dest: remote.addr,
            dest_id: remote.id,
            delivered,
            delivered_time,
            first_sent_time,
            app_limited,
        });
        self.inflight_order.push_back((seq, 0));
        self.inflight += 1;
        self.next_offset += u64::from(len);
        self.snd_nxt = seq.wrapping_add(1);
        if f & flags::END != 0 {
            self.end_seq = Some(seq);
        }
        if padding > 0 {
            self.mtu.outstanding = Some(seq);
            self.mtu.wanted = false;
        }
        if tlp {
            self.tlp_in_flight = true;
            self.tlp_is_retrans = false;
            self.tlp_end = seq;
            self.tlp_permitted = false;
            self.rto_at = Some(now + self.rtt.rto());
        } else if self.tlp_at.is_none() {
            self.schedule_tlp(now);
        }
        tracing::trace!(
            id = self.local_id,
            seq,
            len,
            flags = f,
            padding,
            "udx tx data"
        );
    }

    fn write_retransmit(&mut self, now: Instant, seq: u32, out: &mut [u8], tlp: bool) {
        let idx = seq.wrapping_sub(self.snd_una) as usize;
        let (delivered, delivered_time, first_sent_time, app_limited) = self.stamp_rate(now);
        let rwnd = self.rwnd();
        self.last_adv_rwnd = rwnd;
        let ack = self.rcv_nxt;
        let p = &mut self.sent[idx];
        let h = Header {
            flags: p.flags,
            data_offset: 0,
            id: p.dest_id,
            rwnd,
            seq,
            ack,
        };
        let _ = h.encode(out);
        let at = (p.offset - self.buf_base) as usize;
        let len = p.len as usize;
        self.send_buf
            .copy_at(at, &mut out[HEADER_LEN..HEADER_LEN + len]);
        if p.state == PktState::InFlight {
            self.inflight -= 1; // TLP of an in-flight packet: re-added below
        }
        p.state = PktState::InFlight;
        p.retransmitted = true;
        p.padding = 0;
        p.tx_gen = p.tx_gen.wrapping_add(1);
        p.time_sent = now;
        p.delivered = delivered;
        p.delivered_time = delivered_time;
        p.first_sent_time = first_sent_time;
        p.app_limited = app_limited;
        let gen = p.tx_gen;
        self.inflight += 1;
        self.inflight_order.push_back((seq, gen));
        self.stats.retransmits += 1;
        if let Some(&front) = self.lost_queue.front() {
            if front == seq {
                self.lost_queue.pop_front();
            }
        }
        if tlp {
            self.tlp_in_flight = true;
            self.tlp_is_retrans = true;
            self.tlp_end = seq;
            self.tlp_permitted = false;
            self.rto_at = Some(now + self.rtt.rto());
        }
        tracing::trace!(id = self.local_id, seq, "udx tx retransmit");
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        for e in Event::ALL {
            if self.events & e.bit() != 0 {
                self.events &= !e.bit();
                return Some(e);
            }
        }
        None
    }

    /// When [`Stream::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        if self.closed.is_some() {
            return self.drain_until;
        }
        if self.relayed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.rto_at);
        min(self.tlp_at);
        min(self.reo_at);
        min(self.zwp_at);
        min(self.pacing_at);
        min(self.shrink_at());
        if self.remote.is_some() {
            if let Some(idle) = self.config.idle_timeout {
                min(Some(self.last_rx + idle));
            }
            if let Some(ka) = self.config.keepalive {
                if self.snd_una == self.snd_nxt {
                    min(Some(self.last_tx + ka));
                }
            }
        }
        t
    }

    /// Bytes of send and receive buffer storage this stream holds now (they grow while data
    /// flows and are released after a second without packets).
    pub fn buffer_storage(&self) -> usize {
        self.send_buf.storage() + self.recv_buf.storage()
    }

    /// When the buffers that grew while data flowed may be released: a second after the last
    /// packet either way (and, while the application leaves received bytes unread, every
    /// second after that). A connection that moved a burst of data and then idles goes back
    /// to holding (almost) nothing, while one in a steady transfer keeps its storage instead
    /// of regrowing it.
    fn shrink_at(&self) -> Option<Instant> {
        let big = |r: &ByteRing| r.storage() > SHRINK_ABOVE;
        (big(&self.send_buf) || big(&self.recv_buf)).then(|| {
            let idle = self.last_tx.max(self.last_rx) + SHRINK_AFTER_IDLE;
            self.shrink_retry.map_or(idle, |r| r.max(idle))
        })
    }

    /// Releases the empty buffers once the stream has been idle (see `shrink_at`).
    fn shrink_if_idle(&mut self, now: Instant) {
        if self.shrink_at().is_some_and(|t| t <= now) {
            self.send_buf.shrink_if_empty();
            self.recv_buf.shrink_if_empty();
            // One still holds bytes (unread data): look again in a second, not in a loop.
            self.shrink_retry = Some(now + SHRINK_AFTER_IDLE);
        }
    }

    /// True when the send side is idle: connected and open, nothing in flight, nothing
    /// unsent, nothing to retransmit, no pacing wait. A write now starts a new flight, so a
    /// driver may send its packets at once from the writer's context (a lone message then
    /// goes out without waiting for the driver's next pass).
    pub fn is_send_idle(&self) -> bool {
        self.remote.is_some()
            && !self.relayed
            && !self.finished
            && self.closed.is_none()
            && self.inflight == 0
            && self.unsent() == 0
            && self.lost_queue.is_empty()
            && self.pacing_at.is_none()
            && !self.tlp_pending
            && !self.destroy_pending
    }

    /// True when `poll_transmit` has something to send right now (used by drivers to decide
    /// whether to poll at all).
    pub fn wants_transmit(&self) -> bool {
        if self.remote.is_none() || self.finished || self.relayed {
            return false;
        }
        self.destroy_pending
            || self.ack_pending
            || self.heartbeat_pending
            || self.tlp_pending
            || (self.closed.is_none()
                && (!self.msgs_out.is_empty()
                    || (self.pacing_at.is_none()
                        && (!self.lost_queue.is_empty()
                            || self.unsent() > 0
                            || (self.end_requested && self.end_seq.is_none())))))
    }
}

/// Per-ack rate-sampling scratch.
#[derive(Debug, Default)]
struct RateTrack {
    prior_delivered: u64,
    prior_time: Option<Instant>,
    send_elapsed: Duration,
    ack_elapsed: Duration,
}

/// RACK's "sent after": by time, then by sequence.
fn sent_after(t1: Instant, seq1: u32, t2: Instant, seq2: u32) -> bool {
    t1 > t2 || (t1 == t2 && seq_diff(seq1, seq2) > 0)
}

fn overhead(addr: &SocketAddr) -> u16 {
    match addr {
        SocketAddr::V4(_) => IPV4_OVERHEAD,
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => IPV4_OVERHEAD,
        SocketAddr::V6(_) => IPV6_OVERHEAD,
    }
}

#[allow(dead_code)]
const _: () = assert!(INITIAL_CWND >= 4);
