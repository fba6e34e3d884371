//! The OCI image layout (image-spec `image-layout.md`) as a directory or a tar:
//! `oci-layout`, `index.json` naming the one manifest, and `blobs/sha256/<hex>`.
//!
//! Also Docker's `docker save` format (a docker-archive), which BuildKit's docker exporter
//! writes as an OCI layout tar plus `manifest.json`, so both `docker load` and OCI tools read it.
//!
//! A tar and a new directory appear whole (see [`crate::dest`]); into a layout directory that
//! exists, blobs are added and `index.json` replaced last. Blobs of a directory layout are
//! hardlinked from the content store when it is on the same file system (they are read-only
//! there), else copied. A tar is deterministic: sorted entries, mtime 0, uid/gid 0, no names.

use crate::dest;
use crate::tar_entry::TarEntry;
use crate::{Error, Image};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Descriptor, Index};
use serde::Serialize;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tar::EntryType;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
/// The annotation containerd (and BuildKit's OCI exporter) use for the full image name.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The file `docker load` reads.
const DOCKER_MANIFEST_FILE: &str = "manifest.json";

/// Writes `image` as an OCI layout at `dest`: a directory, or with `as_tar` a tar file (`-`
/// for stdout).
///
/// `ref_name` becomes the manifest's `org.opencontainers.image.ref.name` annotation (the tag,
/// e.g. `latest`, which `umoci`/`skopeo` address it by), `image_name` its
/// `io.containerd.image.name` (the full name, e.g. `docker.io/library/app:1`).
pub fn write_oci_layout(
    store: &ContentStore,
    image: &Image,
    dest: &Path,
    as_tar: bool,
    ref_name: Option<&str>,
    image_name: Option<&str>,
) -> Result<(), Error> {
    let index = index_json(image, ref_name, image_name);
    if as_tar {
        dest::write_file_with(dest, |out| write_tar(store, image, &index, None, out))
    } else if dest.is_dir() {
        // Into a directory that exists, as BuildKit does: blobs added, `index.json` replaced
        // last, and nothing else there touched.
        fill_dir(store, image, &index, dest)
    } else {
        dest::write_dir_with(dest, |root| fill_dir(store, image, &index, root))
    }
}

/// Writes `image` as an OCI layout tar to `out` and returns `out` once the tar is complete.
pub fn write_oci_layout_to<W: Write>(
    store: &ContentStore,
    image: &Image,
    mut out: W,
    ref_name: Option<&str>,
    image_name: Option<&str>,
) -> Result<W, Error> {
    let index = index_json(image, ref_name, image_name);
    write_tar(store, image, &index, None, &mut out)?;
    Ok(out)
}

/// Writes `image` as a docker-archive at `dest` (a file, `-` for stdout) that `docker load`,
/// `podman load` and `skopeo copy docker-archive:` accept; `repo_tags` (`app:1`) name it.
pub fn write_docker_archive(
    store: &ContentStore,
    image: &Image,
    dest: &Path,
    repo_tags: &[String],
) -> Result<(), Error> {
    dest::write_file_with(dest, |out| {
        write_docker_archive_to(store, image, repo_tags, out)
    })
}

/// [`write_docker_archive`] into a stream, e.g. the stdin of `docker load`.
pub fn write_docker_archive_to(
    store: &ContentStore,
    image: &Image,
    repo_tags: &[String],
    out: &mut dyn Write,
) -> Result<(), Error> {
    let first = repo_tags.first().map(String::as_str);
    let ref_name = first.map(|t| t.rsplit_once(':').map_or("latest", |(_, tag)| tag));
    let index = index_json(image, ref_name, first);
    let manifest = docker_manifest_json(image, repo_tags);
    write_tar(store, image, &index, Some(&manifest), out)
}

/// `manifest.json` of a docker-archive: the config and layers as paths in the archive.
fn docker_manifest_json(image: &Image, repo_tags: &[String]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry<'a> {
        config: String,
        repo_tags: &'a [String],
        layers: Vec<String>,
    }
    let path = |d: &Descriptor| format!("blobs/sha256/{}", d.digest.hex());
    let entry = Entry {
        config: path(&image.manifest.config),
        repo_tags,
        layers: image.manifest.layers.iter().map(path).collect(),
    };
    serde_json::to_vec(&[entry]).expect("manifest.json serialises")
}

/// `index.json`: the image's manifest descriptor (with platform) and its name annotations.
fn index_json(image: &Image, ref_name: Option<&str>, image_name: Option<&str>) -> Vec<u8> {
    let mut annotations = image.descriptor.annotations.clone().unwrap_or_default();
    if let Some(name) = image_name {
        annotations.insert(ANNOTATION_IMAGE_NAME.to_string(), name.to_string());
    }
    if let Some(tag) = ref_name {
        annotations.insert(
            media_types::ANNOTATION_REF_NAME.to_string(),
            tag.to_string(),
        );
    }
    let mut manifest = image.descriptor.clone();
    manifest.annotations = (!annotations.is_empty()).then_some(annotations);
    Index {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.into()),
        manifests: vec![manifest],
        annotations: None,
    }
    .to_json()
}

/// The image's blobs, each once, sorted by digest.
fn unique_blobs(image: &Image) -> Vec<&Descriptor> {
    let mut blobs: Vec<&Descriptor> = image.blobs().collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    blobs
}

/// Writes the layout into the directory `root`, new or not: blobs it lacks, then `oci-layout`
/// and `index.json`, each whole under its name (made beside it and renamed), `index.json`
/// last, so the layout never names a blob it doesn't hold.
fn fill_dir(store: &ContentStore, image: &Image, index: &[u8], root: &Path) -> Result<(), Error> {
    let blobs_dir = root.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(Error::io("create directory", &blobs_dir))?;
    for blob in unique_blobs(image) {
        let dest = blobs_dir.join(blob.digest.hex());
        if !dest.is_file() {
            link_or_copy(store, blob, &blobs_dir, &dest)?;
        }
    }
    for (name, data) in [(LAYOUT_FILE, LAYOUT_JSON), (INDEX_FILE, index)] {
        dest::write_file_with(&root.join(name), |out| {
            out.write_all(data)
                .map_err(Error::io("write", root.join(name)))
        })?;
    }
    Ok(())
}

/// Puts the store's `blob` at `dest` (in `dir`): a hard link where the file system allows,
/// else a copy; made under a temporary name and renamed.
fn link_or_copy(
    store: &ContentStore,
    blob: &Descriptor,
    dir: &Path,
    dest: &Path,
) -> Result<(), Error> {
    let mut src = store.open_blob(&blob.digest)?;
    let temp = tempfile::Builder::new()
        .prefix(".blob-")
        .make_in(dir, |path| {
            fs::hard_link(store.blob_path(&blob.digest), path).or_else(|_| {
                let mut out = File::create_new(path)?;
                io::copy(&mut src, &mut out)?;
                out.set_permissions(fs::Permissions::from_mode(0o444))
            })
        })
        .map_err(Error::io("copy a blob to", dest))?;
    temp.persist(dest)
        .map_err(|e| Error::io("move a blob into place at", dest)(e.error))?;
    Ok(())
}

/// The layout as a tar, with `docker_manifest` as `manifest.json` for a docker-archive.
fn write_tar(
    store: &ContentStore,
    image: &Image,
    index: &[u8],
    docker_manifest: Option<&[u8]>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let failed = |source| Error::Write {
        what: "the image archive",
        source,
    };
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let entry = TarEntry::new(EntryType::Directory, dir.as_bytes()).attrs(0o755, 0, 0, 0);
        entry.write(&mut tar, io::empty()).map_err(failed)?;
    }
    for blob in unique_blobs(image) {
        let file = store.open_blob(&blob.digest)?;
        let path = store.blob_path(&blob.digest);
        let size = file.metadata().map_err(Error::io("stat", &path))?.len();
        let name = format!("blobs/sha256/{}", blob.digest.hex());
        let entry = TarEntry::new(EntryType::Regular, name.as_bytes()).attrs(0o444, 0, 0, 0);
        entry.size(size).write(&mut tar, file).map_err(failed)?;
    }
    let files = [(INDEX_FILE, index)]
        .into_iter()
        .chain(docker_manifest.map(|m| (DOCKER_MANIFEST_FILE, m)))
        .chain([(LAYOUT_FILE, LAYOUT_JSON)]);
    for (name, data) in files {
        let entry = TarEntry::new(EntryType::Regular, name.as_bytes()).attrs(0o444, 0, 0, 0);
        entry
            .size(data.len() as u64)
            .write(&mut tar, data)
            .map_err(failed)?;
    }
    tar.into_inner().map_err(failed)?.flush().map_err(failed)
}
