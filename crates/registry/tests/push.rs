//! Pushes to a real registry (`docker-registry`, distribution 2.8) from a content store, read
//! back by skopeo; a proxy that cuts connections mid-upload stands in for a bad network.

mod fixture;

use fixture::{
    incompressible, put, stored_image, stored_image_typed, stored_index, DroppingProxy, Registry,
};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Descriptor, Digest, Manifest};
use kiln_registry::{Client, ClientOptions, Error, PushEvent, PushOptions, Reference};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

fn client_with(config: Option<&Path>) -> Client {
    Client::new(ClientOptions {
        docker_config: Some(
            config.map_or_else(|| "/nonexistent/config.json".into(), Path::to_path_buf),
        ),
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    })
    .unwrap()
}

fn client() -> Client {
    client_with(None)
}

/// Quick retries, so that tests of failures do not wait seconds.
fn quick(attempts: u32) -> PushOptions {
    PushOptions {
        attempts,
        backoff: Duration::from_millis(20),
        ..PushOptions::default()
    }
}

fn store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Pushes and returns the result with every event seen.
fn push(
    client: &Client,
    store: &ContentStore,
    r: &Reference,
    root: &Descriptor,
    opts: &PushOptions,
) -> (Result<Digest, Error>, Vec<PushEvent>) {
    let events = Mutex::new(Vec::new());
    let result = client.push_image(store, r, root, opts, &|e| events.lock().unwrap().push(e));
    (result, events.into_inner().unwrap())
}

/// The digests with an event of the given kind.
fn digests(events: &[PushEvent], kind: fn(&PushEvent) -> Option<&Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = events.iter().filter_map(kind).cloned().collect();
    out.sort_by_key(|d| d.to_string());
    out
}

fn uploaded(e: &PushEvent) -> Option<&Digest> {
    match e {
        PushEvent::BlobUploaded { digest, .. } => Some(digest),
        _ => None,
    }
}

fn existing(e: &PushEvent) -> Option<&Digest> {
    match e {
        PushEvent::BlobExists { digest, .. } => Some(digest),
        _ => None,
    }
}

fn mounted(e: &PushEvent) -> Option<&Digest> {
    match e {
        PushEvent::BlobMounted { digest, .. } => Some(digest),
        _ => None,
    }
}

fn uploading(e: &PushEvent) -> Option<&Digest> {
    match e {
        PushEvent::BlobUploading { digest, .. } => Some(digest),
        _ => None,
    }
}

fn retried(e: &PushEvent) -> Option<&Digest> {
    match e {
        PushEvent::Retrying { digest, .. } => Some(digest),
        _ => None,
    }
}

fn sorted(mut d: Vec<Digest>) -> Vec<Digest> {
    d.sort_by_key(|d| d.to_string());
    d
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo is needed: apt-get install -y skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The digest skopeo reads for a single-image reference.
fn skopeo_digest(image: &str, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--tls-verify=false"];
    args.extend_from_slice(extra);
    let image = format!("docker://{image}");
    args.push(&image);
    let json: serde_json::Value = serde_json::from_slice(&skopeo(&args)).unwrap();
    json["Digest"].as_str().unwrap().to_string()
}

/// Copies `image` into an OCI layout with skopeo (digests preserved, all platforms) and
/// returns the digest the layout's index.json points at.
fn skopeo_copy_digest(image: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:copied", dir.path().display());
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--insecure-policy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &dest,
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pushed_image_reads_back_with_the_same_digest() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", b"hello from kiln\n");
    let r = reference(&format!("{}/app:1.0", reg.host()));

    let (result, events) = push(
        &client(),
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    );
    assert_eq!(result.unwrap(), image.manifest.digest);
    assert_eq!(
        digests(&events, uploaded),
        sorted(vec![
            image.config.digest.clone(),
            image.layer.digest.clone()
        ])
    );
    // The manifest comes last, under the tag.
    assert_eq!(
        events.last(),
        Some(&PushEvent::ManifestPushed {
            digest: image.manifest.digest.clone(),
            media_type: media_types::OCI_MANIFEST.into(),
            tag_or_digest: "1.0".into(),
        })
    );

    let want = image.manifest.digest.to_string();
    assert_eq!(skopeo_digest(&format!("{}/app:1.0", reg.host()), &[]), want);
    assert_eq!(skopeo_copy_digest(&format!("{}/app:1.0", reg.host())), want);

    // Pulled back by kiln itself, layer bytes included.
    let resolved = client()
        .resolve(&r, &"linux/amd64".parse().unwrap())
        .unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest.digest);
    let (_pulled_dir, pulled) = self::store();
    client().fetch_blob(&r, &image.layer, &pulled).unwrap();
    assert_eq!(
        std::fs::read(pulled.blob_path(&image.layer.digest)).unwrap(),
        std::fs::read(store.blob_path(&image.layer.digest)).unwrap()
    );

    // By digest: the reference must pin this very image.
    let by_digest = reference(&format!("{}/app@{}", reg.host(), image.manifest.digest));
    let (result, events) = push(
        &client(),
        &store,
        &by_digest,
        &image.manifest,
        &PushOptions::default(),
    );
    assert_eq!(result.unwrap(), image.manifest.digest);
    assert!(events.contains(&PushEvent::ManifestPushed {
        digest: image.manifest.digest.clone(),
        media_type: media_types::OCI_MANIFEST.into(),
        tag_or_digest: image.manifest.digest.to_string(),
    }));
    let other = Digest::of(b"another image");
    let pinned = reference(&format!("{}/app@{other}", reg.host()));
    let (result, events) = push(
        &client(),
        &store,
        &pinned,
        &image.manifest,
        &PushOptions::default(),
    );
    let err = result.unwrap_err();
    assert!(matches!(err, Error::InvalidReference { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "it pins {other}, but the image to push is {}",
            image.manifest.digest
        )),
        "{err}"
    );
    assert!(events.is_empty());
}

#[test]
fn second_push_skips_every_blob() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", b"twice\n");
    let r = reference(&format!("{}/app:1.0", reg.host()));
    let client = client();

    let (first, events) = push(
        &client,
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    );
    first.unwrap();
    assert_eq!(digests(&events, uploaded).len(), 2);

    let (second, events) = push(
        &client,
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    );
    assert_eq!(second.unwrap(), image.manifest.digest);
    assert_eq!(
        digests(&events, existing),
        sorted(vec![
            image.config.digest.clone(),
            image.layer.digest.clone()
        ])
    );
    assert!(digests(&events, uploading).is_empty(), "{events:?}");
    assert_eq!(events.len(), 3, "{events:?}");
}

#[test]
fn layers_of_another_repository_are_mounted() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let base = stored_image(&store, "linux/amd64", b"base layer\n");
    let base_ref = reference(&format!("{}/library/base:1", reg.host()));
    push(
        &client(),
        &store,
        &base_ref,
        &base.manifest,
        &PushOptions::default(),
    )
    .0
    .unwrap();

    // An image on top of the base: its layer, a config and a manifest of its own.
    let config = put(
        &store,
        media_types::OCI_CONFIG,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::OCI_MANIFEST.into()),
        config: config.clone(),
        layers: vec![base.layer.clone()],
        annotations: None,
    };
    let manifest = put(&store, media_types::OCI_MANIFEST, &manifest.to_json());
    let app = reference(&format!("{}/app:1", reg.host()));
    let opts = PushOptions {
        mount_from: HashMap::from([
            (base.layer.digest.clone(), base_ref.clone()),
            // The base repository does not have this one: the registry opens an upload instead.
            (config.digest.clone(), base_ref.clone()),
        ]),
        ..PushOptions::default()
    };
    let (result, events) = push(&client(), &store, &app, &manifest, &opts);
    assert_eq!(result.unwrap(), manifest.digest);
    assert!(
        events.contains(&PushEvent::BlobMounted {
            digest: base.layer.digest.clone(),
            size: base.layer.size,
            from: "library/base".into(),
        }),
        "{events:?}"
    );
    assert_eq!(digests(&events, uploaded), vec![config.digest.clone()]);
    assert_eq!(digests(&events, uploading), vec![config.digest.clone()]);
    assert_eq!(
        skopeo_copy_digest(&format!("{}/app:1", reg.host())),
        manifest.digest.to_string()
    );

    // A source on another registry is not asked: the layer is uploaded.
    let elsewhere = reference("quay.io/library/base:1");
    let opts = PushOptions {
        mount_from: HashMap::from([(base.layer.digest.clone(), elsewhere)]),
        ..PushOptions::default()
    };
    let other = reference(&format!("{}/other:1", reg.host()));
    let (result, events) = push(&client(), &store, &other, &manifest, &opts);
    result.unwrap();
    assert!(digests(&events, mounted).is_empty(), "{events:?}");
    assert_eq!(digests(&events, uploaded).len(), 2, "{events:?}");
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
fn push_with_basic_auth_from_docker_config() {
    let reg = Registry::start_with_htpasswd("alice", "s3cret");
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", b"private\n");
    let r = reference(&format!("{}/private:1.0", reg.host()));
    let dir = tempfile::tempdir().unwrap();

    let err = push(
        &client(),
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    )
    .0
    .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("run `docker login {}`", reg.host())),
        "{err}"
    );

    let wrong = docker_config(dir.path(), &reg.host(), "alice", "nope");
    let err = push(
        &client_with(Some(&wrong)),
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    )
    .0
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/private:1.0: unauthorized: check that the credentials for {} in {} may push to private",
            reg.host(),
            reg.host(),
            wrong.display()
        )
    );

    let config = docker_config(dir.path(), &reg.host(), "alice", "s3cret");
    let (result, events) = push(
        &client_with(Some(&config)),
        &store,
        &r,
        &image.manifest,
        &PushOptions::default(),
    );
    assert_eq!(result.unwrap(), image.manifest.digest);
    assert_eq!(digests(&events, uploaded).len(), 2);
    assert_eq!(
        skopeo_digest(
            &format!("{}/private:1.0", reg.host()),
            &["--creds", "alice:s3cret"]
        ),
        image.manifest.digest.to_string()
    );
}

#[test]
fn index_of_two_platforms_pushes_children_first() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let amd64 = stored_image(&store, "linux/amd64", b"amd64\n");
    let arm64 = stored_image(&store, "linux/arm64", b"arm64\n");
    let index = stored_index(&store, &[&amd64, &arm64]);
    let r = reference(&format!("{}/multi:1", reg.host()));

    let (result, events) = push(&client(), &store, &r, &index, &PushOptions::default());
    assert_eq!(result.unwrap(), index.digest);
    assert_eq!(digests(&events, uploaded).len(), 4);
    let manifests: Vec<(Digest, String)> = events
        .iter()
        .filter_map(|e| match e {
            PushEvent::ManifestPushed {
                digest,
                tag_or_digest,
                ..
            } => Some((digest.clone(), tag_or_digest.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        manifests,
        vec![
            (
                amd64.manifest.digest.clone(),
                amd64.manifest.digest.to_string()
            ),
            (
                arm64.manifest.digest.clone(),
                arm64.manifest.digest.to_string()
            ),
            (index.digest.clone(), "1".to_string()),
        ]
    );

    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/multi:1", reg.host()),
    ]);
    assert_eq!(Digest::of(&raw), index.digest);
    assert_eq!(
        skopeo_copy_digest(&format!("{}/multi:1", reg.host())),
        index.digest.to_string()
    );
    for (platform, image) in [("linux/amd64", &amd64), ("linux/arm64", &arm64)] {
        let resolved = client().resolve(&r, &platform.parse().unwrap()).unwrap();
        assert_eq!(resolved.manifest_digest, image.manifest.digest);
        assert_eq!(resolved.index_digest.as_ref(), Some(&index.digest));
    }
}

#[test]
fn upload_cut_once_is_retried_and_completes() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", &incompressible(3 << 20, 7));
    let proxy = DroppingProxy::start(&reg.host(), 1 << 20, 1);
    let r = reference(&format!("{}/app:1.0", proxy.host()));

    let (result, events) = push(&client(), &store, &r, &image.manifest, &quick(4));
    assert_eq!(result.unwrap(), image.manifest.digest);
    assert_eq!(proxy.drops(), 1);
    assert_eq!(digests(&events, retried), vec![image.layer.digest.clone()]);
    // The layer's upload started twice; its progress reached the end.
    assert_eq!(
        digests(&events, uploading)
            .iter()
            .filter(|d| **d == image.layer.digest)
            .count(),
        2
    );
    assert!(events.contains(&PushEvent::BlobProgress {
        digest: image.layer.digest.clone(),
        sent: image.layer.size,
        size: image.layer.size,
    }));
    let reason = events
        .iter()
        .find_map(|e| match e {
            PushEvent::Retrying { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(reason.contains(&proxy.host()), "{reason}");

    assert_eq!(
        skopeo_copy_digest(&format!("{}/app:1.0", reg.host())),
        image.manifest.digest.to_string()
    );
    let direct = reference(&format!("{}/app:1.0", reg.host()));
    let (_pulled_dir, pulled) = self::store();
    client().fetch_blob(&direct, &image.layer, &pulled).unwrap();
    assert!(pulled.contains(&image.layer.digest));
}

#[test]
fn upload_always_cut_fails_clearly_and_a_rerun_completes() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", &incompressible(2 << 20, 11));
    let proxy = DroppingProxy::start(&reg.host(), 512 << 10, usize::MAX);
    let r = reference(&format!("{}/app:1.0", proxy.host()));

    let (result, events) = push(&client(), &store, &r, &image.manifest, &quick(3));
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::PushGaveUp { attempts: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    let head = format!(
        "{}/app:1.0: pushing the blob {} to {} failed 3 times, the last time with: the connection to {} broke: ",
        proxy.host(),
        image.layer.digest,
        proxy.host(),
        proxy.host()
    );
    assert!(msg.starts_with(&head), "{msg}");
    assert!(
        msg.ends_with("running the push again continues from there"),
        "{msg}"
    );
    assert_eq!(digests(&events, retried).len(), 2);
    assert_eq!(proxy.drops(), 3);
    // No manifest went out without its blobs.
    assert!(!events
        .iter()
        .any(|e| matches!(e, PushEvent::ManifestPushed { .. })));
    let direct = reference(&format!("{}/app:1.0", reg.host()));
    let err = client()
        .resolve(&direct, &"linux/amd64".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

    // Run again on a good network: what got through is skipped, the rest completes.
    let (result, events) = push(
        &client(),
        &store,
        &direct,
        &image.manifest,
        &PushOptions::default(),
    );
    assert_eq!(result.unwrap(), image.manifest.digest);
    assert_eq!(
        digests(&events, existing),
        vec![image.config.digest.clone()]
    );
    assert_eq!(digests(&events, uploaded), vec![image.layer.digest.clone()]);
    assert_eq!(
        skopeo_copy_digest(&format!("{}/app:1.0", reg.host())),
        image.manifest.digest.to_string()
    );
}

#[test]
fn rejected_manifest_is_a_clear_error() {
    let reg = Registry::start();
    let (_dir, store) = store();
    // The descriptor says Docker v2, the document says OCI: distribution refuses it.
    let image = stored_image_typed(&store, "linux/amd64", b"x\n", media_types::DOCKER_MANIFEST);
    let r = reference(&format!("{}/team/app:1.0", reg.host()));

    let (result, events) = push(&client(), &store, &r, &image.manifest, &quick(3));
    let err = result.unwrap_err();
    assert!(matches!(err, Error::PushRejected { .. }), "{err:?}");
    let msg = err.to_string();
    let head = format!(
        "{}/team/app:1.0: registry {} rejected the manifest {} for repository team/app: HTTP 400: manifest invalid",
        reg.host(),
        reg.host(),
        image.manifest.digest
    );
    assert!(msg.starts_with(&head), "{msg}");
    // Rejections are final: no retry.
    assert!(digests(&events, retried).is_empty(), "{events:?}");
}

#[test]
fn blob_missing_from_the_store_stops_the_push_before_any_manifest() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let image = stored_image(&store, "linux/amd64", b"y\n");
    let path = store.blob_path(&image.layer.digest);
    std::fs::remove_file(&path).unwrap();
    let r = reference(&format!("{}/app:1.0", reg.host()));

    let (result, events) = push(&client(), &store, &r, &image.manifest, &quick(3));
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Content { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:1.0: blob {} is not in the content store (looked for {})",
            reg.host(),
            image.layer.digest,
            path.display()
        )
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, PushEvent::ManifestPushed { .. })));
    let err = client()
        .resolve(&r, &"linux/amd64".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

#[test]
fn docker_v2_manifest_pushes_with_its_own_media_type() {
    let reg = Registry::start();
    let (_dir, store) = store();
    let (layer_bytes, diff_id) = fixture::gzip_layer(b"docker v2\n");
    let layer = put(&store, media_types::DOCKER_LAYER_GZIP, &layer_bytes);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
    });
    let config = put(
        &store,
        media_types::DOCKER_CONFIG,
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_types::DOCKER_MANIFEST.into()),
        config,
        layers: vec![layer],
        annotations: None,
    };
    let manifest = put(&store, media_types::DOCKER_MANIFEST, &manifest.to_json());
    let r = reference(&format!("{}/docker:v2", reg.host()));

    let (result, _) = push(&client(), &store, &r, &manifest, &PushOptions::default());
    assert_eq!(result.unwrap(), manifest.digest);
    let resolved = client()
        .resolve(&r, &"linux/amd64".parse().unwrap())
        .unwrap();
    assert_eq!(resolved.media_type, media_types::DOCKER_MANIFEST);
    assert_eq!(resolved.manifest_digest, manifest.digest);
    assert_eq!(
        skopeo_digest(&format!("{}/docker:v2", reg.host()), &[]),
        manifest.digest.to_string()
    );
}
