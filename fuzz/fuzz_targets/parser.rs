//! Fuzzes the Dockerfile parser: any UTF-8 input must parse or fail with an error, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = kiln_frontend::parser::parse(kiln_frontend::SourceFile::new("Dockerfile", s));
    }
});
