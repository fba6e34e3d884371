//! The Bearer token flow, against a small fake registry and token server in one thread:
//! distribution's own token auth needs a signing certificate and a real token service, which
//! is more fixture than this flow deserves. The push fake also plays what a real registry
//! will not do on demand: a 503 with Retry-After, a lie about a manifest's digest.

mod fixture;

use fixture::{stored_image, Layout, StoredImage};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Digest};
use kiln_registry::{Client, ClientOptions, Error, PushEvent, PushOptions, Reference};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "tok-123";

/// Serves `/v2/app/...` from an OCI layout to holders of [`TOKEN`], and `/token` to holders of
/// `alice:pw`; records each request line with its Authorization header.
struct FakeRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    fn start(layout: PathBuf) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                serve(conn, port, &layout, &log);
            }
        });
        FakeRegistry { port, requests }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, port: u16, layout: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().to_string();
            }
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    log.lock()
        .unwrap()
        .push(format!("{path} [{authorization}]"));

    let basic = format!("Basic {}", b64("alice:pw"));
    let (status, headers, body): (&str, Vec<String>, Vec<u8>) = if path.starts_with("/token?") {
        if authorization == basic && path.contains("scope=repository%3Aapp%3Apull") {
            (
                "200 OK",
                vec![],
                format!(r#"{{"access_token":"{TOKEN}"}}"#).into_bytes(),
            )
        } else {
            ("401 Unauthorized", vec![], b"{}".to_vec())
        }
    } else if authorization != format!("Bearer {TOKEN}") {
        let challenge = format!(
            r#"WWW-Authenticate: Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:app:pull""#
        );
        (
            "401 Unauthorized",
            vec![challenge],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
        )
    } else if let Some(rest) = path.strip_prefix("/v2/app/") {
        let name = rest.rsplit('/').next().unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = match name {
            "1.0" => index["manifests"][0]["digest"]
                .as_str()
                .unwrap()
                .to_string(),
            d => d.to_string(),
        };
        let blob = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        match std::fs::read(blob) {
            Ok(bytes) if rest.starts_with("manifests/") => (
                "200 OK",
                vec![format!("Content-Type: {}", media_types::OCI_MANIFEST)],
                bytes,
            ),
            Ok(bytes) => ("200 OK", vec![], bytes),
            Err(_) => ("404 Not Found", vec![], Vec::new()),
        }
    } else {
        ("404 Not Found", vec![], Vec::new())
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn client_for(host: &str, dir: &Path, password: &str) -> Client {
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
            b64(&format!("alice:{password}"))
        ),
    )
    .unwrap();
    Client::new(ClientOptions {
        docker_config: Some(config),
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    })
    .unwrap()
}

#[test]
fn bearer_token_is_fetched_with_basic_creds_and_reused() {
    let layout = Layout::image("1.0", "linux/amd64");
    let fake = FakeRegistry::start(layout.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&fake.host(), dir.path(), "pw");
    let r: Reference = format!("{}/app:1.0", fake.host()).parse().unwrap();

    let resolved = client.resolve(&r, &"linux/amd64".parse().unwrap()).unwrap();
    assert_eq!(resolved.manifest_digest, layout.images[0].manifest_digest);

    let basic = format!("Basic {}", b64("alice:pw"));
    let bearer = format!("Bearer {TOKEN}");
    let config = &layout.images[0].manifest.config.digest;
    assert_eq!(
        fake.requests(),
        vec![
            "/v2/app/manifests/1.0 []".to_string(),
            format!("/token?service=fake&scope=repository%3Aapp%3Apull [{basic}]"),
            format!("/v2/app/manifests/1.0 [{bearer}]"),
            // The token is remembered for the repository.
            format!("/v2/app/blobs/{config} [{bearer}]"),
        ]
    );
}

#[test]
fn token_server_refusing_the_credentials_is_unauthorized() {
    let layout = Layout::image("1.0", "linux/amd64");
    let fake = FakeRegistry::start(layout.path().to_path_buf());
    let dir = tempfile::tempdir().unwrap();
    let client = client_for(&fake.host(), dir.path(), "wrong");
    let r: Reference = format!("{}/app:1.0", fake.host()).parse().unwrap();

    let err = client
        .resolve(&r, &"linux/amd64".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:1.0: unauthorized: check the credentials for {} in {}",
            fake.host(),
            fake.host(),
            dir.path().join("config.json").display()
        )
    );
}

/// How the fake push registry misbehaves.
#[derive(Clone, Copy, Default)]
struct Quirks {
    /// Answer the first manifest PUT with 503 and `Retry-After: 1`.
    busy_once: bool,
    /// Announce a wrong `Docker-Content-Digest` for manifests.
    wrong_digest: bool,
}

/// A registry that wants a Bearer token for `repository:app:pull,push` and
/// `repository:base:pull` (its challenges only name `repository:app:pull`, as a HEAD's do),
/// has no blobs, refuses to mount, and takes uploads and manifests, checking their digests.
struct FakePushRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakePushRegistry {
    fn start(quirks: Quirks) -> FakePushRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut busy = quirks.busy_once;
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                serve_push(conn, port, quirks, &mut busy, &log);
            }
        });
        FakePushRegistry { port, requests }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_push(
    mut conn: TcpStream,
    port: u16,
    quirks: Quirks,
    busy: &mut bool,
    log: &Mutex<Vec<String>>,
) {
    use std::io::Read;
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let (mut authorization, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_string(),
                "content-length" => length = value.trim().parse().unwrap(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let bearer = authorization == format!("Bearer {TOKEN}");
    log.lock().unwrap().push(format!(
        "{method} {path}{}",
        if bearer { " [token]" } else { "" }
    ));

    let digest_header = |d: &str| format!("Docker-Content-Digest: {d}");
    let (status, headers): (&str, Vec<String>) = if path.starts_with("/token?") {
        let wanted = [
            "scope=repository%3Aapp%3Apull%2Cpush",
            "scope=repository%3Abase%3Apull",
        ];
        if authorization == format!("Basic {}", b64("alice:pw"))
            && wanted.iter().all(|s| path.contains(s))
        {
            body = format!(r#"{{"token":"{TOKEN}"}}"#).into_bytes();
            ("200 OK", vec![])
        } else {
            body = Vec::new();
            ("401 Unauthorized", vec![])
        }
    } else if !bearer {
        let challenge = format!(
            r#"WWW-Authenticate: Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:app:pull""#
        );
        ("401 Unauthorized", vec![challenge])
    } else if method == "HEAD" {
        ("404 Not Found", vec![])
    } else if method == "POST" && path.starts_with("/v2/app/blobs/uploads/") {
        // Whether asked to mount or not, an upload session with a query of its own.
        (
            "202 Accepted",
            vec!["Location: /v2/app/blobs/uploads/u1?_state=s".into()],
        )
    } else if method == "PUT" && path.starts_with("/v2/app/blobs/uploads/u1?_state=s&digest=") {
        let digest = Digest::of(&body).to_string();
        if path.ends_with(&digest) {
            ("201 Created", vec![digest_header(&digest)])
        } else {
            ("400 Bad Request", vec![])
        }
    } else if method == "PUT" && path.starts_with("/v2/app/manifests/") {
        let digest = match quirks.wrong_digest {
            true => Digest::of(b"something else").to_string(),
            false => Digest::of(&body).to_string(),
        };
        if std::mem::take(busy) {
            ("503 Service Unavailable", vec!["Retry-After: 1".into()])
        } else {
            ("201 Created", vec![digest_header(&digest)])
        }
    } else {
        ("404 Not Found", vec![])
    };
    if !path.starts_with("/token?") {
        body = Vec::new();
    }
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

fn push_to(
    fake: &FakePushRegistry,
    dir: &Path,
) -> (Result<Digest, Error>, Vec<PushEvent>, StoredImage) {
    let store = ContentStore::open(&dir.join("store")).unwrap();
    let image = stored_image(&store, "linux/amd64", b"pushed with a token\n");
    let client = client_for(&fake.host(), dir, "pw");
    let r: Reference = format!("{}/app:1.0", fake.host()).parse().unwrap();
    let base: Reference = format!("{}/base:1", fake.host()).parse().unwrap();
    let opts = PushOptions {
        mount_from: HashMap::from([(image.layer.digest.clone(), base)]),
        backoff: Duration::from_millis(10),
        ..PushOptions::default()
    };
    let events = Mutex::new(Vec::new());
    let result = client.push_image(&store, &r, &image.manifest, &opts, &|e| {
        events.lock().unwrap().push(e)
    });
    (result, events.into_inner().unwrap(), image)
}

#[test]
fn push_asks_for_a_push_token_with_the_mount_source_and_reuses_it() {
    let fake = FakePushRegistry::start(Quirks {
        busy_once: true,
        ..Quirks::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, events, image) = push_to(&fake, dir.path());
    assert_eq!(result.unwrap(), image.manifest.digest);

    let requests = fake.requests();
    let tokens: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].contains("/token?"))
        .collect();
    // One token for the whole push, even though blobs go up in parallel. Only the workers'
    // first HEADs, sent before it existed, went without it.
    assert_eq!(tokens.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[tokens[0]],
        "GET /token?service=fake&scope=repository%3Aapp%3Apull%2Cpush&scope=repository%3Abase%3Apull"
    );
    let without: Vec<&String> = requests
        .iter()
        .filter(|r| !r.contains("/token?") && !r.ends_with(" [token]"))
        .collect();
    assert!(
        !without.is_empty() && without.len() <= 2 && without.iter().all(|r| r.starts_with("HEAD ")),
        "{requests:#?}"
    );
    let mount = format!(
        "POST /v2/app/blobs/uploads/?mount={}&from=base [token]",
        image.layer.digest
    );
    assert!(requests.contains(&mount), "{requests:#?}");
    // The registry opened an upload instead of mounting: the layer went up.
    assert!(events.contains(&PushEvent::BlobUploaded {
        digest: image.layer.digest.clone(),
        size: image.layer.size,
    }));
    // The 503 was retried after the second its Retry-After asked for.
    let retry = events
        .iter()
        .find_map(|e| match e {
            PushEvent::Retrying {
                digest,
                delay,
                reason,
                ..
            } => Some((digest, *delay, reason)),
            _ => None,
        })
        .unwrap();
    assert_eq!(retry.0, &image.manifest.digest);
    assert_eq!(retry.1, Duration::from_secs(1));
    assert!(retry.2.contains("HTTP 503"), "{}", retry.2);
}

#[test]
fn manifest_stored_under_another_digest_is_an_error() {
    let fake = FakePushRegistry::start(Quirks {
        wrong_digest: true,
        ..Quirks::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (result, events, image) = push_to(&fake, dir.path());
    let err = result.unwrap_err();
    assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:1.0: the registry sent an invalid Docker-Content-Digest: kiln pushed the manifest {}, the registry says it stored {}",
            fake.host(),
            image.manifest.digest,
            Digest::of(b"something else")
        )
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, PushEvent::ManifestPushed { .. })));
}
