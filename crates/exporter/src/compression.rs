//! Layer compression: gzip (deterministic header), zstd, or none.
//!
//! The encoder sits behind [`encoder`] so a parallel gzip can replace it without touching the
//! layer pipeline.

use kiln_oci::media_types;
use std::io::{self, Write};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip at `level` (0–9); the default, level 6 as Go's `DefaultCompression`.
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

/// A compressing writer; [`Encoder::finish`] flushes the trailer and returns the inner writer.
pub(crate) enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Plain(W),
}

/// Wraps `out` in the encoder for `compression`.
///
/// gzip headers carry no mtime or file name and a fixed OS byte (255, "unknown", as Go writes),
/// so the same tar always gives the same blob.
pub(crate) fn encoder<W: Write>(compression: Compression, out: W) -> io::Result<Encoder<W>> {
    Ok(match compression {
        Compression::Gzip { level } => Encoder::Gzip(
            flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(out, flate2::Compression::new(level.min(9))),
        ),
        Compression::Zstd { level } => {
            Encoder::Zstd(zstd::stream::write::Encoder::new(out, level)?)
        }
        Compression::Uncompressed => Encoder::Plain(out),
    })
}

impl<W: Write> Encoder<W> {
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = encoder(c, Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
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

    #[test]
    fn zstd_and_plain_roundtrip() {
        let z = compress(Compression::Zstd { level: 3 }, b"abc abc abc");
        assert_eq!(z[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), b"abc abc abc");
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
