//! kiln's local images: `kiln images`, `kiln rmi`, `kiln save`, `kiln push`, `--load`, and the
//! base image resolver that looks in the local image store before asking a registry, as
//! podman does. The store itself is `kiln_cache::ImageStore`.

use crate::cli::{ImagesArgs, PushArgs, RmiArgs, SaveArgs, SaveFormat};
use crate::state::State;
use anyhow::{anyhow, bail, Context, Result};
use kiln_cache::{ContentStore, ImageStore};
use kiln_exporter::{ExportInput, Exporter};
use kiln_frontend::convert::{ImageResolver, ResolvedImage};
use kiln_oci::Digest;
use kiln_oci::{media_types, Descriptor, ImageConfig, Manifest, Platform};
use kiln_registry::{PushEvent, PushOptions, Reference};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;

/// An image name in its two spellings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// Normalised: `docker.io/library/app:1` (the store's key, pushes go there).
    pub full: String,
    /// Docker's short form: `app:1` (docker-archive `RepoTags`).
    pub familiar: String,
    pub reference: Reference,
}

/// Parses an image name as `-t`, `name=` and the image commands take it.
pub fn normalise(name: &str) -> Result<Name> {
    let reference: Reference = name
        .parse()
        .map_err(|e| anyhow!("invalid image name {name:?}: {e}"))?;
    if reference.digest.is_some() {
        bail!("invalid image name {name:?}: a name to give an image can't pin a digest");
    }
    Ok(Name {
        full: reference.to_string(),
        familiar: reference.familiar(),
        reference,
    })
}

/// An image of the content store, read back from its manifest.
pub fn read_image(content: &ContentStore, descriptor: &Descriptor) -> Result<kiln_exporter::Image> {
    let read = |d: &Descriptor| -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut content.open_blob(&d.digest)?, &mut bytes)
            .with_context(|| format!("reading blob {}", d.digest))?;
        Ok(bytes)
    };
    let manifest: Manifest = serde_json::from_slice(&read(descriptor)?)
        .with_context(|| format!("manifest {} is not valid JSON", descriptor.digest))?;
    let config: ImageConfig = serde_json::from_slice(&read(&manifest.config)?)
        .with_context(|| format!("image config {} is not valid JSON", manifest.config.digest))?;
    Ok(kiln_exporter::Image {
        descriptor: descriptor.clone(),
        manifest,
        config,
    })
}

/// The image the local store names `name`, with an error that says so when it has none.
fn stored(store: &ImageStore, name: &str) -> Result<(Name, Descriptor)> {
    let name = normalise(name)?;
    match store.get(&name.full)? {
        Some(d) => Ok((name, d)),
        None => bail!(
            "no image {} in the local image store (see `kiln images`)",
            name.familiar
        ),
    }
}

/// `kiln images`: name, digest, size and creation time of each local image.
pub fn list(root: &Path, args: ImagesArgs) -> Result<()> {
    let state = State::open(root)?;
    let store = ImageStore::open(&state.content)?;
    let images = store.list()?;
    if args.quiet {
        for image in &images {
            println!("{}", image.descriptor.digest);
        }
        return Ok(());
    }
    let mut rows = vec![[
        "NAME".to_string(),
        "DIGEST".to_string(),
        "SIZE".to_string(),
        "CREATED".to_string(),
    ]];
    for image in &images {
        let (size, created) = match read_image(&state.content, &image.descriptor) {
            Ok(i) => (
                kiln_solver::human_bytes(
                    i.manifest.config.size + i.manifest.layers.iter().map(|l| l.size).sum::<u64>(),
                ),
                i.config.created.unwrap_or_else(|| "-".into()),
            ),
            Err(_) => ("?".into(), "(blobs missing)".into()),
        };
        let digest = image.descriptor.digest.to_string();
        let digest = if args.no_trunc {
            digest
        } else {
            digest.chars().take(7 + 12).collect()
        };
        let name = normalise(&image.name).map_or_else(|_| image.name.clone(), |n| n.familiar);
        rows.push([name, digest, size, created]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

/// `kiln rmi`: removes names; the blobs stay in the content store for the cache.
pub fn remove(root: &Path, args: RmiArgs) -> Result<()> {
    let state = State::open(root)?;
    let store = ImageStore::open(&state.content)?;
    let mut missing = Vec::new();
    for image in &args.images {
        let name = normalise(image)?;
        match store.remove(&name.full)? {
            Some(d) => println!("Untagged: {} ({})", name.familiar, d.digest),
            None => missing.push(name.familiar),
        }
    }
    if !missing.is_empty() {
        bail!(
            "no such image in the local image store: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `kiln save`: a docker-archive or an OCI layout tar of a local image.
pub fn save(root: &Path, args: SaveArgs) -> Result<()> {
    let state = State::open(root)?;
    let store = ImageStore::open(&state.content)?;
    let (name, descriptor) = stored(&store, &args.image)?;
    let image = read_image(&state.content, &descriptor)?;
    // The same exporters as `--output type=docker|oci`.
    let exporter: Box<dyn Exporter> = match args.format {
        SaveFormat::Docker => Box::new(kiln_exporter::DockerExporter {
            dest: args.output,
            repo_tags: vec![name.familiar],
        }),
        SaveFormat::Oci => Box::new(kiln_exporter::OciExporter {
            dest: kiln_exporter::OciDest::Tar(args.output),
            image_name: Some(name.full),
        }),
    };
    exporter.export(&state.content, ExportInput::Image(&image))?;
    Ok(())
}

/// `kiln push`: a local image to its registry (or to DEST).
pub fn push_command(root: &Path, args: PushArgs) -> Result<()> {
    let state = State::open(root)?;
    let store = ImageStore::open(&state.content)?;
    let (name, descriptor) = stored(&store, &args.image)?;
    let dest = match &args.dest {
        Some(d) => normalise(d)?,
        None => name,
    };
    let client = kiln_registry::Client::new(kiln_registry::ClientOptions {
        insecure_registries: args.insecure_registries.clone(),
        ..Default::default()
    })
    .context("setting up the registry client")?;
    push(
        &client,
        &state.content,
        &descriptor,
        &dest,
        HashMap::new(),
        &|line| eprintln!("{line}"),
    )?;
    Ok(())
}

/// Pushes the image `descriptor` of `content` to `name`'s registry, the blobs of
/// `mount_from` mounted from the repositories named there when the registry is the same.
pub fn push(
    client: &kiln_registry::Client,
    content: &ContentStore,
    descriptor: &Descriptor,
    name: &Name,
    mount_from: HashMap<Digest, Reference>,
    log: &dyn Fn(&str),
) -> Result<()> {
    let opts = PushOptions {
        mount_from,
        ..PushOptions::default()
    };
    // The push reports from its worker threads; the lines are logged from this one.
    let (tx, rx) = mpsc::channel();
    let pushed = std::thread::scope(|scope| {
        let worker = scope.spawn(move || {
            client
                .push_image(content, &name.reference, descriptor, &opts, &|e| {
                    let _ = tx.send(e);
                })
                .map_err(anyhow::Error::from)
        });
        for event in rx {
            if let Some(line) = describe(&event) {
                log(&line);
            }
        }
        worker.join().expect("the push thread doesn't panic")
    });
    let digest = pushed.with_context(|| format!("pushing {}", name.full))?;
    log(&format!("pushed {} {digest}", name.full));
    Ok(())
}

/// A progress line for a push event (`None` for the per-MiB ones).
fn describe(event: &PushEvent) -> Option<String> {
    Some(match event {
        PushEvent::BlobExists { digest, .. } => format!("{digest}: already in the registry"),
        PushEvent::BlobMounted { digest, from, .. } => format!("{digest}: mounted from {from}"),
        PushEvent::BlobUploading { digest, size } => {
            format!("{digest}: pushing {}", kiln_solver::human_bytes(*size))
        }
        PushEvent::BlobProgress { .. } => return None,
        PushEvent::BlobUploaded { digest, .. } => format!("{digest}: done"),
        PushEvent::Retrying {
            digest,
            attempt,
            delay,
            reason,
        } => format!(
            "{digest}: attempt {attempt} failed ({reason}); retrying in {:.1}s",
            delay.as_secs_f64()
        ),
        PushEvent::ManifestPushed {
            digest,
            tag_or_digest,
            ..
        } => format!("manifest {digest} as {tag_or_digest}"),
    })
}

/// `--load`: the image as a docker-archive into `docker load`, else `podman load`.
pub fn load(
    content: &ContentStore,
    image: &kiln_exporter::Image,
    tags: &[String],
    log: &dyn Fn(&str),
) -> Result<()> {
    let engine = ["docker", "podman"]
        .into_iter()
        .find(|e| Command::new(e).arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
        .ok_or_else(|| {
            anyhow!("--load: neither docker nor podman is installed and running here; use --output type=docker,dest=FILE to write the archive, or -t NAME to keep the image in kiln's image store")
        })?;
    log(&format!("loading into {engine}"));
    let mut child = Command::new(engine)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{engine} load`"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let written = kiln_exporter::write_docker_archive_to(content, image, tags, &mut stdin)
        .map_err(anyhow::Error::from)
        .and_then(|()| stdin.flush().map_err(Into::into));
    drop(stdin);
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{engine} load`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        log(line);
    }
    if !out.status.success() {
        bail!(
            "`{engine} load` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written.with_context(|| format!("sending the image to `{engine} load`"))
}

/// Base images: the local image store first (for tag references), a manifest pinned by digest
/// that is in the content store already, then the registry.
pub struct Resolver {
    pub client: Arc<kiln_registry::Client>,
    pub content: ContentStore,
}

impl Resolver {
    fn local(&self, r: &Reference, platform: &Platform) -> Option<ResolvedImage> {
        if let Some(digest) = &r.digest {
            // A manifest pinned by digest never changes: one pulled before is used as it is.
            let descriptor = Descriptor::new(media_types::OCI_MANIFEST, digest.clone(), 0);
            let image = read_image(&self.content, &descriptor).ok()?;
            if image.config.os != platform.os || image.config.architecture != platform.architecture
            {
                return None;
            }
            return Some(ResolvedImage {
                reference: r.to_string(),
                digest: Some(digest.clone()),
                config: image.config,
                layout: None,
            });
        }
        let store = ImageStore::open(&self.content).ok()?;
        let descriptor = store.get(&r.to_string()).ok()??;
        if descriptor.media_type != media_types::OCI_MANIFEST
            && descriptor.media_type != media_types::DOCKER_MANIFEST
        {
            return None;
        }
        if descriptor.platform.as_ref().is_some_and(|p| p != platform) {
            return None;
        }
        let image = read_image(&self.content, &descriptor).ok()?;
        Some(ResolvedImage {
            reference: r.to_string(),
            digest: Some(descriptor.digest),
            config: image.config,
            layout: Some(store.layout_dir().to_string_lossy().into_owned()),
        })
    }
}

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let r: Reference = reference.parse().map_err(|e| format!("{e}"))?;
        if let Some(local) = self.local(&r, platform) {
            return Ok(local);
        }
        let resolved = self
            .client
            .resolve(&r, platform)
            .map_err(|e| e.to_string())?;
        // The solver pulls this manifest by digest: from the content store, without asking again.
        resolved.keep(&self.content);
        Ok(ResolvedImage {
            reference: r.to_string(),
            digest: Some(resolved.manifest_digest),
            config: resolved.config,
            layout: None,
        })
    }
}
