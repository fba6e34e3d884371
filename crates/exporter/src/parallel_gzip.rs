//! gzip compressed on several threads, with bytes that do not depend on how many.
//!
//! As pigz does it: the input is cut into fixed-size blocks; each block is deflated on its own,
//! primed with the 32 KiB before it as the dictionary and ended with a sync flush (so it ends on
//! a byte boundary), and the blocks are concatenated in order into one gzip member whose CRC is
//! combined from the blocks' CRCs. A block's bytes depend only on its data and the 32 KiB before
//! it, so any thread count gives the same stream. So does any machine: zlib-rs's CPU-specific
//! paths (match comparison, hash sliding) compute the same results, and its hash function
//! depends on the level only. One member, not one per block, so that readers that stop after
//! the first member (not Go's, but some) see the whole layer.
//!
//! Blocks that deflate cannot shrink — already compressed or random data — are stored rather
//! than searched for matches: on such data deflate at level 6 runs at ~30 MB/s per core and
//! ends up emitting stored blocks anyway, while the check costs a few ms per MiB. See
//! [`incompressible`].

use crate::fill_buffer::FillBuffer;
use crate::writer_thread::WriterThread;
use flate2::{Compress, FlushCompress};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per block: large enough that the dictionary priming (32 KiB) and the sync
/// flush cost little, small enough that a layer of a few hundred KiB — a typical RUN or COPY —
/// is already deflated on several threads, and that the blocks in flight stay small. (pigz
/// uses 128 KiB; 1 MiB blocks were ~15% slower on 512 MiB of random data here, and left a
/// 600 KiB layer to one thread.)
pub(crate) const BLOCK: usize = 1 << 18;
/// The deflate window, primed from the previous block.
const WINDOW: usize = 32 << 10;
/// The largest stored block deflate allows.
const STORED_MAX: usize = 0xffff;
/// The end of the stream: an empty stored block marked final.
const FINAL_BLOCK: [u8; 5] = [1, 0, 0, 0xff, 0xff];

type Deflated = io::Result<(Vec<u8>, crc32fast::Hasher)>;

struct Job {
    window: Vec<u8>,
    data: Vec<u8>,
    done: SyncSender<Deflated>,
}

/// A gzip writer that deflates blocks on `threads` threads and writes them, in order, to `W`
/// on a writer thread.
pub(crate) struct ParallelGzip<W: Write + Send + 'static> {
    /// The block being filled (`BLOCK` bytes).
    block: FillBuffer,
    /// The last `WINDOW` bytes before `block`.
    window: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// Blocks handed to the workers, oldest first; at most `max_pending`.
    pending: VecDeque<Receiver<Deflated>>,
    max_pending: usize,
    crc: crc32fast::Hasher,
    size: u64,
    out: Option<WriterThread<W>>,
}

impl<W: Write + Send + 'static> ParallelGzip<W> {
    /// Starts `threads` (at least one) deflate threads at `level` (0–9) writing into `out`.
    pub(crate) fn new(out: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = level.min(9);
        let threads = threads.max(1);
        let mut out = WriterThread::spawn(out)?;
        out.write_all(&header(level))?;
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || deflate_jobs(&queue, level))
            })
            .collect::<io::Result<_>>()?;
        Ok(ParallelGzip {
            block: FillBuffer::new(BLOCK),
            window: Vec::new(),
            jobs: Some(jobs),
            workers,
            pending: VecDeque::new(),
            max_pending: 2 * threads,
            crc: crc32fast::Hasher::new(),
            size: 0,
            out: Some(out),
        })
    }

    /// Room in the current block for up to `max` more bytes (at least one when `max > 0`);
    /// [`ParallelGzip::commit`] then takes what was put there.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [u8] {
        self.block.spare(max)
    }

    /// Takes the first `n` bytes of the last [`ParallelGzip::spare`] as written.
    pub(crate) fn commit(&mut self, n: usize) -> io::Result<()> {
        if self.block.commit(n) {
            self.submit_block()?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit_block()?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.stop_workers();
        let mut out = self.out.take().expect("finish is called once");
        out.write_all(&FINAL_BLOCK)?;
        out.write_all(&self.crc.clone().finalize().to_le_bytes())?;
        // ISIZE is the input size modulo 2^32.
        out.write_all(&(self.size as u32).to_le_bytes())?;
        out.finish()
    }

    fn submit_block(&mut self) -> io::Result<()> {
        let Some(data) = self.block.take() else {
            return Ok(());
        };
        self.size += data.len() as u64;
        let next = next_window(&self.window, &data);
        let window = std::mem::replace(&mut self.window, next);
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let (done, deflated) = sync_channel(1);
        let job = Job { window, data, done };
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(worker_died());
        }
        self.pending.push_back(deflated);
        self.write_ready()
    }

    /// Writes the oldest pending blocks that are already deflated, keeping the writer busy.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(oldest) = self.pending.front() {
            match oldest.try_recv() {
                Ok(deflated) => {
                    self.pending.pop_front();
                    self.write_deflated(deflated)?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(worker_died()),
            }
        }
        Ok(())
    }

    /// Waits for the oldest pending block and writes it.
    fn write_oldest(&mut self) -> io::Result<()> {
        let oldest = self.pending.pop_front().expect("a pending block");
        let deflated = oldest.recv().map_err(|_| worker_died())?;
        self.write_deflated(deflated)
    }

    fn write_deflated(&mut self, deflated: Deflated) -> io::Result<()> {
        let (bytes, crc) = deflated?;
        self.crc.combine(&crc);
        self.out.as_mut().expect("not finished").send(bytes)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write + Send + 'static> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let spare = self.spare(buf.len());
        let n = spare.len();
        spare.copy_from_slice(&buf[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// A no-op: blocks are cut at fixed sizes only, so the output never depends on flushes.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.pending.clear();
        self.stop_workers();
    }
}

fn worker_died() -> io::Error {
    io::Error::other("a gzip compression thread stopped unexpectedly")
}

/// The 10-byte gzip header: no mtime, no name, OS 255 ("unknown"), as Go's gzip writes it;
/// XFL says "best" for level 9 and "fastest" for level 1, also as Go does.
fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// The last `WINDOW` bytes of `window` followed by `data`.
fn next_window(window: &[u8], data: &[u8]) -> Vec<u8> {
    if data.len() >= WINDOW {
        return data[data.len() - WINDOW..].to_vec();
    }
    let keep = window.len().min(WINDOW - data.len());
    [&window[window.len() - keep..], data].concat()
}

/// A worker: deflates jobs until the queue closes.
fn deflate_jobs(queue: &Mutex<Receiver<Job>>, level: u32) {
    let mut deflater = Deflater::new(level);
    loop {
        // One worker at a time waits on the queue; the others wait for the lock.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let deflated = match &mut deflater {
            Ok(deflater) => deflater.block(&job.window, &job.data),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        let crc_and_bytes = deflated.map(|bytes| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&job.data);
            (bytes, crc)
        });
        let _ = job.done.send(crc_and_bytes);
    }
}

/// One worker's compressor state, reused from block to block.
struct Deflater {
    level: u32,
    deflate: Compress,
    probe: zstd::bulk::Compressor<'static>,
    probe_out: Vec<u8>,
}

impl Deflater {
    fn new(level: u32) -> io::Result<Deflater> {
        Ok(Deflater {
            level,
            // Raw deflate: the gzip framing is ours.
            deflate: Compress::new(flate2::Compression::new(level), false),
            probe: zstd::bulk::Compressor::new(1)?,
            probe_out: Vec::new(),
        })
    }

    /// The deflate blocks for `data`, which follows `window`, ending on a byte boundary.
    fn block(&mut self, window: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
        if self.level == 0 || self.incompressible(data)? {
            return Ok(stored(data));
        }
        // A fresh compressor for every block: zlib-rs' reset keeps state that changes the
        // output of the next block (the same block deflated twice on one reset compressor gave
        // other bytes), which would make the blob depend on which thread got which block.
        self.deflate = Compress::new(flate2::Compression::new(self.level), false);
        if !window.is_empty() {
            self.deflate.set_dictionary(window)?;
        }
        // Room for the worst case (stored blocks plus a little), so one call does it all.
        let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 1024);
        let mut rest = data;
        loop {
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(rest, &mut out, FlushCompress::Sync)?;
            rest = &rest[(self.deflate.total_in() - before) as usize..];
            // The flush is complete when output room is left over.
            if rest.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(64 << 10);
        }
    }

    /// Whether deflate would gain too little on `data` to be worth running: its bytes are
    /// near uniformly spread (so Huffman coding cannot help) and zstd's fastest level, which
    /// also looks for repeats across the whole block, saves less than 1/64 of it. Both tests
    /// are integer functions of the block alone, so the choice is the same everywhere.
    fn incompressible(&mut self, data: &[u8]) -> io::Result<bool> {
        if !bytes_near_uniform(data) {
            return Ok(false);
        }
        self.probe_out
            .resize(zstd::zstd_safe::compress_bound(data.len()), 0);
        let size = self.probe.compress_to_buffer(data, &mut self.probe_out)?;
        Ok(size >= data.len() - data.len() / 64)
    }
}

/// Whether the byte histogram of `data` is close to flat: its collision entropy (−log2 Σp²,
/// never more than the Shannon entropy) is at least ~7.9 bits per byte, i.e.
/// Σc² ≤ 1.07·n²/256. Random data of a MiB has Σc² ≈ n²/256 + n.
fn bytes_near_uniform(data: &[u8]) -> bool {
    // Four tables, so that runs of one byte don't serialise on one counter.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let sum_sq: u64 = (0..256)
        .map(|b| {
            let c: u64 = counts.iter().map(|t| u64::from(t[b])).sum();
            c * c
        })
        .sum();
    let n = data.len() as u64;
    sum_sq * 256 * 100 <= n * n * 107
}

/// `data` as stored deflate blocks (none marked final).
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(STORED_MAX) * 5);
    for piece in data.chunks(STORED_MAX) {
        let len = piece.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic bytes: `random` ones, or text-like ones that compress well.
    pub(crate) fn sample(len: usize, random: bool) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = Vec::with_capacity(len + 64);
        let mut line = 0u64;
        while out.len() < len {
            if random {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(&x.to_le_bytes());
            } else {
                line += 1;
                let word = ["alpha", "beta", "gamma", "delta"][(line * 7 % 4) as usize];
                out.extend_from_slice(format!("{line} {word} {}\n", line % 13).as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn gzip(data: &[u8], level: u32, threads: usize, piece: usize) -> Vec<u8> {
        let mut gz = ParallelGzip::new(Vec::new(), level, threads).unwrap();
        for chunk in data.chunks(piece) {
            gz.write_all(chunk).unwrap();
        }
        gz.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Random and compressible stretches, so both block kinds follow each other.
    fn mixed() -> Vec<u8> {
        let mut data = sample(BLOCK + 1000, false);
        data.extend(sample(2 * BLOCK, true));
        data.extend(sample(BLOCK / 2, false));
        data
    }

    #[test]
    fn same_bytes_for_any_thread_count_and_write_pattern() {
        let data = mixed();
        let one = gzip(&data, 6, 1, 8192);
        assert_eq!(gzip(&data, 6, 4, 1 << 20), one);
        assert_eq!(gzip(&data, 6, 3, 777), one);
        assert_eq!(gunzip(&one), data);
        // The random MiBs were stored; the text was compressed.
        assert!(one.len() < data.len() - BLOCK, "{}", one.len());
        assert!(one.len() > 2 * BLOCK, "{}", one.len());
    }

    /// A worker deflates whichever blocks come its way: a block's bytes may not depend on the
    /// blocks it deflated before. (zlib-rs' `reset` kept state that did: the same block
    /// deflated twice on one compressor came out different the second time.)
    #[test]
    fn a_block_does_not_depend_on_the_blocks_before_it_on_its_thread() {
        // (A tar header's worth of zeros first: with the text alone, block boundaries fall
        // where the old reset happened to give the same bytes.)
        let mut data = vec![0; 1536];
        data.extend(sample(3 * BLOCK, false));
        let blocks: Vec<&[u8]> = data.chunks(BLOCK).collect();
        let windows: Vec<Vec<u8>> = blocks
            .iter()
            .scan(Vec::new(), |window, block| {
                let before = window.clone();
                *window = next_window(window, block);
                Some(before)
            })
            .collect();
        for (i, block) in blocks.iter().enumerate() {
            let alone = Deflater::new(6).unwrap().block(&windows[i], block).unwrap();
            for (j, other) in blocks.iter().enumerate() {
                let mut worker = Deflater::new(6).unwrap();
                worker.block(&windows[j], other).unwrap();
                let after = worker.block(&windows[i], block).unwrap();
                assert!(
                    after == alone,
                    "block {i} came out different after block {j}"
                );
            }
        }
    }

    #[test]
    fn one_member_with_a_fixed_header() {
        let data = sample(3 * BLOCK / 2, false);
        let gz = gzip(&data, 6, 2, 4096);
        assert_eq!(gz[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        // A single-member reader sees everything, so there is just one member.
        assert_eq!(gunzip(&gz), data);
        let n = gz.len();
        assert_eq!(gz[n - 8..n - 4], crc32fast::hash(&data).to_le_bytes());
        assert_eq!(gz[n - 4..], (data.len() as u32).to_le_bytes());
        assert_eq!(gzip(&data, 9, 2, 4096)[8], 2);
        assert_eq!(gzip(&data, 1, 2, 4096)[8], 4);
    }

    #[test]
    fn levels_are_honoured() {
        let data = sample(BLOCK / 2, false);
        let stored = gzip(&data, 0, 1, 4096);
        assert!(stored.len() > data.len(), "level 0 stores");
        assert_eq!(gunzip(&stored), data);
        let (fast, best) = (gzip(&data, 1, 1, 4096), gzip(&data, 9, 1, 4096));
        assert_ne!(fast, best);
        assert_eq!(gunzip(&fast), data);
        assert_eq!(gunzip(&best), data);
    }

    #[test]
    fn empty_input() {
        let gz = gzip(b"", 6, 2, 1);
        assert_eq!(gz.len(), 10 + 5 + 8);
        assert_eq!(gunzip(&gz), b"");
    }

    #[test]
    fn the_uniformity_test() {
        assert!(bytes_near_uniform(&sample(BLOCK, true)));
        assert!(!bytes_near_uniform(&sample(BLOCK, false)));
        assert!(!bytes_near_uniform(&[7; 4096]));
        // Small random pieces have too few bytes to look flat; they are simply deflated.
        assert!(!bytes_near_uniform(&sample(100, true)));
        // Random bytes drawn from half the alphabet: deflate's Huffman coding saves 1/8.
        let half: Vec<u8> = sample(BLOCK, true).iter().map(|b| b & 0x7f).collect();
        assert!(!bytes_near_uniform(&half));
    }

    #[test]
    fn a_repeated_random_pattern_is_compressed() {
        // A flat histogram, but every 4 KiB repeats: the probe sees it.
        let data = sample(4096, true).repeat(BLOCK / 4096);
        let gz = gzip(&data, 6, 1, 1 << 20);
        assert!(gz.len() < data.len() / 20, "{}", gz.len());
        assert_eq!(gunzip(&gz), data);
    }

    #[test]
    fn windows() {
        assert_eq!(next_window(b"", b"abc"), b"abc");
        let w = next_window(&[1; WINDOW], b"xy");
        assert_eq!(w.len(), WINDOW);
        assert_eq!(&w[WINDOW - 2..], b"xy");
        assert_eq!(next_window(b"abc", &[2; WINDOW + 5]), vec![2; WINDOW]);
    }
}
