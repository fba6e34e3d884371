//! Layer compression: gzip (deterministic header), zstd, or none.
//!
//! Each encoder compresses on several threads and hands its output to the sink on a thread of
//! its own, so tarring, hashing, compressing and writing all overlap; their queues are bounded,
//! so a layer never sits in memory whole.

use crate::parallel_gzip::ParallelGzip;
use crate::writer_thread::WriterThread;
use kiln_oci::media_types;
use std::io::{self, Write};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip at `level` (0–9); the default, level 6 as Go's `DefaultCompression` (and as gzip's
    /// and pigz's). Lower levels are faster on compressible data (level 4: ~15% faster, ~2%
    /// larger on a tar of /usr), but incompressible data — the slow case for deflate — is
    /// stored whatever the level (see `parallel_gzip`), so 6 costs little where it matters.
    Gzip { level: u32 },
    /// zstd at `level` (1–22; 3 is zstd's default).
    Zstd { level: i32 },
    /// A plain tar.
    Uncompressed,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The layer media type for this compression; zstd has no Docker type, so it is always OCI's.
    pub fn media_type(self, oci: bool) -> &'static str {
        match (self, oci) {
            (Compression::Gzip { .. }, true) => media_types::OCI_LAYER_GZIP,
            (Compression::Gzip { .. }, false) => media_types::DOCKER_LAYER_GZIP,
            (Compression::Zstd { .. }, _) => media_types::OCI_LAYER_ZSTD,
            (Compression::Uncompressed, true) => media_types::OCI_LAYER,
            (Compression::Uncompressed, false) => media_types::DOCKER_LAYER,
        }
    }
}

/// The threads a layer is compressed with by default: one per core, up to 8, as the data in
/// flight grows with each (~2 MiB per gzip thread, ~10 MiB per zstd worker).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// The input of one multithreaded zstd job. zstd's default is 4 windows (8 MiB at level 3),
/// which holds ~35 MiB per worker; 4 MiB jobs hold ~10 MiB for 0.1% larger output on a
/// tar of /usr. Fixed, so the output depends on the data and the level only.
const ZSTD_JOB: u32 = 4 << 20;

/// A compressing writer whose output goes to `W` on a writer thread;
/// [`Encoder::finish`] writes the trailer and returns `W`.
///
/// Whatever the thread count, the output is the same bytes: gzip cuts blocks at fixed sizes
/// (see [`ParallelGzip`]) and multithreaded zstd cuts jobs at a fixed size ([`ZSTD_JOB`]), never
/// by the number of workers (it always runs with at least one worker, as single-threaded
/// zstd writes other bytes).
pub(crate) enum Encoder<W: Write + Send + 'static> {
    Gzip(ParallelGzip<W>),
    /// zstd's streaming API runs on a thread of its own, between the tarring thread and the
    /// writer thread: it copies the input into its jobs and the output out of them, work that
    /// would otherwise hold up reading and hashing the tar, or hashing and writing the blob.
    Zstd(WriterThread<zstd::stream::write::Encoder<'static, WriterThread<W>>>),
    Plain(WriterThread<W>),
}

/// Wraps `out` in the encoder for `compression`, compressing on `threads` threads.
///
/// gzip headers carry no mtime or file name and a fixed OS byte (255, "unknown", as Go writes),
/// so the same tar always gives the same blob.
pub(crate) fn encoder<W: Write + Send + 'static>(
    compression: Compression,
    out: W,
    threads: usize,
) -> io::Result<Encoder<W>> {
    Ok(match compression {
        Compression::Gzip { level } => Encoder::Gzip(ParallelGzip::new(out, level, threads)?),
        Compression::Zstd { level } => {
            let mut encoder = zstd::stream::write::Encoder::new(WriterThread::spawn(out)?, level)?;
            encoder.multithread(threads.max(1) as u32)?;
            encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB))?;
            Encoder::Zstd(WriterThread::spawn(encoder)?)
        }
        Compression::Uncompressed => Encoder::Plain(WriterThread::spawn(out)?),
    })
}

impl<W: Write + Send + 'static> Encoder<W> {
    /// Room for up to `max` more input bytes (at least one when `max > 0`), so a file can be
    /// read straight into the encoder's buffer; [`Encoder::commit`] then takes them.
    pub(crate) fn spare(&mut self, max: usize) -> &mut [u8] {
        match self {
            Encoder::Gzip(e) => e.spare(max),
            Encoder::Zstd(w) => w.spare(max),
            Encoder::Plain(w) => w.spare(max),
        }
    }

    /// Takes the first `n` bytes of the last [`Encoder::spare`] as input.
    pub(crate) fn commit(&mut self, n: usize) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.commit(n),
            Encoder::Zstd(w) => w.commit(n),
            Encoder::Plain(w) => w.commit(n),
        }
    }

    /// Ends the stream and waits until it is all written to `W`.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(w) => w.finish()?.finish()?.finish(),
            Encoder::Plain(w) => w.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(w) => w.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(w) => w.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel_gzip::tests::sample;
    use std::io::Read;
    use std::process::{Command, Stdio};

    fn compress_with(c: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let mut e = encoder(c, Vec::new(), threads).unwrap();
        // Half through `write`, half through the lent buffer, as the tar writer does.
        let (written, lent) = data.split_at(data.len() / 2);
        e.write_all(written).unwrap();
        let mut rest = lent;
        while !rest.is_empty() {
            let spare = e.spare(rest.len());
            let n = spare.len();
            spare.copy_from_slice(&rest[..n]);
            e.commit(n).unwrap();
            rest = &rest[n..];
        }
        e.finish().unwrap()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        compress_with(c, data, 2)
    }

    /// `cmd` with `input` on stdin; its stdout.
    fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let mut child = match Command::new(cmd)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(_) => {
                eprintln!("skipped the {cmd} check: `{cmd}` is not installed");
                return None;
            }
        };
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{cmd} {args:?} failed");
        Some(out.stdout)
    }

    #[test]
    fn gzip_header_is_fixed() {
        let out = compress(Compression::default(), b"some tar bytes");
        // magic, deflate, no flags, mtime 0, XFL 0 (level 6), OS 255.
        assert_eq!(out[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        assert_eq!(out, compress(Compression::default(), b"some tar bytes"));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"some tar bytes");
    }

    /// Text, then random bytes (stored), then text again: every kind of deflate block.
    fn mixed() -> Vec<u8> {
        let mut data = sample(1_500_000, false);
        data.extend(sample(2_500_000, true));
        data.extend(sample(300_000, false));
        data
    }

    #[test]
    fn gzip_reads_back_with_every_reader_bit_for_bit() {
        let data = mixed();
        let gz = compress(Compression::default(), &data);
        // Go's gzip reader reads multistream by default; MultiGzDecoder is its equivalent.
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "MultiGzDecoder round trip");
        if let Some(back) = pipe("gzip", &["-dc"], &gz) {
            assert!(back == data, "gzip -dc round trip");
        }
        // `gzip -t` also checks the CRC and the length.
        pipe("gzip", &["-t"], &gz);
    }

    #[test]
    fn zstd_reads_back_bit_for_bit() {
        let data = mixed();
        let z = compress(Compression::Zstd { level: 3 }, &data);
        assert_eq!(z[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert!(zstd::decode_all(&z[..]).unwrap() == data);
        if let Some(back) = pipe("zstd", &["-dc"], &z) {
            assert!(back == data, "zstd -dc round trip");
        }
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        // Level 1 has zstd's smallest jobs (2 MiB), so this is several jobs.
        let mut data = mixed();
        data.extend(sample(3_000_000, false));
        for c in [
            Compression::default(),
            Compression::Gzip { level: 1 },
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 3 },
        ] {
            let one = compress_with(c, &data, 1);
            assert!(compress_with(c, &data, 4) == one, "{c:?}: 1 vs 4 threads");
            assert!(compress_with(c, &data, 2) == one, "{c:?}: 1 vs 2 threads");
        }
    }

    #[test]
    fn plain_is_the_input() {
        let data = sample(2_500_000, true);
        assert!(compress(Compression::Uncompressed, &data) == data);
        assert_eq!(compress(Compression::Uncompressed, b"abc"), b"abc");
    }

    #[test]
    fn media_types_follow_oci_flag() {
        let gz = Compression::default();
        assert_eq!(gz.media_type(true), media_types::OCI_LAYER_GZIP);
        assert_eq!(gz.media_type(false), media_types::DOCKER_LAYER_GZIP);
        assert_eq!(
            Compression::Zstd { level: 3 }.media_type(false),
            media_types::OCI_LAYER_ZSTD
        );
        assert_eq!(
            Compression::Uncompressed.media_type(false),
            media_types::DOCKER_LAYER
        );
    }
}
