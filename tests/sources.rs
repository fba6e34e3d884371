//! Sources beyond the build context: `ADD <url>` (a tiny HTTP server on loopback) and named
//! build contexts (`--build-context NAME=dir|oci-layout://…|docker-image://…`).

mod common;

use common::registry::{busybox_layout, Registry};
use common::Sandbox;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::{fs, thread};

const PAYLOAD: &str = "payload-from-http\n";
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECS: i64 = 784111777;

/// Serves `/payload.txt` (with a Last-Modified header) and 404 for anything else; returns
/// `host:port`.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let response = if path == "/payload.txt" {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {LAST_MODIFIED}\r\nConnection: close\r\n\r\n{PAYLOAD}",
                    PAYLOAD.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

fn payload_digest() -> String {
    kiln_oci::Digest::of(PAYLOAD.as_bytes()).to_string()
}

#[test]
fn add_url_fetches_with_mode_mtime_and_checksum() {
    let http = http_server();
    let sb = Sandbox::new();
    let sum = payload_digest();
    sb.dockerfile(&format!(
        "FROM scratch\n\
         ADD http://{http}/payload.txt /dl/\n\
         ADD --checksum={sum} http://{http}/payload.txt /checked.txt\n\
         ADD --chmod=644 http://{http}/payload.txt /public.txt\n"
    ));
    sb.build_oci("out", &[]).ok();
    let rootfs = sb.unpack("out", "latest");
    for f in ["dl/payload.txt", "checked.txt", "public.txt"] {
        assert_eq!(fs::read_to_string(rootfs.join(f)).unwrap(), PAYLOAD, "{f}");
    }
    let meta = fs::metadata(rootfs.join("dl/payload.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "ADD <url> files are 0600");
    assert_eq!(meta.mtime(), LAST_MODIFIED_SECS, "mtime from Last-Modified");
    let meta = fs::metadata(rootfs.join("public.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644, "--chmod wins");

    // Fetched again on the next build; same content, same image.
    let first = sb.config("out");
    sb.build_oci("out2", &[]).ok();
    assert_eq!(first["rootfs"], sb.config("out2")["rootfs"]);
}

#[test]
fn add_url_with_a_wrong_checksum_fails_naming_both_digests() {
    let http = http_server();
    let sb = Sandbox::new();
    let wrong = format!("sha256:{}", "0".repeat(64));
    sb.dockerfile(&format!(
        "FROM scratch\nADD --checksum={wrong} http://{http}/payload.txt /p.txt\n"
    ));
    let url = format!("http://{http}/payload.txt");
    sb.build_oci("out", &[])
        .fails_with(&[&url, &wrong, &payload_digest(), "Dockerfile:2"]);
}

#[test]
fn add_url_errors_name_the_url_and_the_line() {
    let http = http_server();
    let sb = Sandbox::new();
    sb.dockerfile(&format!(
        "FROM scratch\nADD http://{http}/missing.txt /m.txt\n"
    ));
    sb.build_oci("out", &[]).fails_with(&[
        &format!("http://{http}/missing.txt: 404 Not Found"),
        "Dockerfile:2",
    ]);

    // Nothing listens on a port we just closed.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let sb = Sandbox::new();
    sb.dockerfile(&format!("FROM scratch\nADD http://{closed}/x /x\n"));
    sb.build_oci("out", &[])
        .fails_with(&[&format!("http://{closed}/x"), "connection refused"]);
}

#[test]
fn directory_context_in_copy_from_from_and_replacing_a_stage() {
    let sb = Sandbox::new();
    let extra = sb.path("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("a.txt"), "A").unwrap();
    fs::write(extra.join("secret.txt"), "S").unwrap();
    fs::write(extra.join(".dockerignore"), "secret.txt\n").unwrap();
    // `extra` is also a stage whose COPY would fail: the named context replaces it.
    sb.dockerfile(
        "FROM scratch AS extra\nCOPY does-not-exist /\n\
         FROM extra AS base\n\
         FROM base\nCOPY --from=extra a.txt /copied.txt\n",
    );
    let spec = format!("extra={}", extra.display());
    sb.build_oci("out", &["--build-context", &spec]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert_eq!(fs::read_to_string(rootfs.join("a.txt")).unwrap(), "A");
    assert_eq!(fs::read_to_string(rootfs.join("copied.txt")).unwrap(), "A");
    assert!(
        !rootfs.join("secret.txt").exists(),
        "the context's own .dockerignore applies"
    );

    // RUN --mount=from resolves to the named context too (shown by the graph).
    let sb2 = Sandbox::new();
    sb2.dockerfile("FROM scratch\nRUN --mount=from=extra,target=/x true\n");
    let ctx = sb2.ctx().display().to_string();
    let graph = sb2
        .kiln(&[
            "build",
            "--print-graph",
            "json",
            "--build-context",
            &spec,
            &ctx,
        ])
        .ok()
        .stdout();
    assert!(graph.contains("context:extra"), "{graph}");
}

#[test]
fn oci_layout_context_by_tag_and_digest() {
    let layout = busybox_layout();
    let sb = Sandbox::new();
    sb.dockerfile("FROM base\nCOPY --from=base /bin/busybox /bb2\n");
    let spec = format!("base=oci-layout://{}:1.35", layout.display());
    sb.build_oci("out", &["--build-context", &spec]).ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(rootfs.join("bb2").is_file());
    let config = sb.config("out");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    // The base layer is the layout's blob, byte for byte.
    let base_digest = common::manifest_digest(&layout);
    let base_manifest = common::manifest(&layout);
    let manifest = common::manifest(&sb.path("out"));
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );

    // By digest, under an image's name: it wins over the image.
    let sb = Sandbox::new();
    sb.dockerfile("FROM busybox:latest\nCOPY --from=busybox /bin/busybox /bb2\n");
    let spec = format!("busybox=oci-layout://{}@{base_digest}", layout.display());
    sb.build_oci("out", &["--build-context", &spec]).ok();
    assert!(sb.unpack("out", "latest").join("bb2").is_file());

    // A missing tag is a clear error.
    let spec = format!("base=oci-layout://{}:9.99", layout.display());
    let sb = Sandbox::new();
    sb.dockerfile("FROM base\n");
    sb.build_oci("out", &["--build-context", &spec])
        .fails_with(&["no image tagged \"9.99\"", "1.35"]);
}

#[test]
fn docker_image_context_from_a_registry() {
    let reg = Registry::start(None);
    let base = reg.push_busybox();
    let sb = Sandbox::new();
    // `alpine` would come from Docker Hub (unreachable here): the context replaces it.
    sb.dockerfile("FROM alpine\nCOPY --from=img /bin/busybox /bb2\n");
    let a = format!("alpine=docker-image://{base}");
    let b = format!("img=docker-image://{base}");
    sb.build_oci("out", &["--build-context", &a, "--build-context", &b])
        .ok();
    let rootfs = sb.unpack("out", "latest");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(rootfs.join("bb2").is_file());
}

#[test]
fn malformed_build_contexts_fail_clearly() {
    let sb = Sandbox::new();
    sb.dockerfile("FROM scratch\n");
    let dir = sb.ctx().display().to_string();
    let cases: Vec<(String, &str)> = vec![
        ("noequals".into(), "expected NAME=VALUE"),
        ("=x".into(), "expected NAME=VALUE"),
        ("name=".into(), "expected NAME=VALUE"),
        (format!("Bad Name={dir}"), "invalid context name"),
        ("x=/does/not/exist".into(), "not a directory"),
        ("x=docker-image://".into(), "needs an image reference"),
        ("x=oci-layout://".into(), "needs the path"),
        ("x=oci-layout:///does/not/exist".into(), "not an OCI layout"),
        ("x=oci-layout:///tmp@sha256:zz".into(), "invalid digest"),
        ("x=git://example.com/r.git".into(), "supported"),
    ];
    for (spec, needle) in cases {
        sb.build_oci("out", &["--build-context", &spec])
            .fails_with(&["--build-context", needle]);
    }
}
