//! The OCI image layout (image-spec `image-layout.md`) as a directory or a tar:
//! `oci-layout`, `index.json` naming the one manifest, and `blobs/sha256/<hex>`.
//!
//! A directory is assembled beside `dest` and swapped into place, so readers never see a half
//! written layout and a failed export leaves the old one intact. Blobs are hardlinked from the
//! content store when it is on the same file system (they are read-only there), else copied.
//! A tar is deterministic: sorted entries, mtime 0, uid/gid 0, no names.

use crate::tar_entry::TarEntry;
use crate::{Error, Image};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Descriptor, Index};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";
/// The annotation containerd (and BuildKit's OCI exporter) use for the full image name.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";

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
    match (as_tar, dest == Path::new("-")) {
        (true, true) => {
            let out = BufWriter::new(io::stdout().lock());
            write_tar(store, image, &index, out)?;
            Ok(())
        }
        (true, false) => write_tar_file(store, image, &index, dest),
        (false, _) => write_dir(store, image, &index, dest),
    }
}

/// Writes `image` as an OCI layout tar to `out` and returns `out` once the tar is complete.
pub fn write_oci_layout_to<W: Write>(
    store: &ContentStore,
    image: &Image,
    out: W,
    ref_name: Option<&str>,
    image_name: Option<&str>,
) -> Result<W, Error> {
    write_tar(store, image, &index_json(image, ref_name, image_name), out)
}

/// `index.json`: the image's manifest descriptor (with platform) and its name annotations.
fn index_json(image: &Image, ref_name: Option<&str>, image_name: Option<&str>) -> Vec<u8> {
    let mut annotations = BTreeMap::new();
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

fn write_dir(store: &ContentStore, image: &Image, index: &[u8], dest: &Path) -> Result<(), Error> {
    ensure_dir_or_absent(dest)?;
    let (parent, name) = parent_and_name(dest);
    fs::create_dir_all(&parent).map_err(Error::io("create directory", &parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .tempdir_in(&parent)
        .map_err(Error::io("create a temp directory in", &parent))?;
    let root = temp.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .map_err(Error::io("chmod", root))?;
    let blobs_dir = root.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(Error::io("create directory", &blobs_dir))?;
    for blob in unique_blobs(image) {
        link_or_copy(store, blob, &blobs_dir.join(blob.digest.hex()))?;
    }
    write_file(&root.join(LAYOUT_FILE), LAYOUT_JSON)?;
    write_file(&root.join(INDEX_FILE), index)?;
    replace_dir(temp, dest)
}

/// Fails early if `dest` is something a layout directory must not replace.
fn ensure_dir_or_absent(dest: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if !meta.is_dir() => Err(Error::NotADirectory {
            path: dest.to_path_buf(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", dest)(e)),
    }
}

/// Moves the finished layout in `temp` to `dest`, replacing what was there.
fn replace_dir(temp: tempfile::TempDir, dest: &Path) -> Result<(), Error> {
    ensure_dir_or_absent(dest)?;
    if dest.exists() {
        // Swap atomically where the kernel can; `temp` then holds the old layout and its drop
        // removes it.
        if exchange(temp.path(), dest).is_ok() {
            return Ok(());
        }
        fs::remove_dir_all(dest).map_err(Error::io("remove the old layout at", dest))?;
    }
    let path = temp.keep();
    fs::rename(&path, dest).map_err(|source| {
        let _ = fs::remove_dir_all(&path);
        Error::Io {
            action: "move the layout into place at",
            path: dest.to_path_buf(),
            source,
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE).map_err(io::Error::from)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

fn link_or_copy(store: &ContentStore, blob: &Descriptor, dest: &Path) -> Result<(), Error> {
    let mut src = store.open_blob(&blob.digest)?;
    if fs::hard_link(store.blob_path(&blob.digest), dest).is_ok() {
        return Ok(());
    }
    let mut out = File::create(dest).map_err(Error::io("create", dest))?;
    io::copy(&mut src, &mut out).map_err(Error::io("copy a blob to", dest))?;
    out.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(Error::io("chmod", dest))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), Error> {
    fs::write(path, data).map_err(Error::io("write", path))
}

fn write_tar_file(
    store: &ContentStore,
    image: &Image,
    index: &[u8],
    dest: &Path,
) -> Result<(), Error> {
    let (parent, name) = parent_and_name(dest);
    fs::create_dir_all(&parent).map_err(Error::io("create directory", &parent))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .tempfile_in(&parent)
        .map_err(Error::io("create a temp file in", &parent))?;
    let out = write_tar(store, image, index, BufWriter::new(temp))?;
    let temp = out
        .into_inner()
        .map_err(|e| Error::io("write", dest)(e.into_error()))?;
    let file = temp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("sync", temp.path()))?;
    temp.persist(dest)
        .map_err(|e| Error::io("move the layout tar into place at", dest)(e.error))?;
    Ok(())
}

fn write_tar<W: Write>(
    store: &ContentStore,
    image: &Image,
    index: &[u8],
    out: W,
) -> Result<W, Error> {
    let failed = |source| Error::Write {
        what: "the OCI layout tar",
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
    for (name, data) in [(INDEX_FILE, index), (LAYOUT_FILE, LAYOUT_JSON)] {
        let entry = TarEntry::new(EntryType::Regular, name.as_bytes()).attrs(0o444, 0, 0, 0);
        entry
            .size(data.len() as u64)
            .write(&mut tar, data)
            .map_err(failed)?;
    }
    let mut out = tar.into_inner().map_err(failed)?;
    out.flush().map_err(failed)?;
    Ok(out)
}

/// The directory holding `path` (`.` for a bare name) and `path`'s file name, for temp names.
fn parent_and_name(path: &Path) -> (PathBuf, String) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "oci-layout".into(), |n| n.to_string_lossy().into_owned());
    (parent, name)
}
