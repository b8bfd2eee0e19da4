//! Reading what a socket has without waiting and without holding a buffer while idle: the
//! one read path of sessions and of shared upstream connections.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// Size reserved in a read buffer before each read.
pub const READ_CHUNK: usize = 16 * 1024;

/// A client connection: a stream that can also say when it is readable, so that an idle
/// session holds no read buffer (buffers are taken only when bytes are waiting).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin {
    /// Polls for read readiness (as `TcpStream::poll_read_ready`).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ClientStream for tokio::net::TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl ClientStream for tokio::net::UnixStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

/// What a non-blocking read found.
pub enum ReadOutcome {
    /// This many bytes were appended (possibly 0: the readiness was spurious).
    Data(usize),
    /// The peer closed its side.
    Eof,
}

/// Reads what `io` can give without waiting into `buf`, reserving room only as bytes arrive,
/// up to `budget` bytes so one busy connection cannot starve the others on its thread.
///
/// A read that returns less than the room offered has emptied the source for now (for the
/// TLS stream: rustls handed over all it had decrypted), so the loop stops there without a
/// probing read; a full read means there may be more. The TLS stream must never be left
/// holding decrypted bytes (they would not make the socket readable again): when a read of
/// it returns the whole budget, the caller reads again (`Session::drain_upstream`).
pub fn read_available<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    budget: usize,
) -> std::io::Result<ReadOutcome> {
    // The readiness future of the select loop holds the real waker; a poll here that finds
    // nothing just ends this round.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut total = 0;
    while total < budget {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let room = (buf.capacity() - buf.len()).min(budget - total);
        match tokio_util::io::poll_read_buf(
            Pin::new(&mut *io),
            &mut cx,
            &mut (&mut *buf).limit(room),
        ) {
            Poll::Ready(Ok(0)) => {
                return Ok(if total == 0 {
                    ReadOutcome::Eof
                } else {
                    ReadOutcome::Data(total)
                })
            }
            Poll::Ready(Ok(n)) => {
                total += n;
                if n < room {
                    break;
                }
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(ReadOutcome::Data(total))
}
