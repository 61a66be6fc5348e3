//! The TCP connection between nodes that carries a migration and then the deputy channel of the
//! migrated process: plain, or, when the cluster has a key, a Noise [`SecureStream`]
//! (`mos_proto::secure`). Both ends are made here: [`connect`] (the home side, mosrun, with a
//! credential its mosd issued) and [`accept`] (mosd's migration server, with the cluster key).
use crate::Error;
use mos_proto::auth::ClusterKey;
use mos_proto::secure::{self, Credential, Half, SecureError, SecureStream, Ticket};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a new connection may take to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the whole secure handshake may take (a silent or trickling peer is dropped after this).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A socket whose every read and write may only take what is left until `until`.
struct Deadline {
    s: TcpStream,
    until: Instant,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let d = self.until.saturating_duration_since(Instant::now());
        if d.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "secure handshake took too long"));
        }
        Ok(d)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.set_read_timeout(Some(self.left()?))?;
        self.s.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.s.set_write_timeout(Some(self.left()?))?;
        self.s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// What the deputy channel needs of a stream beyond `Read + Write`: its descriptor for `poll`,
/// whether data was already received that `poll` cannot see, and a read that does not block.
pub trait Wire: Read + Write + AsFd {
    /// Received data is held in user space (a `read` returns it without waiting): a poll loop
    /// must not sleep on the descriptor while this is true.
    fn buffered(&self) -> bool {
        false
    }

    /// Reads what is there without blocking (`WouldBlock` when nothing is).
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(self.as_fd(), buf)
    }

    /// The bytes travel unencrypted (no cluster key): the kernel lane, which carries no
    /// encryption, may be offered beside it.
    fn plain(&self) -> bool {
        true
    }
}

/// An unguessable token (a fork's `ForkJoin`, a lane's `LaneJoin`).
pub fn token() -> io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::sys::socket::recv(fd.as_raw_fd(), buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

impl Wire for TcpStream {}
impl Wire for std::os::unix::net::UnixStream {}

/// A connection between nodes.
#[derive(Debug)]
pub enum Channel {
    /// No cluster key: the frames travel as they are.
    Plain(TcpStream),
    /// Authenticated and encrypted.
    Secure(Box<SecureStream<TcpStream>>),
}

impl Channel {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Channel::Plain(s) => s,
            Channel::Secure(s) => s.get_ref(),
        }
    }

    pub fn is_secure(&self) -> bool {
        matches!(self, Channel::Secure(_))
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(d)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Ends the connection both ways (a thread blocked on it returns).
    pub fn shutdown(&self) {
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
    }

    /// A second handle of this connection that holds one direction, for another thread, while
    /// this one keeps the other (a post-copy's lazy phase receives and sends at once). On a plain
    /// connection it is a clone of the socket; on a secure one the direction's session state is
    /// lent ([`SecureStream::split_off`]) and must come back through [`Channel::rejoin`] before
    /// this handle uses that direction again.
    pub fn split_off(&mut self, half: Half) -> io::Result<Channel> {
        match self {
            Channel::Plain(s) => Ok(Channel::Plain(s.try_clone()?)),
            Channel::Secure(s) => {
                let tcp = s.get_ref().try_clone()?;
                Ok(Channel::Secure(Box::new(s.split_off(tcp, half)?)))
            }
        }
    }

    /// Takes back a handle made by [`Channel::split_off`].
    pub fn rejoin(&mut self, half: Channel) -> io::Result<()> {
        match (self, half) {
            (Channel::Plain(_), Channel::Plain(_)) => Ok(()),
            (Channel::Secure(s), Channel::Secure(h)) => s.rejoin(*h),
            _ => Err(io::Error::other("rejoin of a plain and a secure connection")),
        }
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(s) => s.read(buf),
            Channel::Secure(s) => s.read(buf),
        }
    }
}

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(s) => s.write(buf),
            Channel::Secure(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Channel::Plain(s) => s.flush(),
            Channel::Secure(s) => s.flush(),
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}

/// The socket read without blocking, as a `Read` (for [`SecureStream::read_from`]).
struct NoWait(std::os::fd::RawFd);

impl Read for NoWait {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::sys::socket::recv(self.0, buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }
}

impl Wire for Channel {
    fn plain(&self) -> bool {
        !self.is_secure()
    }

    fn buffered(&self) -> bool {
        match self {
            Channel::Plain(_) => false,
            Channel::Secure(s) => s.buffered(),
        }
    }

    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(s) => recv_now(s.as_fd(), buf),
            Channel::Secure(s) => {
                let fd = s.get_ref().as_raw_fd();
                s.read_from(&mut NoWait(fd), buf)
            }
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Connects to the mosd at `target`; with a credential (the cluster has a key), opens a secure
/// connection with it.
pub fn connect(target: SocketAddr, cred: Option<&Credential>) -> Result<Channel, Error> {
    let s = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map_err(|e| Error::Connect { addr: target, source: e })?;
    crate::migrate::tune(&s);
    let Some(cred) = cred else { return Ok(Channel::Plain(s)) };
    let s = secure::initiate(Deadline { s, until: Instant::now() + HANDSHAKE_TIMEOUT }, cred)
        .map_err(|e| Error::Secure { addr: target, reason: describe(&e) })?
        .map_inner(|d| d.s);
    let _ = s.get_ref().set_read_timeout(None);
    let _ = s.get_ref().set_write_timeout(None);
    Ok(Channel::Secure(Box::new(s)))
}

/// What the initiator sees of a refusal: the responder just drops the connection.
fn describe(e: &SecureError) -> String {
    match e {
        SecureError::Closed => "the node closed the connection during the handshake (it has another cluster key, or none)".into(),
        SecureError::Io(io) if io.kind() == io::ErrorKind::ConnectionReset => {
            "the node reset the connection during the handshake (it has another cluster key, or none)".into()
        }
        other => other.to_string(),
    }
}

/// Takes an incoming connection: with the cluster key, runs the handshake (at most
/// [`HANDSHAKE_TIMEOUT`]) and returns the ticket the peer presented; without, the plain stream.
pub fn accept(s: TcpStream, key: Option<&ClusterKey>) -> Result<(Channel, Option<Ticket>), SecureError> {
    crate::migrate::tune(&s);
    let Some(key) = key else { return Ok((Channel::Plain(s), None)) };
    let (s, ticket) = secure::respond(Deadline { s, until: Instant::now() + HANDSHAKE_TIMEOUT }, key, wall_ms())?;
    let s = s.map_inner(|d| d.s);
    let _ = s.get_ref().set_read_timeout(None);
    let _ = s.get_ref().set_write_timeout(None);
    Ok((Channel::Secure(Box::new(s)), Some(ticket)))
}
