//! The Bearer token flow, against a small fake registry and token server in one thread:
//! distribution's own token auth needs a signing certificate and a real token service, which
//! is more fixture than this flow deserves.

mod fixture;

use fixture::Layout;
use kiln_oci::media_types;
use kiln_registry::{Client, ClientOptions, Error, Reference};
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
