//! A layer is streamed, never held in memory: writing the layer of a file far larger than the
//! writer's queues keeps the process's peak RSS small, for every compression.
//!
//! Peak RSS is per process, so each compression runs in a child: this test binary run again
//! with `LAYER_MEMORY_CHILD` set, which writes one layer and prints its peak.

use kiln_cache::ContentStore;
use kiln_exporter::{write_layer_threads, Compression, LayerOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Compression threads: the queues, and so the memory, grow with them.
const THREADS: usize = 2;
/// Well over what the writer holds at once with `THREADS` threads: ~65 MiB for zstd (its job
/// buffers: about (2 × workers + 5) × 4 MiB jobs), ~12 MiB for gzip, ~5 MiB uncompressed.
const FILE_MIB: usize = 160;
/// What writing a layer may add to the test process's own peak RSS: well under the file's
/// size, so a writer that held the layer whole would fail.
const BUDGET_MIB: i64 = 96;

const CHILD: &str = "LAYER_MEMORY_CHILD";

#[test]
fn peak_memory_does_not_grow_with_the_layer() {
    if let Ok(compression) = std::env::var(CHILD) {
        return child(&compression);
    }
    let work = tempfile::tempdir().unwrap();
    let diff = work.path().join("diff");
    std::fs::create_dir_all(&diff).unwrap();
    write_incompressible(&diff.join("big.bin"), FILE_MIB << 20);
    for compression in ["none", "gzip", "zstd"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "peak_memory_does_not_grow_with_the_layer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, compression)
            .env("LAYER_MEMORY_DIR", work.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{compression}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The harness may print on the same line before the child's own output.
        let kib = |key: &str| -> i64 {
            let at = stdout
                .find(key)
                .unwrap_or_else(|| panic!("no {key} in {stdout}"));
            let value = stdout[at + key.len()..].split_whitespace().next().unwrap();
            value.parse().unwrap()
        };
        let (before, after) = (kib("rss-before-kib"), kib("rss-peak-kib"));
        eprintln!("{compression}: peak RSS {before} KiB before, {after} KiB after");
        assert!(
            after - before < BUDGET_MIB << 10,
            "{compression}: writing a {FILE_MIB} MiB layer raised the peak RSS from {before} \
             to {after} KiB"
        );
    }
}

fn child(compression: &str) {
    let work = std::env::var("LAYER_MEMORY_DIR").unwrap();
    let work = Path::new(&work);
    let compression = match compression {
        "gzip" => Compression::default(),
        "zstd" => Compression::Zstd { level: 3 },
        _ => Compression::Uncompressed,
    };
    let store = ContentStore::open(&work.join(format!("content-{compression:?}"))).unwrap();
    println!("rss-before-kib {}", peak_rss_kib());
    let opts = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    // A fixed thread count, so the budget is the same on any machine.
    let layer = write_layer_threads(&store, &work.join("diff"), &opts, THREADS).unwrap();
    assert!(layer.descriptor.size > (FILE_MIB as u64) << 20);
    println!("rss-peak-kib {}", peak_rss_kib());
}

/// Random bytes: the worst case, where the compressed blocks are as large as the input.
fn write_incompressible(path: &Path, len: usize) {
    let mut file = std::fs::File::create(path).unwrap();
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
}

fn peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .unwrap()
        .max_rss()
}
