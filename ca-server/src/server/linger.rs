//! Lingering close: when the server closes a connection whose peer is still
//! sending (a body refused as too large, a request cut by a deadline), it
//! first shuts its side down, then reads and throws away what keeps
//! arriving, for a bounded time and a bounded number of bytes, before the
//! socket is closed. Closing with unread data makes the kernel answer with
//! a reset, and a reset makes the peer's kernel discard the response it
//! has already received (a 413 that the client never sees). Apache calls
//! this lingering close; hyper leaves it to the I/O type, which this is.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a closing connection may keep draining its peer.
pub const LINGER_TIME: Duration = Duration::from_secs(2);

/// How many bytes a closing connection reads and discards at most.
pub const LINGER_BYTES: usize = 256 * 1024;

/// An I/O stream whose shutdown lingers (see the module header).
pub struct Lingering<T> {
    inner: T,
    state: State,
}

enum State {
    Open,
    Draining {
        discarded: usize,
        deadline: Pin<Box<Sleep>>,
    },
    Closed,
}

impl<T> Lingering<T> {
    pub fn new(inner: T) -> Lingering<T> {
        Lingering {
            inner,
            state: State::Open,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    match Pin::new(&mut this.inner).poll_shutdown(cx) {
                        Poll::Pending => return Poll::Pending,
                        // A peer that is gone has nothing left to drain.
                        Poll::Ready(Err(e)) => {
                            this.state = State::Closed;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    this.state = State::Draining {
                        discarded: 0,
                        deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                    };
                }
                State::Draining {
                    discarded,
                    deadline,
                } => {
                    if deadline.as_mut().poll(cx).is_ready() || *discarded >= LINGER_BYTES {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                            this.state = State::Closed;
                        }
                        Poll::Ready(Ok(())) => *discarded += buf.filled().len(),
                        Poll::Ready(Err(_)) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small socket buffers, so that a 200 KB request cannot sit in them
    /// whole: the peer is still sending when the server closes, as with a
    /// large body refused by its declared length.
    const SMALL: u32 = 4096;

    async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(SMALL).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    async fn client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(SMALL).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// The server reads the start of a request, answers, and closes; the
    /// client writes its whole request and only then reads. Returns whether
    /// the client could send all of it, and what it read.
    async fn refuse_early(linger: bool) -> (io::Result<()>, io::Result<Vec<u8>>) {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            let mut first = [0u8; 1];
            if linger {
                let mut stream = Lingering::new(stream);
                stream.read_exact(&mut first).await?;
                stream.write_all(b"refused").await?;
                stream.shutdown().await
            } else {
                let mut stream = stream;
                stream.read_exact(&mut first).await?;
                stream.write_all(b"refused").await?;
                stream.shutdown().await
            }
        });
        let mut client = client(addr).await;
        let sent = client.write_all(&vec![7u8; 200 * 1024]).await;
        let _ = client.shutdown().await;
        let _ = server.await;
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer).await.map(|_| answer);
        (sent, read)
    }

    #[tokio::test]
    async fn a_closing_side_drains_its_peer_so_it_is_not_reset() {
        let (sent, answer) = refuse_early(true).await;
        assert!(sent.is_ok(), "the client was reset while sending: {sent:?}");
        assert_eq!(answer.ok().as_deref(), Some(&b"refused"[..]));
        // The same exchange without lingering resets the client mid-request
        // (a TLS client then loses the answer with its session): checked so
        // that this test shows what lingering is for.
        let (sent, _) = refuse_early(false).await;
        assert!(sent.is_err(), "without lingering the client was not reset");
    }

    #[tokio::test]
    async fn draining_is_bounded_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A peer that never stops and never closes: the drain ends at the
        // deadline anyway.
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let started = tokio::time::Instant::now();
        let mut stream = Lingering::new(stream);
        stream.shutdown().await.unwrap();
        let took = started.elapsed();
        assert!(took >= LINGER_TIME && took < LINGER_TIME * 2, "{took:?}");
    }
}
