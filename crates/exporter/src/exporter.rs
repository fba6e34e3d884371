//! The [`Exporter`] seam: one implementation per output type (`--output type=…`).
//!
//! Image outputs (oci, docker, image/registry) consume an [`Image`] whose blobs are in the
//! content store; filesystem outputs (local, tar) consume the final root filesystem and need no
//! layer blobs at all. An exporter says which it wants ([`Exporter::input`]) so the caller
//! builds only that, then calls [`Exporter::export`].

use crate::{oci_layout, rootfs, Error, Image};
use kiln_cache::ContentStore;
use kiln_oci::{Descriptor, Digest};
use std::path::{Path, PathBuf};

/// What an exporter consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// An image written with [`crate::write_image`].
    Image,
    /// The build result's root filesystem, as a directory.
    Rootfs,
}

/// The build result handed to an exporter.
#[derive(Clone, Copy, Debug)]
pub enum ExportInput<'a> {
    Image(&'a Image),
    Rootfs(&'a Path),
}

impl ExportInput<'_> {
    fn kind(&self) -> InputKind {
        match self {
            ExportInput::Image(_) => InputKind::Image,
            ExportInput::Rootfs(_) => InputKind::Rootfs,
        }
    }
}

/// What an export produced, for the build's metadata file (BuildKit's `containerimage.digest`,
/// `containerimage.config.digest`, `image.name`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportResult {
    /// The exported manifest (image outputs only).
    pub manifest: Option<Descriptor>,
    /// The digest of the exported image config (image outputs only).
    pub config_digest: Option<Digest>,
    /// The image name the output carries, if any.
    pub image_name: Option<String>,
}

/// Writes a build result to one output.
pub trait Exporter {
    /// The output type's name as `--output type=` spells it.
    fn name(&self) -> &'static str;
    /// What [`Exporter::export`] must be given.
    fn input(&self) -> InputKind;
    /// Writes `input` (whose blobs, if any, are in `store`) to the output.
    fn export(&self, store: &ContentStore, input: ExportInput<'_>) -> Result<ExportResult, Error>;
}

/// Where an OCI layout goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciDest {
    /// A layout directory (`tar=false`).
    Dir(PathBuf),
    /// A tar file; `-` means stdout.
    Tar(PathBuf),
}

/// `type=oci`: an OCI image layout, as a tar (the default) or a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciExporter {
    pub dest: OciDest,
    /// The full image name from `-t`/`name=`, e.g. `docker.io/library/app:1`.
    pub image_name: Option<String>,
}

impl OciExporter {
    /// The `org.opencontainers.image.ref.name` to write: the tag of the image name, `latest`
    /// when it has none, nothing for a digest reference or no name.
    pub fn ref_name(&self) -> Option<&str> {
        let name = self.image_name.as_deref()?;
        if name.contains('@') {
            return None;
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        Some(last.rsplit_once(':').map_or("latest", |(_, tag)| tag))
    }
}

impl Exporter for OciExporter {
    fn name(&self) -> &'static str {
        "oci"
    }

    fn input(&self) -> InputKind {
        InputKind::Image
    }

    fn export(&self, store: &ContentStore, input: ExportInput<'_>) -> Result<ExportResult, Error> {
        let ExportInput::Image(image) = input else {
            return Err(wrong_input(self, input));
        };
        let (dest, as_tar) = match &self.dest {
            OciDest::Dir(d) => (d, false),
            OciDest::Tar(f) => (f, true),
        };
        let (ref_name, image_name) = (self.ref_name(), self.image_name.as_deref());
        oci_layout::write_oci_layout(store, image, dest, as_tar, ref_name, image_name)?;
        Ok(ExportResult {
            manifest: Some(image.descriptor.clone()),
            config_digest: Some(image.manifest.config.digest.clone()),
            image_name: self.image_name.clone(),
        })
    }
}

/// `type=docker`: a docker-archive file (`-` for stdout) named by `repo_tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerExporter {
    pub dest: PathBuf,
    /// `app:1`-style names for `manifest.json`'s `RepoTags`.
    pub repo_tags: Vec<String>,
}

impl Exporter for DockerExporter {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn input(&self) -> InputKind {
        InputKind::Image
    }

    fn export(&self, store: &ContentStore, input: ExportInput<'_>) -> Result<ExportResult, Error> {
        let ExportInput::Image(image) = input else {
            return Err(wrong_input(self, input));
        };
        oci_layout::write_docker_archive(store, image, &self.dest, &self.repo_tags)?;
        Ok(ExportResult {
            manifest: Some(image.descriptor.clone()),
            config_digest: Some(image.manifest.config.digest.clone()),
            image_name: self.repo_tags.first().cloned(),
        })
    }
}

/// `type=local` (a directory) and `type=tar` (one tar file, `-` for stdout): the root
/// filesystem of the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootfsExporter {
    Local {
        dest: PathBuf,
    },
    Tar {
        dest: PathBuf,
        mtime_clamp: Option<i64>,
    },
}

impl Exporter for RootfsExporter {
    fn name(&self) -> &'static str {
        match self {
            RootfsExporter::Local { .. } => "local",
            RootfsExporter::Tar { .. } => "tar",
        }
    }

    fn input(&self) -> InputKind {
        InputKind::Rootfs
    }

    fn export(&self, _: &ContentStore, input: ExportInput<'_>) -> Result<ExportResult, Error> {
        let ExportInput::Rootfs(rootfs) = input else {
            return Err(wrong_input(self, input));
        };
        match self {
            RootfsExporter::Local { dest } => rootfs::write_rootfs_dir(rootfs, dest)?,
            RootfsExporter::Tar { dest, mtime_clamp } => {
                rootfs::write_rootfs_tar(rootfs, dest, *mtime_clamp)?
            }
        }
        Ok(ExportResult::default())
    }
}

fn wrong_input(exporter: &dyn Exporter, given: ExportInput<'_>) -> Error {
    let describe = |kind| match kind {
        InputKind::Image => "an image",
        InputKind::Rootfs => "a root filesystem",
    };
    Error::WrongInput {
        exporter: exporter.name(),
        needs: describe(exporter.input()),
        given: describe(given.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(name: Option<&str>) -> OciExporter {
        OciExporter {
            dest: OciDest::Tar("out.tar".into()),
            image_name: name.map(str::to_string),
        }
    }

    #[test]
    fn ref_name_is_the_tag() {
        assert_eq!(oci(Some("app:1")).ref_name(), Some("1"));
        assert_eq!(
            oci(Some("docker.io/library/app:1.2")).ref_name(),
            Some("1.2")
        );
        assert_eq!(
            oci(Some("localhost:5000/team/app")).ref_name(),
            Some("latest")
        );
        assert_eq!(oci(Some("localhost:5000/app:v2")).ref_name(), Some("v2"));
        assert_eq!(oci(Some("app@sha256:abc")).ref_name(), None);
        assert_eq!(oci(None).ref_name(), None);
    }

    #[test]
    fn oci_wants_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let e = oci(None);
        assert_eq!(e.input(), InputKind::Image);
        let err = e
            .export(&store, ExportInput::Rootfs(dir.path()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the oci exporter needs an image, but was given a root filesystem"
        );
    }
}
