//! The layer writer on the issue's benchmark: a diff holding one large incompressible file,
//! written as a layer blob with each compression; prints the time each took and the peak RSS.
//!
//! ```text
//! cargo run --release -p kiln-exporter --example layer_bench -- [--mib N] [--dir DIR] [gzip|zstd|uncompressed]...
//! /usr/bin/time -v target/release/examples/layer_bench gzip     # one compression, its own peak
//! ```
//!
//! The file is generated (random bytes, 1 GiB by default) in a temp dir under DIR (default
//! /var/tmp, a disk rather than tmpfs, like kiln's root) and synced, then read from the page
//! cache. The content store is in the same temp dir; blobs are fsynced as always.

use kiln_cache::ContentStore;
use kiln_exporter::{write_layer, Compression, LayerOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut mib = 1024usize;
    let mut dir = PathBuf::from("/var/tmp");
    let mut compressions = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mib" => mib = args.next().and_then(|n| n.parse().ok()).expect("--mib N"),
            "--dir" => dir = args.next().expect("--dir DIR").into(),
            "gzip" => compressions.push(Compression::default()),
            "zstd" => compressions.push(Compression::Zstd { level: 3 }),
            "uncompressed" => compressions.push(Compression::Uncompressed),
            other => panic!("unknown argument {other:?}"),
        }
    }
    if compressions.is_empty() {
        compressions = vec![
            Compression::default(),
            Compression::Zstd { level: 3 },
            Compression::Uncompressed,
        ];
    }

    let work = tempfile::tempdir_in(&dir).expect("temp dir");
    let diff = work.path().join("diff");
    std::fs::create_dir_all(diff.join("data")).unwrap();
    let started = Instant::now();
    write_random(&diff.join("data/big.bin"), mib << 20);
    eprintln!(
        "generated {mib} MiB in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let store = ContentStore::open(&work.path().join("content")).unwrap();

    // The floor on this disk: a plain copy of the file, synced as a blob is.
    let started = Instant::now();
    let copy = work.path().join("copy.bin");
    std::fs::copy(diff.join("data/big.bin"), &copy).unwrap();
    std::fs::File::open(&copy).unwrap().sync_all().unwrap();
    println!(
        "{:<30} {:6.2}s",
        "plain copy + fsync",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&copy).unwrap();

    for compression in compressions {
        let opts = LayerOptions {
            compression,
            epoch: Some(1_700_000_000),
            rewrite_timestamp: true,
            ..LayerOptions::default()
        };
        let started = Instant::now();
        let layer = write_layer(&store, &diff, &opts).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<30} {secs:6.2}s  {:7.0} MiB/s  blob {} bytes  peak RSS so far {} MiB",
            format!("{compression:?}"),
            mib as f64 / secs,
            layer.descriptor.size,
            peak_rss_kib() / 1024,
        );
        // The next run must write its blob again, not find it stored.
        std::fs::remove_file(store.blob_path(&layer.descriptor.digest)).unwrap();
    }
}

/// Writes `len` bytes of xorshift output to `path`.
fn write_random(path: &PathBuf, len: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..len / buf.len() {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&buf).unwrap();
    }
    // On disk before timing, so its write-back doesn't compete with the blob's.
    file.into_inner().unwrap().sync_all().unwrap();
}

fn peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map_or(0, |usage| usage.max_rss())
}
