//! The library's side of the encrypted-message gate ([`crate::backup::packets`]): a
//! writer that passes nothing on before the stream's head is judged an encrypted
//! message, for [`Transfer::Library`](crate::Transfer::Library)'s download into the
//! fetch pipeline (the workload's `hash.py` gates the aws CLI's).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;

use crate::backup::packets::{self, Head};

/// Where the gate stands.
enum State {
    /// The head is read into `held` and judged as it grows.
    Judging,
    /// Judged an encrypted message: `held` is written out from this offset, before
    /// anything else.
    Draining(usize),
    /// Everything passes through.
    Open,
    /// Not an encrypted message (why): nothing was or will be written.
    Refused(String),
}

/// Wraps a writer (the pipeline's standard input) with the gate.
pub(crate) struct Gated<W> {
    inner: W,
    held: Vec<u8>,
    state: State,
}

impl<W: AsyncWrite + Unpin> Gated<W> {
    pub(crate) fn new(inner: W) -> Self {
        Gated {
            inner,
            held: Vec::new(),
            state: State::Judging,
        }
    }

    /// Why the stream was refused, if it was.
    pub(crate) fn refusal(&self) -> Option<&str> {
        match &self.state {
            State::Refused(why) => Some(why),
            _ => None,
        }
    }

    fn refused(why: &str) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, why.to_string())
    }

    /// Judges what is held (all of the stream when `ended`).
    fn judge(&mut self, ended: bool) -> io::Result<()> {
        match packets::judge(&self.held, ended) {
            Head::NeedMore => Ok(()),
            Head::Encrypted => {
                self.state = State::Draining(0);
                Ok(())
            }
            Head::Refused(why) => {
                let e = Self::refused(&why);
                self.held = Vec::new();
                self.state = State::Refused(why);
                Err(e)
            }
        }
    }

    /// Writes out what was held once the head passed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let State::Draining(done) = self.state {
            if done == self.held.len() {
                self.held = Vec::new();
                self.state = State::Open;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.state = State::Draining(done + n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Gated<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &this.state {
            State::Judging => {
                this.held.extend_from_slice(buf);
                return Poll::Ready(this.judge(false).map(|()| buf.len()));
            }
            State::Refused(why) => return Poll::Ready(Err(Self::refused(why))),
            State::Draining(_) | State::Open => {}
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &this.state {
            // Nothing was passed on yet.
            State::Judging => Poll::Ready(Ok(())),
            State::Refused(why) => Poll::Ready(Err(Self::refused(why))),
            State::Draining(_) | State::Open => {
                ready!(this.poll_drain(cx))?;
                Pin::new(&mut this.inner).poll_flush(cx)
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let State::Judging = this.state {
            // The stream ended while its head was judged: all of it is there.
            if let Err(e) = this.judge(true) {
                return Poll::Ready(Err(e));
            }
        }
        if let State::Refused(why) = &this.state {
            return Poll::Ready(Err(Self::refused(why)));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::packets::tests::GPG_HEAD;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn an_encrypted_stream_passes_whole_in_order_whatever_its_pieces() {
        let stream: Vec<u8> = GPG_HEAD.iter().copied().chain(0..=255).collect();
        for piece in [1, 3, 15, 16, 17, 400] {
            let mut out = Vec::new();
            let mut gated = Gated::new(&mut out);
            for chunk in stream.chunks(piece) {
                gated.write_all(chunk).await.unwrap();
            }
            gated.shutdown().await.unwrap();
            assert!(gated.refusal().is_none());
            assert_eq!(out, stream, "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn a_plain_stream_is_refused_and_nothing_is_written() {
        let mut out = Vec::new();
        let mut gated = Gated::new(&mut out);
        let e = gated
            .write_all(&[0xa3, 0x03, 0x78, 0x9c])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(gated.write_all(b"more").await.is_err());
        assert!(gated.shutdown().await.is_err());
        let why = gated.refusal().unwrap().to_string();
        assert!(why.contains("a compressed data packet (tag 8)"), "{why}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_its_head_is_refused_at_shutdown() {
        let mut out = Vec::new();
        let mut gated = Gated::new(&mut out);
        gated.write_all(&GPG_HEAD[..10]).await.unwrap();
        assert!(gated.shutdown().await.is_err());
        assert!(gated.refusal().unwrap().contains("ends after 10 bytes"));
        assert!(out.is_empty());
    }
}
