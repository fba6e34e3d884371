//! A writer whose writes happen on a thread of their own.
//!
//! A layer's sink is the content store's blob writer, which hashes everything it writes: sha256
//! costs about as much as reading the file, so running it on its own thread lets it overlap
//! with tarring, hashing the tar and compressing. Data crosses in owned chunks through a
//! bounded channel: at most [`QUEUE`] chunks wait, and a slow disk holds the producer back
//! instead of filling memory.

use crate::fill_buffer::FillBuffer;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Size of the chunks that [`Write::write`] gathers before handing them over.
const CHUNK: usize = 1 << 20;
/// Chunks that may wait for the thread.
const QUEUE: usize = 4;
/// The most handed to the inner writer at once. Measured on the dev VM (Linux 6.18, ext4):
/// page-aligned 1 MiB writes into a new file ran 2–3× slower than 256 KiB ones (the page cache
/// takes larger folios for them), while 256 KiB is still few system calls.
const WRITE_PIECE: usize = 256 << 10;

/// A writer that forwards everything, in order, to `W` on another thread.
pub(crate) struct WriterThread<W: Write + Send + 'static> {
    /// The chunk being filled (`CHUNK` bytes).
    chunk: FillBuffer,
    chunks: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> WriterThread<W> {
    /// Starts the thread that writes into `out`.
    pub(crate) fn spawn(mut out: W) -> io::Result<Self> {
        let (chunks, received) = sync_channel::<Vec<u8>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("layer-writer".into())
            .spawn(move || {
                for chunk in received {
                    for piece in chunk.chunks(WRITE_PIECE) {
                        out.write_all(piece)?;
                    }
                }
                Ok(out)
            })?;
        Ok(WriterThread {
            chunk: FillBuffer::new(CHUNK),
            chunks: Some(chunks),
            thread: Some(thread),
        })
    }

    /// Queues `chunk` after everything written so far, without copying it.
    pub(crate) fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.send_filled()?;
        self.send_chunk(chunk)
    }

    /// Room in the current chunk for up to `max` more bytes (at least one when `max > 0`);
    /// [`WriterThread::commit`] then takes what was put there.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [u8] {
        self.chunk.spare(max)
    }

    /// Takes the first `n` bytes of the last [`WriterThread::spare`] as written.
    pub(crate) fn commit(&mut self, n: usize) -> io::Result<()> {
        if self.chunk.commit(n) {
            self.send_filled()?;
        }
        Ok(())
    }

    /// Waits for everything to be written and returns the inner writer, not flushed: a
    /// compressor's flush would end a block early.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.send_filled()?;
        self.chunks = None;
        match self.thread.take() {
            Some(thread) => join(thread),
            None => Err(stopped()),
        }
    }

    fn send_filled(&mut self) -> io::Result<()> {
        match self.chunk.take() {
            Some(chunk) => self.send_chunk(chunk),
            None => Ok(()),
        }
    }

    fn send_chunk(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let sent = match &self.chunks {
            Some(chunks) => chunks.send(chunk).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread only stops early when a write failed: report that error.
        self.chunks = None;
        match self.thread.take() {
            Some(thread) => join(thread).and(Err(stopped())),
            None => Err(stopped()),
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the layer writer stopped after an error")
}

fn join<W>(thread: JoinHandle<io::Result<W>>) -> io::Result<W> {
    thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the layer writer thread panicked")))
}

impl<W: Write + Send + 'static> Write for WriterThread<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let spare = self.spare(buf.len());
        let n = spare.len();
        spare.copy_from_slice(&buf[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// Hands the partly filled chunk to the thread; it does not wait for it to be written.
    fn flush(&mut self) -> io::Result<()> {
        self.send_filled()
    }
}

impl<W: Write + Send + 'static> Drop for WriterThread<W> {
    /// Unfinished (an error elsewhere): stop the thread and wait, so that the inner writer —
    /// a blob's temp file — is gone when the error is returned.
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_in_order_whatever_the_mix_of_calls() {
        let mut w = WriterThread::spawn(Vec::new()).unwrap();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let piece = i.to_le_bytes().repeat(i as usize % 700);
            match i % 3 {
                0 => w.write_all(&piece).unwrap(),
                1 => w.send(piece.clone()).unwrap(),
                _ => {
                    let mut left = &piece[..];
                    while !left.is_empty() {
                        let spare = w.spare(left.len());
                        let n = spare.len().min(100);
                        spare[..n].copy_from_slice(&left[..n]);
                        w.commit(n).unwrap();
                        left = &left[n..];
                    }
                }
            }
            want.extend_from_slice(&piece);
        }
        assert_eq!(w.finish().unwrap(), want);
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_inner_writers_error_comes_back() {
        let mut w = WriterThread::spawn(Failing).unwrap();
        let err = (0..100)
            .try_for_each(|_| w.send(vec![1; 1000]))
            .and_then(|_| w.finish().map(drop))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    }
}
