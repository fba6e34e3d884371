//! Pulls from a real registry (`docker-registry`, distribution 2.8) that skopeo pushed to.

mod fixture;

use fixture::{free_port, Layout, Registry};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Digest, Platform};
use kiln_registry::{Client, ClientOptions, Error, Reference};
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

fn platform(s: &str) -> Platform {
    s.parse().unwrap()
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

/// A client that reads credentials from `config` (or from a file that does not exist).
fn client_with(config: Option<&Path>, timeout: Duration) -> Client {
    Client::new(ClientOptions {
        docker_config: Some(
            config.map_or_else(|| "/nonexistent/config.json".into(), Path::to_path_buf),
        ),
        timeout,
        ..ClientOptions::default()
    })
    .unwrap()
}

fn client() -> Client {
    client_with(None, Duration::from_secs(30))
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    (dir, store)
}

fn ingest_is_empty(store: &ContentStore) -> bool {
    std::fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .next()
        .is_none()
}

fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> std::path::PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

#[test]
fn pull_by_tag_then_blobs_into_the_store() {
    let reg = Registry::start();
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(layout.path(), "1.0", "app", &[]);
    let image = &layout.images[0];

    let client = client();
    let r = reference(&format!("{}/app:1.0", reg.host()));
    let resolved = client.resolve(&r, &platform("linux/amd64")).unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest);
    assert_eq!(resolved.manifest, image.manifest);
    assert_eq!(Digest::of(&resolved.manifest_bytes), image.manifest_digest);
    assert_eq!(resolved.media_type, media_types::OCI_MANIFEST);
    assert_eq!(resolved.config_bytes, image.config_bytes);
    assert_eq!(resolved.config.architecture, "amd64");
    assert_eq!(
        resolved.config.config.cmd,
        Some(vec!["/bin/sh".to_string()])
    );
    assert_eq!(resolved.index_digest, None);

    let (_dir, store) = store();
    for layer in &resolved.manifest.layers {
        client.fetch_blob(&r, layer, &store).unwrap();
        assert!(store.contains(&layer.digest));
        let mut got = Vec::new();
        store
            .open_blob(&layer.digest)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, image.layers[0].1);
        // Already present: no second download (this would fail if it re-fetched into a
        // read-only blob or errored).
        client.fetch_blob(&r, layer, &store).unwrap();
    }
    assert!(ingest_is_empty(&store));
}

#[test]
fn pull_by_digest_and_unknown_digest() {
    let reg = Registry::start();
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(layout.path(), "1.0", "app", &[]);
    let image = &layout.images[0];
    let client = client();

    let r = reference(&format!("{}/app@{}", reg.host(), image.manifest_digest));
    let resolved = client.resolve(&r, &platform("linux/amd64")).unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest);

    // Tag and digest: the digest wins.
    let r = reference(&format!(
        "{}/app:other@{}",
        reg.host(),
        image.manifest_digest
    ));
    assert_eq!(
        client
            .resolve(&r, &platform("linux/amd64"))
            .unwrap()
            .manifest_digest,
        image.manifest_digest
    );

    let wrong = Digest::of(b"not a manifest");
    let r = reference(&format!("{}/app@{wrong}", reg.host()));
    let err = client.resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app@{wrong}: not found in the registry (manifest unknown)",
            reg.host()
        )
    );
}

#[test]
fn corrupted_manifest_is_a_digest_mismatch() {
    let reg = Registry::start();
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(layout.path(), "1.0", "app", &[]);
    let digest = &layout.images[0].manifest_digest;
    // Still valid JSON, or the registry itself refuses to serve it.
    reg.edit_blob(digest, "tar+gzip", "tar+gzjp");

    let r = reference(&format!("{}/app@{digest}", reg.host()));
    let err = client().resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}/app@{digest}: digest mismatch: expected {digest}, got sha256:",
            reg.host()
        )),
        "{msg}"
    );
}

#[test]
fn index_with_two_platforms() {
    let reg = Registry::start();
    let layout = Layout::index("multi", &["linux/amd64", "linux/arm64/v8"]);
    reg.push(layout.path(), "multi", "app", &["--all"]);
    let client = client();
    let r = reference(&format!("{}/app:multi", reg.host()));

    for (wanted, image) in [
        ("linux/amd64", &layout.images[0]),
        ("linux/arm64", &layout.images[1]),
        ("linux/arm64/v8", &layout.images[1]),
    ] {
        let resolved = client.resolve(&r, &platform(wanted)).unwrap();
        assert_eq!(resolved.manifest_digest, image.manifest_digest, "{wanted}");
        assert_eq!(resolved.config_bytes, image.config_bytes, "{wanted}");
        assert_eq!(resolved.index_digest, layout.index_digest, "{wanted}");
        let (_dir, store) = store();
        client
            .fetch_blob(&r, &resolved.manifest.layers[0], &store)
            .unwrap();
        assert!(store.contains(&image.layers[0].0.digest));
    }

    let err = client.resolve(&r, &platform("linux/arm/v7")).unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:multi: no image for linux/arm/v7 in the index (available: linux/amd64, linux/arm64/v8)",
            reg.host()
        )
    );
}

#[test]
fn docker_v2_media_types() {
    let reg = Registry::start();
    let single = Layout::image("v2", "linux/amd64");
    reg.push(single.path(), "v2", "docker", &["--format", "v2s2"]);
    let multi = Layout::index("v2list", &["linux/amd64", "linux/arm/v7"]);
    reg.push(
        multi.path(),
        "v2list",
        "docker",
        &["--all", "--format", "v2s2"],
    );
    let client = client();

    let r = reference(&format!("{}/docker:v2", reg.host()));
    let resolved = client.resolve(&r, &platform("linux/amd64")).unwrap();
    assert_eq!(resolved.media_type, media_types::DOCKER_MANIFEST);
    assert_eq!(
        resolved.manifest.config.media_type,
        media_types::DOCKER_CONFIG
    );
    assert_eq!(
        resolved.manifest.layers[0].media_type,
        media_types::DOCKER_LAYER_GZIP
    );
    assert_eq!(
        Digest::of(&resolved.manifest_bytes),
        resolved.manifest_digest
    );
    let (_dir, store) = store();
    client
        .fetch_blob(&r, &resolved.manifest.layers[0], &store)
        .unwrap();
    assert!(store.contains(&resolved.manifest.layers[0].digest));

    let r = reference(&format!("{}/docker:v2list", reg.host()));
    let resolved = client.resolve(&r, &platform("linux/arm/v7")).unwrap();
    assert_eq!(resolved.media_type, media_types::DOCKER_MANIFEST);
    assert_eq!(resolved.config.architecture, "arm");
    assert_eq!(resolved.config.variant.as_deref(), Some("v7"));
    assert!(resolved.index_digest.is_some());
}

#[test]
fn missing_repository_or_tag() {
    let reg = Registry::start();
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(layout.path(), "1.0", "app", &[]);
    let client = client();

    let r = reference(&format!("{}/does-not-exist:1.0", reg.host()));
    let err = client.resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}/does-not-exist:1.0: not found in the registry (",
            reg.host()
        )),
        "{msg}"
    );

    let r = reference(&format!("{}/app:2.0", reg.host()));
    let err = client.resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:2.0: not found in the registry (manifest unknown)",
            reg.host()
        )
    );
}

#[test]
fn corrupted_blob_is_rejected_and_not_stored() {
    let reg = Registry::start();
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(layout.path(), "1.0", "app", &[]);
    let layer = layout.images[0].layers[0].0.clone();
    reg.corrupt_blob(&layer.digest);

    let client = client();
    let r = reference(&format!("{}/app:1.0", reg.host()));
    let (_dir, store) = store();
    let err = client.fetch_blob(&r, &layer, &store).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}/app:1.0: digest mismatch: expected {}, got sha256:",
            reg.host(),
            layer.digest
        )),
        "{msg}"
    );
    assert!(!store.contains(&layer.digest));
    assert!(ingest_is_empty(&store));
    let blobs = std::fs::read_dir(store.root().join("blobs/sha256")).unwrap();
    assert_eq!(blobs.count(), 0);

    // A corrupted config fails resolve the same way.
    reg.corrupt_blob(&layout.images[0].manifest.config.digest);
    let err = client.resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
}

#[test]
fn htpasswd_auth_with_docker_config() {
    let reg = Registry::start_with_htpasswd("alice", "s3cret");
    let layout = Layout::image("1.0", "linux/amd64");
    reg.push(
        layout.path(),
        "1.0",
        "private",
        &["--dest-creds", "alice:s3cret"],
    );
    let r = reference(&format!("{}/private:1.0", reg.host()));
    let dir = tempfile::tempdir().unwrap();

    let config = docker_config(dir.path(), &reg.host(), "alice", "s3cret");
    let client = client_with(Some(&config), Duration::from_secs(30));
    let resolved = client.resolve(&r, &platform("linux/amd64")).unwrap();
    assert_eq!(resolved.manifest_digest, layout.images[0].manifest_digest);
    let (_store_dir, store) = store();
    client
        .fetch_blob(&r, &resolved.manifest.layers[0], &store)
        .unwrap();

    // Docker writes keys with a scheme too.
    let config = docker_config(
        dir.path(),
        &format!("http://{}", reg.host()),
        "alice",
        "s3cret",
    );
    let client = client_with(Some(&config), Duration::from_secs(30));
    client.resolve(&r, &platform("linux/amd64")).unwrap();

    let config = docker_config(dir.path(), &reg.host(), "alice", "wrong");
    let client = client_with(Some(&config), Duration::from_secs(30));
    let err = client.resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/private:1.0: unauthorized: check the credentials for {} in {}",
            reg.host(),
            reg.host(),
            config.display()
        )
    );

    let err = client_with(None, Duration::from_secs(30))
        .resolve(&r, &platform("linux/amd64"))
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("docker login {}", reg.host())),
        "{err}"
    );
}

#[test]
fn connection_refused() {
    let port = free_port();
    let r = reference(&format!("127.0.0.1:{port}/app:1.0"));
    let err = client().resolve(&r, &platform("linux/amd64")).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "127.0.0.1:{port}/app:1.0: could not connect to 127.0.0.1:{port}: connection refused"
        )
    );
}

#[test]
fn registry_that_never_answers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and hold them open without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let r = reference(&format!("127.0.0.1:{port}/app:1.0"));
    let started = std::time::Instant::now();
    let err = client_with(None, Duration::from_millis(300))
        .resolve(&r, &platform("linux/amd64"))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("127.0.0.1:{port}/app:1.0: registry did not answer within 300ms")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
