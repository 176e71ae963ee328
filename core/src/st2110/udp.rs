//! UDP I/O for the ST 2110 bridges: sockets with large buffers, a sender that hands the
//! kernel many RTP packets per system call, and a receiver that takes many per call.
//!
//! Sending uses UDP generic segmentation offload (`UDP_SEGMENT`, Linux 4.18+) where the
//! kernel has it: a run of equal-size packets (the last may be shorter) goes down the stack
//! once, as one buffer of up to 64 datagrams, and is cut into datagrams by the device or at
//! the last moment (on loopback and veth it may even reach a GRO receiver whole). Without
//! it, packets go out 64 per `sendmmsg`.
//!
//! Receiving uses `recvmmsg` into several 64 KiB buffers with UDP generic receive offload
//! (`UDP_GRO`, Linux 5.0+): each buffer may hold a train of same-size datagrams from one
//! sender, split again here by the segment size the kernel reports.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    MultiHeaders, SockaddrStorage,
};
use socket2::{Domain, Protocol, Socket, Type};

/// Requested socket buffer; the kernel may cap it (`net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 32 << 20;

/// Datagrams per segmentation-offload send: the kernel's `UDP_MAX_SEGMENTS` (64 before
/// Linux 6.x raised it to 128).
const GSO_MAX_SEGMENTS: usize = 64;

/// Bytes per segmentation-offload send: the UDP payload limit with room to spare.
const GSO_MAX_BYTES: usize = 65_000;

/// Retries of one send refused by "port unreachable" reports.
const RETRIES: u32 = 3;

/// Packets per `sendmmsg` when there is no segmentation offload.
const MMSG_BATCH: usize = 64;

/// Receive buffers per `recvmmsg`.
const RECV_BUFFERS: usize = 8;

/// Bytes per receive buffer: a whole coalesced (GRO) train fits.
const RECV_BUFFER_BYTES: usize = 65_536;

/// A receiving socket: [`udp_socket`] on `bind`, joined to `multicast` (IPv4 group and
/// interface) if given.
pub fn receiving_socket(
    bind: SocketAddr,
    multicast: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
) -> io::Result<UdpSocket> {
    let socket = udp_socket(bind)?;
    if let Some((group, interface)) = multicast {
        socket.join_multicast_v4(&group, &interface)?;
    }
    Ok(socket)
}

/// A UDP socket bound to `bind` with large buffers; warns when the kernel gives less than
/// asked.
pub fn udp_socket(bind: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    // Past the kernel's cap where the process may (CAP_NET_ADMIN): a paced stream's
    // bursts are buffers of their own in the socket (about 64 KiB of accounting for 10
    // packets), so a capped 8 MiB holds only a few ms of a 1080p59.94 stream.
    if s.recv_buffer_size()? < SOCKET_BUFFER {
        let _ = setsockopt(&s, sockopt::RcvBufForce, &SOCKET_BUFFER);
    }
    if s.send_buffer_size()? < SOCKET_BUFFER {
        let _ = setsockopt(&s, sockopt::SndBufForce, &SOCKET_BUFFER);
    }
    for (what, got) in [
        ("receive", s.recv_buffer_size()?),
        ("send", s.send_buffer_size()?),
    ] {
        if got < SOCKET_BUFFER {
            tracing::warn!(
                "UDP {what} buffer is {got} bytes, not the {SOCKET_BUFFER} asked: the kernel caps it (raise net.core.{}mem_max, or give the process CAP_NET_ADMIN) and bursts may be dropped",
                if what == "receive" { "r" } else { "w" }
            );
        }
    }
    s.set_reuse_address(true)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}

/// Packets of one frame waiting to be sent: their headers, copied here, and their data,
/// borrowed from the frame, so the data reaches the kernel with no copy in between.
#[derive(Default)]
pub struct PacketQueue<'f> {
    headers: Vec<u8>,
    /// (end of the packet's headers in `headers`, its data).
    packets: Vec<(usize, &'f [u8])>,
}

impl<'f> PacketQueue<'f> {
    pub fn push(&mut self, header: &[u8], data: &'f [u8]) {
        self.headers.extend_from_slice(header);
        self.packets.push((self.headers.len(), data));
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    fn clear(&mut self) {
        self.headers.clear();
        self.packets.clear();
    }

    /// Packet `i` as its two parts.
    fn parts(&self, i: usize) -> [&[u8]; 2] {
        let start = if i == 0 { 0 } else { self.packets[i - 1].0 };
        let (end, data) = self.packets[i];
        [&self.headers[start..end], data]
    }

    fn packet_len(&self, i: usize) -> usize {
        let [h, d] = self.parts(i);
        h.len() + d.len()
    }
}

/// Sends packets on a connected socket, in as few system calls as the kernel allows.
pub struct UdpSender {
    socket: UdpSocket,
    /// Segmentation offload in use (switched off for good on the first refusal).
    gso: bool,
    /// "Port unreachable" reports from the destination (nobody listening there yet); the
    /// kernel gives one on a later send, which is then retried.
    pub unreachable: u64,
    /// Packets given up after repeated reports.
    pub dropped: u64,
    /// System calls made, for the benchmarks.
    pub syscalls: u64,
}

impl UdpSender {
    /// Takes a connected socket; `offload` false keeps to one datagram per message.
    pub fn new(socket: UdpSocket, offload: bool) -> Self {
        // Probing the option tells whether this kernel knows UDP_SEGMENT at all.
        let gso = offload && nix::sys::socket::getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        Self {
            socket,
            gso,
            unreachable: 0,
            dropped: 0,
            syscalls: 0,
        }
    }

    pub fn offload(&self) -> bool {
        self.gso
    }

    /// Sends every queued packet and empties the queue. A destination with nobody
    /// listening (ICMP port unreachable, reported as an error of a later send) is counted
    /// and the send retried, up to [`RETRIES`] times before its packets are dropped and
    /// counted.
    pub fn send(&mut self, queue: &mut PacketQueue<'_>) -> io::Result<()> {
        let result = if self.gso {
            self.send_gso(queue)
        } else {
            self.send_mmsg(queue, 0)
        };
        queue.clear();
        result
    }

    /// Runs of equal-size packets (the last may be shorter), one `sendmsg` each.
    fn send_gso(&mut self, queue: &PacketQueue<'_>) -> io::Result<()> {
        let n = queue.len();
        let mut iovs: Vec<IoSlice<'_>> = Vec::with_capacity(2 * GSO_MAX_SEGMENTS);
        let mut i = 0;
        while i < n {
            let seg = queue.packet_len(i);
            let mut j = i + 1;
            let mut bytes = seg;
            while j < n && j - i < GSO_MAX_SEGMENTS {
                let len = queue.packet_len(j);
                if len > seg || bytes + len > GSO_MAX_BYTES {
                    break;
                }
                bytes += len;
                j += 1;
                if len < seg {
                    break; // a shorter one can only end a run
                }
            }
            iovs.clear();
            iovs.extend(
                (i..j)
                    .flat_map(|k| queue.parts(k))
                    .filter(|p| !p.is_empty())
                    .map(IoSlice::new),
            );
            let segment = seg as u16;
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            let cmsgs: &[ControlMessage] = if j - i > 1 { &cmsg } else { &[] };
            let mut retries = 0;
            loop {
                self.syscalls += 1;
                match sendmsg::<()>(
                    self.socket.as_raw_fd(),
                    &iovs,
                    cmsgs,
                    MsgFlags::empty(),
                    None,
                ) {
                    Ok(_) => break,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECONNREFUSED) => {
                        self.unreachable += 1;
                        retries += 1;
                        if retries > RETRIES {
                            self.dropped += (j - i) as u64;
                            break;
                        }
                    }
                    // The device or kernel will not segment (EIO: no checksum offload;
                    // EINVAL/EOPNOTSUPP: too old): send the rest one datagram per message.
                    Err(e @ (Errno::EIO | Errno::EINVAL | Errno::EOPNOTSUPP)) if j - i > 1 => {
                        tracing::warn!(
                            "UDP segmentation offload refused ({e}); sending one datagram per message from now on"
                        );
                        self.gso = false;
                        return self.send_mmsg(queue, i);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Packets `from..` in `sendmmsg` calls of up to [`MMSG_BATCH`].
    fn send_mmsg(&mut self, queue: &PacketQueue<'_>, from: usize) -> io::Result<()> {
        use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags};
        let mut first = from;
        while first < queue.len() {
            let last = (first + MMSG_BATCH).min(queue.len());
            let iovs: Vec<[IoSlice<'_>; 2]> = (first..last)
                .map(|i| queue.parts(i).map(IoSlice::new))
                .collect();
            let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = iovs
                .iter()
                .map(|_| SendAncillaryBuffer::default())
                .collect();
            let mut msgs: Vec<MMsgHdr<'_>> = iovs
                .iter()
                .zip(controls.iter_mut())
                .map(|(iov, control)| MMsgHdr::new(iov, control))
                .collect();
            let (mut sent, mut retries) = (0, 0);
            while sent < msgs.len() {
                self.syscalls += 1;
                match sendmmsg(&self.socket, &mut msgs[sent..], SendFlags::empty()) {
                    Ok(0) => {
                        // The kernel took nothing: give the rest of the batch up, counted.
                        self.dropped += (msgs.len() - sent) as u64;
                        break;
                    }
                    Ok(n) => {
                        sent += n;
                        retries = 0;
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(rustix::io::Errno::CONNREFUSED) => {
                        self.unreachable += 1;
                        retries += 1;
                        if retries > RETRIES {
                            self.dropped += 1;
                            sent += 1;
                            retries = 0;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            first = last;
        }
        Ok(())
    }
}

/// Receives datagrams many per system call.
pub struct UdpReceiver {
    socket: UdpSocket,
    buffers: Vec<Vec<u8>>,
    /// Receive offload in use.
    gro: bool,
    /// The kernel stamps each datagram with its arrival time.
    timestamps: bool,
    /// Least time between reads that did not fill every buffer (see `gather_for`).
    gather: Option<std::time::Duration>,
    last_read_partial: bool,
    /// System calls made, for the benchmarks.
    pub syscalls: u64,
}

impl UdpReceiver {
    /// Takes a bound socket (with its read timeout set); `offload` asks for UDP_GRO.
    pub fn new(socket: UdpSocket, offload: bool) -> Self {
        let gro = offload && setsockopt(&socket, sockopt::UdpGroSegment, &true).is_ok();
        Self {
            socket,
            buffers: vec![vec![0u8; RECV_BUFFER_BYTES]; RECV_BUFFERS],
            gro,
            timestamps: false,
            gather: None,
            last_read_partial: false,
            syscalls: 0,
        }
    }

    /// After a read that did not fill every buffer, lets datagrams gather for `interval`
    /// before the next: a paced stream otherwise wakes the receiver for every burst
    /// (hundreds per frame), each wake-up costing more than the copy it reads. Adds up to
    /// `interval` of latency; the socket buffer holds what arrives meanwhile.
    pub fn gather_for(&mut self, interval: std::time::Duration) {
        self.gather = Some(interval);
    }

    /// Asks the kernel to stamp each datagram with its arrival time (`SO_TIMESTAMPNS`),
    /// given to [`receive_timed`](Self::receive_timed): what a timing check needs, as
    /// user-space reads come in batches, late whenever the receiver was busy. Returns
    /// whether the kernel agreed.
    pub fn stamp_arrivals(&mut self) -> bool {
        self.timestamps = setsockopt(&self.socket, sockopt::ReceiveTimestampns, &true).is_ok();
        self.timestamps
    }

    pub fn offload(&self) -> bool {
        self.gro
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Waits (up to the socket's read timeout) for datagrams and hands each to `each`, in
    /// arrival order. Returns how many there were; 0 when the wait timed out.
    pub fn receive(&mut self, each: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        self.receive_timed(&mut |datagram, _| each(datagram))
    }

    /// As [`receive`](Self::receive), with each datagram's arrival time (TAI ns) as the
    /// kernel stamped it, if [`stamp_arrivals`](Self::stamp_arrivals) was asked (the
    /// datagrams of one offloaded train share the time of its first).
    pub fn receive_timed(&mut self, each: &mut dyn FnMut(&[u8], Option<u64>)) -> io::Result<usize> {
        if let (Some(interval), true) = (self.gather, self.last_read_partial) {
            std::thread::sleep(interval);
        }
        // (bytes, GRO segment size, arrival on the real-time clock) per filled buffer.
        let mut filled = [(0usize, 0usize, None::<u64>); RECV_BUFFERS];
        let mut count = 0;
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(b)])
                .collect();
            // Fresh headers each call: the kernel shrinks each header's control length to
            // what it wrote, so reused ones would truncate the next GRO segment size.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                RECV_BUFFERS,
                Some(nix::cmsg_space!(i32, nix::sys::time::TimeSpec)),
            );
            self.syscalls += 1;
            let results = match recvmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => r,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(0),
                Err(e) => return Err(e.into()),
            };
            for (slot, msg) in filled.iter_mut().zip(results) {
                let (mut segment, mut arrival) = (0, None);
                for c in msg.cmsgs().ok().into_iter().flatten() {
                    match c {
                        ControlMessageOwned::UdpGroSegments(s) => {
                            segment = usize::try_from(s).unwrap_or(0)
                        }
                        ControlMessageOwned::ScmTimestampns(t) => {
                            arrival = u64::try_from(t.tv_sec())
                                .ok()
                                .and_then(|s| s.checked_mul(1_000_000_000))
                                .and_then(|ns| ns.checked_add(t.tv_nsec().try_into().ok()?));
                        }
                        _ => {}
                    }
                }
                *slot = (msg.bytes, segment, arrival);
                count += 1;
            }
        }
        self.last_read_partial = count > 0 && count < RECV_BUFFERS;
        // Kernel stamps are on the real-time clock: move them to TAI.
        let tai_offset = if self.timestamps {
            let realtime = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
            let realtime = realtime.tv_sec as i64 * 1_000_000_000 + realtime.tv_nsec as i64;
            crate::time::now_tai_ns() as i64 - realtime
        } else {
            0
        };
        let mut datagrams = 0;
        for (buffer, &(bytes, segment, arrival)) in self.buffers.iter().zip(&filled[..count]) {
            let data = &buffer[..bytes.min(buffer.len())];
            let arrival = arrival.map(|t| t.saturating_add_signed(tai_offset));
            if segment == 0 || segment >= data.len() {
                each(data, arrival);
                datagrams += 1;
            } else {
                for datagram in data.chunks(segment) {
                    each(datagram, arrival);
                    datagrams += 1;
                }
            }
        }
        Ok(datagrams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair(offload: bool) -> (UdpSender, UdpReceiver) {
        let rx = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let tx = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        (UdpSender::new(tx, offload), UdpReceiver::new(rx, offload))
    }

    /// Datagrams of the sizes an RFC 4175 frame gives: full ones, a short one ending the
    /// frame, then more full ones; each carries its number and a pattern.
    fn datagrams() -> Vec<Vec<u8>> {
        // RFC 4175 GPM at 1080p: one SRD (1340 bytes) or two (1346), then others.
        let sizes = (0..150).map(|i| match i {
            70 => 333,
            71..=73 => 1000,
            i if i > 100 && i % 4 == 3 => 1346,
            i if i > 100 => 1340,
            _ => 1428,
        });
        sizes
            .enumerate()
            .map(|(n, size)| {
                let mut d: Vec<u8> = (0..size).map(|b| (b * 7 + n) as u8).collect();
                d[..4].copy_from_slice(&(n as u32).to_be_bytes());
                d
            })
            .collect()
    }

    /// Sends [`datagrams`] and reads them back, with kernel arrival times if `stamped`.
    fn roundtrip(offload: bool, stamped: bool) -> (Vec<Vec<u8>>, u64, u64) {
        let (mut tx, mut rx) = pair(offload);
        if stamped {
            assert!(rx.stamp_arrivals(), "SO_TIMESTAMPNS refused");
        }
        let sent = datagrams();
        let before = crate::time::now_tai_ns();
        let mut queue = PacketQueue::default();
        for d in &sent {
            // Headers and data as a packetizer gives them (and an empty header once).
            let split = if d.len() == 333 { 0 } else { 26 };
            queue.push(&d[..split], &d[split..]);
        }
        tx.send(&mut queue).unwrap();
        assert!(queue.is_empty());
        let (mut got, mut arrivals) = (Vec::new(), Vec::new());
        // Bounded: every call returns at least one datagram or times out (200 ms).
        for _ in 0..sent.len() {
            if got.len() == sent.len() {
                break;
            }
            let n = rx
                .receive_timed(&mut |d, at| {
                    got.push(d.to_vec());
                    arrivals.push(at);
                })
                .unwrap();
            if n == 0 {
                break;
            }
        }
        let after = crate::time::now_tai_ns();
        if stamped {
            // Each datagram has its kernel arrival time, between the send and now (1 ms
            // of slack for the two clocks read apart).
            assert!(
                arrivals
                    .iter()
                    .all(|a| a
                        .is_some_and(|a| { a + 1_000_000 >= before && a <= after + 1_000_000 })),
                "arrival times {before}..{after}: {:?}",
                &arrivals[..5.min(arrivals.len())]
            );
        } else {
            assert!(arrivals.iter().all(Option::is_none));
        }
        let summary = |v: &[Vec<u8>]| -> Vec<(u32, usize)> {
            v.iter()
                .map(|d| (u32::from_be_bytes(d[..4].try_into().unwrap()), d.len()))
                .collect()
        };
        assert_eq!(
            summary(&got),
            summary(&sent),
            "datagrams (number, size) differ (offload {offload})"
        );
        assert_eq!(got, sent, "datagrams differ (offload {offload})");
        (got, tx.syscalls, rx.syscalls)
    }

    #[test]
    fn datagrams_arrive_whole_and_in_order_with_offload() {
        let (_, tx_calls, rx_calls) = roundtrip(true, true);
        // 150 datagrams: far fewer calls than datagrams either way.
        assert!(tx_calls < 50, "{tx_calls} sends");
        assert!(rx_calls < 150, "{rx_calls} receives");
    }

    #[test]
    fn datagrams_arrive_whole_and_in_order_without_offload() {
        let (_, tx_calls, _) = roundtrip(false, false);
        assert!(tx_calls <= 3, "{tx_calls} sendmmsg calls for 150 datagrams");
    }

    #[test]
    fn nobody_listening_is_counted_not_fatal() {
        for offload in [true, false] {
            nobody_listening(offload);
        }
    }

    fn nobody_listening(offload: bool) {
        let rx = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = rx.local_addr().unwrap();
        drop(rx);
        let tx = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        tx.connect(addr).unwrap();
        let mut tx = UdpSender::new(tx, offload);
        let sent = datagrams();
        for round in 0..3 {
            let mut queue = PacketQueue::default();
            for d in sent.iter().take(10) {
                queue.push(&d[..12], &d[12..]);
            }
            tx.send(&mut queue)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert!(tx.unreachable > 0, "reports counted (offload {offload})");
    }
}
