//! Layers + an image config → config blob and manifest blob in the content store.

use crate::timestamp;
use crate::{Error, Layer};
use kiln_cache::ContentStore;
use kiln_oci::{media_types, Descriptor, HistoryEntry, ImageConfig, Manifest, Platform, RootFs};
use std::collections::BTreeMap;

/// How the image is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    /// SOURCE_DATE_EPOCH, in Unix seconds: `created` of the config and of every history entry.
    pub epoch: Option<i64>,
    /// Without an epoch, the time (Unix seconds) the config and the build's history entries
    /// are created at; now when `None`. The images of one build pass the same time, so that
    /// its outputs (in different formats) describe the same image.
    pub created: Option<i64>,
    /// OCI media types for manifest and config; Docker v2 ones when false.
    pub oci_media_types: bool,
    /// The platform recorded on the manifest's descriptor.
    pub platform: Platform,
    /// Annotations of the manifest (buildx's `--annotation manifest:K=V`).
    pub manifest_annotations: BTreeMap<String, String>,
    /// Annotations of the manifest's descriptor (`manifest-descriptor:K=V`), which an OCI
    /// layout's `index.json` carries.
    pub descriptor_annotations: BTreeMap<String, String>,
}

/// An image whose config, manifest and layer blobs are all in the content store.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// The manifest blob, with `platform` set.
    pub descriptor: Descriptor,
    /// The manifest; `manifest.config` and `manifest.layers` describe the other blobs.
    pub manifest: Manifest,
    /// The config as written (diff_ids, timestamps and history filled in).
    pub config: ImageConfig,
}

impl Image {
    /// Every blob of the image: manifest, config, then layers bottom first.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        [&self.descriptor, &self.manifest.config]
            .into_iter()
            .chain(&self.manifest.layers)
    }
}

/// Writes the image made of `layers` (bottom first, base image layers included) and `config`.
///
/// History entries without `empty_layer` pair with `layers` in order. A layer whose tar is
/// empty is left out and its history entry marked `empty_layer`, as BuildKit does.
pub fn write_image(
    store: &ContentStore,
    config: &ImageConfig,
    layers: &[Layer],
    opts: &ImageOptions,
) -> Result<Image, Error> {
    let mut config = config.clone();
    let layers = drop_empty_layers(&mut config.history, layers)?;
    config.rootfs = RootFs {
        diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        ..RootFs::default()
    };
    set_created(&mut config, opts.epoch, opts.created);

    let (config_type, manifest_type) = if opts.oci_media_types {
        (media_types::OCI_CONFIG, media_types::OCI_MANIFEST)
    } else {
        (media_types::DOCKER_CONFIG, media_types::DOCKER_MANIFEST)
    };
    let (digest, size) = store.put(&config.to_json())?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.into()),
        config: Descriptor::new(config_type, digest, size),
        layers: layers
            .iter()
            .map(|l| layer_descriptor(&l.descriptor, opts.oci_media_types))
            .collect(),
        annotations: non_empty(&opts.manifest_annotations),
    };
    let (digest, size) = store.put(&manifest.to_json())?;
    let mut descriptor = Descriptor::new(manifest_type, digest, size);
    descriptor.platform = Some(opts.platform.clone());
    descriptor.annotations = non_empty(&opts.descriptor_annotations);
    Ok(Image {
        descriptor,
        manifest,
        config,
    })
}

fn non_empty(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

/// Pairs layer-creating history entries with `layers` and drops the empty layers, marking
/// their entries `empty_layer`. Without history there is nothing to pair or mark.
fn drop_empty_layers<'a>(
    history: &mut [HistoryEntry],
    layers: &'a [Layer],
) -> Result<Vec<&'a Layer>, Error> {
    if history.is_empty() {
        return Ok(layers.iter().filter(|l| !l.empty).collect());
    }
    let with_layer = history.iter().filter(|h| !h.empty_layer).count();
    if with_layer != layers.len() {
        return Err(Error::HistoryMismatch {
            history: with_layer,
            layers: layers.len(),
        });
    }
    let entries = history.iter_mut().filter(|h| !h.empty_layer);
    let mut kept = Vec::with_capacity(layers.len());
    for (entry, layer) in entries.zip(layers) {
        if layer.empty {
            entry.empty_layer = true;
        } else {
            kept.push(layer);
        }
    }
    Ok(kept)
}

/// With an epoch every `created` is the epoch; without, `created` is now and so is every
/// history entry that has no time yet.
fn set_created(config: &mut ImageConfig, epoch: Option<i64>, created: Option<i64>) {
    let time = match epoch.or(created) {
        Some(secs) => timestamp::rfc3339_utc(secs),
        None => timestamp::now_rfc3339(),
    };
    for entry in &mut config.history {
        if epoch.is_some() || entry.created.is_none() {
            entry.created = Some(time.clone());
        }
    }
    config.created = Some(time);
}

/// The layer's descriptor with its media type in the family the manifest uses.
fn layer_descriptor(layer: &Descriptor, oci: bool) -> Descriptor {
    let pairs = [
        (media_types::OCI_LAYER_GZIP, media_types::DOCKER_LAYER_GZIP),
        (media_types::OCI_LAYER, media_types::DOCKER_LAYER),
    ];
    let mut d = layer.clone();
    for (oci_type, docker_type) in pairs {
        let (from, to) = if oci {
            (docker_type, oci_type)
        } else {
            (oci_type, docker_type)
        };
        if d.media_type == from {
            d.media_type = to.into();
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::Digest;

    fn layer(name: &str, empty: bool) -> Layer {
        Layer {
            descriptor: Descriptor::new(
                media_types::OCI_LAYER_GZIP,
                Digest::of(name.as_bytes()),
                10,
            ),
            diff_id: Digest::of(format!("diff {name}").as_bytes()),
            empty,
        }
    }

    fn step(created_by: &str, empty_layer: bool) -> HistoryEntry {
        HistoryEntry {
            created_by: Some(created_by.into()),
            empty_layer,
            ..Default::default()
        }
    }

    fn opts(epoch: Option<i64>, oci: bool) -> ImageOptions {
        ImageOptions {
            epoch,
            created: None,
            oci_media_types: oci,
            platform: "linux/amd64".parse().unwrap(),
            manifest_annotations: BTreeMap::new(),
            descriptor_annotations: BTreeMap::new(),
        }
    }

    fn config_with(history: Vec<HistoryEntry>) -> ImageConfig {
        ImageConfig {
            history,
            ..ImageConfig::scratch(&"linux/amd64".parse().unwrap())
        }
    }

    #[test]
    fn empty_layers_are_dropped_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let config = config_with(vec![
            step("COPY a /", false),
            step("ENV X=1", true),
            step("RUN true", false),
            step("COPY b /", false),
        ]);
        let layers = [layer("a", false), layer("empty", true), layer("b", false)];
        let image =
            write_image(&store, &config, &layers, &opts(Some(1_700_000_000), true)).unwrap();

        let flags: Vec<bool> = image.config.history.iter().map(|h| h.empty_layer).collect();
        assert_eq!(flags, [false, true, true, false]);
        assert_eq!(
            image.config.rootfs.diff_ids,
            [layers[0].diff_id.clone(), layers[2].diff_id.clone()]
        );
        assert_eq!(
            image.manifest.layers,
            [layers[0].descriptor.clone(), layers[2].descriptor.clone()]
        );

        // What is in the store is what the Image says.
        let stored: ImageConfig = serde_json::from_slice(
            &std::fs::read(store.blob_path(&image.manifest.config.digest)).unwrap(),
        )
        .unwrap();
        assert_eq!(stored, image.config);
        let stored: Manifest = serde_json::from_slice(
            &std::fs::read(store.blob_path(&image.descriptor.digest)).unwrap(),
        )
        .unwrap();
        assert_eq!(stored, image.manifest);
        assert_eq!(image.descriptor.media_type, media_types::OCI_MANIFEST);
        assert_eq!(
            image.descriptor.platform,
            Some("linux/amd64".parse().unwrap())
        );
        assert_eq!(image.blobs().count(), 4);
    }

    #[test]
    fn history_must_match_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let config = config_with(vec![step("RUN a", false), step("ENV X=1", true)]);
        let err = write_image(
            &store,
            &config,
            &[layer("a", false), layer("b", false)],
            &opts(None, true),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::HistoryMismatch {
                    history: 1,
                    layers: 2
                }
            ),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("1 entries that create a layer, but 2 layers"));
    }

    #[test]
    fn epoch_sets_every_created() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut config = config_with(vec![step("RUN a", false), step("ENV X=1", true)]);
        config.history[0].created = Some("2020-01-01T00:00:00Z".into());
        let image = write_image(
            &store,
            &config,
            &[layer("a", false)],
            &opts(Some(1_700_000_000), true),
        )
        .unwrap();
        let epoch = Some("2023-11-14T22:13:20Z".to_string());
        assert_eq!(image.config.created, epoch);
        assert!(image.config.history.iter().all(|h| h.created == epoch));
        let again = write_image(
            &store,
            &config,
            &[layer("a", false)],
            &opts(Some(1_700_000_000), true),
        )
        .unwrap();
        assert_eq!(again.descriptor, image.descriptor);
    }

    #[test]
    fn without_epoch_only_missing_times_are_filled() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut config = config_with(vec![step("RUN a", false), step("ENV X=1", true)]);
        config.history[0].created = Some("2020-01-01T00:00:00Z".into());
        let image = write_image(&store, &config, &[layer("a", false)], &opts(None, true)).unwrap();
        assert_eq!(
            image.config.history[0].created.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
        let now = image.config.created.clone().unwrap();
        assert!(now.as_str() > "2024" && now.ends_with('Z'), "{now}");
        assert_eq!(
            image.config.history[1].created.as_deref(),
            Some(now.as_str())
        );
        // A build's given time: the same for every image it writes, whatever the format.
        let at = |oci| ImageOptions {
            created: Some(1_000_000_000),
            ..opts(None, oci)
        };
        let oci = write_image(&store, &config, &[layer("a", false)], &at(true)).unwrap();
        let docker = write_image(&store, &config, &[layer("a", false)], &at(false)).unwrap();
        assert_eq!(oci.config, docker.config);
        assert_eq!(oci.config.created.as_deref(), Some("2001-09-09T01:46:40Z"));
        assert_eq!(
            oci.config.history[0].created.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
    }

    #[test]
    fn docker_media_types() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let image = write_image(
            &store,
            &config_with(vec![]),
            &[layer("a", false)],
            &opts(Some(0), false),
        )
        .unwrap();
        assert_eq!(image.descriptor.media_type, media_types::DOCKER_MANIFEST);
        assert_eq!(
            image.manifest.media_type.as_deref(),
            Some(media_types::DOCKER_MANIFEST)
        );
        assert_eq!(image.manifest.config.media_type, media_types::DOCKER_CONFIG);
        assert_eq!(
            image.manifest.layers[0].media_type,
            media_types::DOCKER_LAYER_GZIP
        );
        assert!(image.config.history.is_empty());
    }
}
