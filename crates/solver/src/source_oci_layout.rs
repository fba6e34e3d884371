//! OCI image layouts on disk as sources (`--build-context NAME=oci-layout://PATH[:TAG|@DIGEST]`,
//! BuildKit's `llb.OCILayout`): find the image in `index.json`, read its manifest and config,
//! and bring its layer blobs into the content store, each verified against its digest.

use kiln_cache::ContentStore;
use kiln_oci::{media_types, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Tag or digest of an image in a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutRef {
    Tag(String),
    Digest(Digest),
}

/// One platform's image of a layout.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    /// The image manifest's digest (after platform selection in an index).
    pub digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// The path of a blob of the layout at `root`.
pub fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Reads a blob of the layout and checks it against its digest.
pub fn read_blob(root: &Path, d: &Digest) -> Result<Vec<u8>, String> {
    let path = blob_path(root, d);
    let data = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let actual = Digest::of(&data);
    if actual != *d {
        return Err(format!(
            "{}: the blob's content is {actual}, not {d}",
            path.display()
        ));
    }
    Ok(data)
}

fn read_json<T: DeserializeOwned>(root: &Path, d: &Digest, what: &str) -> Result<T, String> {
    let data = read_blob(root, d)?;
    serde_json::from_slice(&data)
        .map_err(|e| format!("{}: invalid {what} {d}: {e}", root.display()))
}

fn is_index(media_type: &str) -> bool {
    media_type == media_types::OCI_INDEX || media_type == media_types::DOCKER_MANIFEST_LIST
}

/// Finds `reference` in the layout at `root` and resolves it to `platform`'s image.
pub fn resolve(
    root: &Path,
    reference: &LayoutRef,
    platform: &Platform,
) -> Result<LayoutImage, String> {
    let index_path = root.join("index.json");
    let data = std::fs::read(&index_path).map_err(|e| {
        format!(
            "{}: not an OCI layout (reading index.json: {e})",
            root.display()
        )
    })?;
    let index: Index = serde_json::from_slice(&data)
        .map_err(|e| format!("{}: invalid index.json: {e}", index_path.display()))?;
    let desc: Descriptor = match reference {
        LayoutRef::Tag(tag) => index
            .manifests
            .iter()
            .find(|d| {
                d.annotations
                    .as_ref()
                    .and_then(|a| a.get(media_types::ANNOTATION_REF_NAME))
                    .is_some_and(|n| n == tag)
            })
            .cloned()
            .ok_or_else(|| {
                let tags: Vec<&str> = index
                    .manifests
                    .iter()
                    .filter_map(|d| {
                        d.annotations
                            .as_ref()?
                            .get(media_types::ANNOTATION_REF_NAME)
                    })
                    .map(String::as_str)
                    .collect();
                format!(
                    "{}: no image tagged {tag:?} in the layout (tags: {})",
                    root.display(),
                    if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    }
                )
            })?,
        LayoutRef::Digest(d) => match index.manifests.iter().find(|m| m.digest == *d) {
            Some(m) => m.clone(),
            // A digest not in index.json may still name a blob (a child of an index).
            None => {
                let data = read_blob(root, d)?;
                let v: serde_json::Value = serde_json::from_slice(&data)
                    .map_err(|e| format!("{}: blob {d} is not JSON: {e}", root.display()))?;
                let media_type =
                    v["mediaType"]
                        .as_str()
                        .unwrap_or(if v.get("manifests").is_some() {
                            media_types::OCI_INDEX
                        } else {
                            media_types::OCI_MANIFEST
                        });
                Descriptor::new(media_type, d.clone(), data.len() as u64)
            }
        },
    };
    let manifest_desc = if is_index(&desc.media_type) {
        let child: Index = read_json(root, &desc.digest, "image index")?;
        select_platform(&child.manifests, platform)
            .cloned()
            .ok_or_else(|| {
                let available: Vec<String> = child
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(ToString::to_string)
                    .collect();
                format!(
                    "{}: image {} has no manifest for {platform} (available: {})",
                    root.display(),
                    desc.digest,
                    available.join(", ")
                )
            })?
    } else {
        desc
    };
    let manifest: Manifest = read_json(root, &manifest_desc.digest, "image manifest")?;
    let config: ImageConfig = read_json(root, &manifest.config.digest, "image config")?;
    Ok(LayoutImage {
        digest: manifest_desc.digest,
        manifest,
        config,
    })
}

fn normalise_arch(p: &Platform) -> (String, String, Option<String>) {
    let (arch, variant) = match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64" | "aarch64", Some("v8")) | ("arm64" | "aarch64", None) => ("arm64", None),
        ("arm", None) => ("arm", Some("v7")),
        ("x86_64", v) => ("amd64", v),
        (a, v) => (a, v),
    };
    (p.os.clone(), arch.to_string(), variant.map(str::to_string))
}

/// The index entry for `wanted` (os/architecture/variant, normalised).
fn select_platform<'a>(manifests: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let want = normalise_arch(wanted);
    manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| normalise_arch(p) == want)
    })
}

/// Copies the blob `desc` of the layout at `root` into `content`, verified, unless it is there.
pub fn import_blob(root: &Path, desc: &Descriptor, content: &ContentStore) -> Result<(), String> {
    if content.contains(&desc.digest) {
        return Ok(());
    }
    let path = blob_path(root, &desc.digest);
    let mut file =
        std::fs::File::open(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut w = content.writer().map_err(|e| e.to_string())?;
    std::io::copy(&mut file, &mut w).map_err(|e| format!("reading {}: {e}", path.display()))?;
    w.commit(Some(&desc.digest))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_selection_normalises() {
        let mut amd = Descriptor::new(media_types::OCI_MANIFEST, Digest::of(b"a"), 1);
        amd.platform = Some("linux/amd64".parse().unwrap());
        let mut arm = Descriptor::new(media_types::OCI_MANIFEST, Digest::of(b"b"), 1);
        arm.platform = Some("linux/arm64/v8".parse().unwrap());
        let list = [amd.clone(), arm.clone()];
        assert_eq!(
            select_platform(&list, &"linux/arm64".parse().unwrap()),
            Some(&arm)
        );
        assert_eq!(
            select_platform(&list, &"linux/amd64".parse().unwrap()),
            Some(&amd)
        );
        assert_eq!(
            select_platform(&list, &"linux/s390x".parse().unwrap()),
            None
        );
    }
}
