//! `--output` specs as buildx takes them (`type=oci,dest=out,tar=false`, the shorthands
//! `-o DIR` and `-o -`), `--push`, `--load`, `--annotation`, and what a build with `-t` and no
//! output does: store the image in kiln's local image store.

use anyhow::{anyhow, bail, Result};
use kiln_exporter::Compression;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a build's result goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout: a tar file (or stdout with `-`), or a directory with `tar=false`.
    Oci { dest: PathBuf, tar: bool },
    /// A docker-archive file (`-` for stdout), or with no `dest` loaded into docker/podman.
    Docker { dest: Option<PathBuf> },
    /// The root filesystem of the result, as a directory.
    Local { dest: PathBuf },
    /// The root filesystem of the result, as one tar (`-` for stdout).
    Tar { dest: PathBuf },
    /// Named in kiln's local image store, and pushed to the registry with `push`.
    Image { push: bool },
}

impl Output {
    /// Whether the output is made of an image (else of the root filesystem).
    pub fn is_image(&self) -> bool {
        !matches!(self, Output::Local { .. } | Output::Tar { .. })
    }
}

/// An output and how its image is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub output: Output,
    /// Image names (`name=`, else `-t`), as given.
    pub names: Vec<String>,
    pub format: ImageFormat,
}

/// How an output's image is written; outputs with equal formats share one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFormat {
    pub compression: Compression,
    /// Recompress the base image's layers too (`force-compression=true`).
    pub force_compression: bool,
    pub oci_media_types: bool,
    /// Clamp the mtimes of the build's files to SOURCE_DATE_EPOCH (on unless
    /// `rewrite-timestamp=false`).
    pub rewrite_timestamp: bool,
    pub annotations: Annotations,
}

/// Image annotations by where they go (buildx's `--annotation [TYPE:]KEY=VALUE` and the
/// output options `annotation[-TYPE].KEY=VALUE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    pub manifest: BTreeMap<String, String>,
    pub manifest_descriptor: BTreeMap<String, String>,
}

impl Annotations {
    /// Adds `KEY=VALUE` for the annotation type `kind` (`manifest` when empty).
    fn add(&mut self, kind: &str, kv: &str, what: &str) -> Result<()> {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("{what}: expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("{what}: the annotation key is empty");
        }
        if k.contains('[') {
            bail!("{what}: platform-specific annotations are not supported yet");
        }
        let map = match kind {
            "" | "manifest" => &mut self.manifest,
            "manifest-descriptor" => &mut self.manifest_descriptor,
            "index" | "index-descriptor" => bail!(
                "{what}: {kind} annotations are not supported yet (kiln builds one platform, \
                 so its images have no index)"
            ),
            other => bail!(
                "{what}: unknown annotation type {other:?}: use manifest or manifest-descriptor"
            ),
        };
        map.insert(k.to_string(), v.to_string());
        Ok(())
    }

    /// Parses `--annotation [TYPE:]KEY=VALUE`.
    pub fn add_flag(&mut self, flag: &str) -> Result<()> {
        let what = format!("--annotation {flag}");
        match flag.split_once(':') {
            Some((kind, kv))
                if !kind.contains('=')
                    && kind.chars().all(|c| c.is_ascii_lowercase() || c == '-') =>
            {
                self.add(kind, kv, &what)
            }
            _ => self.add("", flag, &what),
        }
    }
}

/// The outputs of a build: its `--output`s, `--push` and `--load`; with none of them and a
/// `-t`, the local image store.
pub fn outputs(
    specs: &[String],
    tags: &[String],
    push: bool,
    load: bool,
    annotations: &Annotations,
) -> Result<Vec<OutputSpec>> {
    let mut outputs = specs
        .iter()
        .map(|s| parse(s, tags, annotations))
        .collect::<Result<Vec<_>>>()?;
    if push {
        outputs.push(parse("type=image,push=true", tags, annotations)?);
    }
    if load {
        outputs.push(parse("type=docker", tags, annotations)?);
    }
    if outputs.is_empty() && !tags.is_empty() {
        outputs.push(parse("type=image", tags, annotations)?);
    }
    Ok(outputs)
}

/// Parses one `--output` value; `tags` are the `-t` names an output without `name=` takes.
pub fn parse(spec: &str, tags: &[String], annotations: &Annotations) -> Result<OutputSpec> {
    if !spec.contains('=') {
        // buildx: a path is the local exporter, `-` the tar exporter to stdout.
        let output = if spec == "-" {
            Output::Tar { dest: "-".into() }
        } else if spec.is_empty() {
            bail!("--output: empty value");
        } else {
            Output::Local { dest: spec.into() }
        };
        return Ok(OutputSpec {
            output,
            names: Vec::new(),
            format: default_format(true, annotations),
        });
    }
    let mut fields = BTreeMap::new();
    for field in split_fields(spec) {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("--output {spec}: {field:?} is not KEY=VALUE"))?;
        fields.insert(k.trim().to_string(), v.to_string());
    }
    let kind = fields.remove("type").ok_or_else(|| {
        anyhow!("--output {spec}: missing type= (oci, docker, local, tar or image)")
    })?;
    let is_image = match kind.as_str() {
        "oci" | "docker" | "image" | "registry" => true,
        "local" | "tar" => false,
        "cacheonly" => bail!("--output {spec}: type=cacheonly is not supported yet"),
        other => {
            bail!("--output {spec}: unknown type {other:?}: use oci, docker, local, tar or image")
        }
    };
    let mut format = default_format(kind != "docker", annotations);
    let mut names: Vec<String> = tags.to_vec();
    let mut dest = None;
    let mut tar = true;
    let mut push = kind == "registry";
    let mut level = None;
    let bool_of = |k: &str, v: &str| match v {
        "true" | "" => Ok(true),
        "false" => Ok(false),
        _ => Err(anyhow!("--output {spec}: {k}={v} must be true or false")),
    };
    for (k, v) in &fields {
        let image_only = || {
            if is_image {
                Ok(())
            } else {
                Err(anyhow!(
                    "--output {spec}: {k} is an option of image outputs, not of type={kind}"
                ))
            }
        };
        match k.as_str() {
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" if kind == "oci" => tar = bool_of(k, v)?,
            "name" => {
                image_only()?;
                names = v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "push" if matches!(kind.as_str(), "image" | "registry") => push = bool_of(k, v)?,
            "compression" => {
                image_only()?;
                format.compression = match v.as_str() {
                    "gzip" => Compression::default(),
                    "zstd" => Compression::Zstd { level: 3 },
                    "uncompressed" => Compression::Uncompressed,
                    "estargz" => {
                        bail!("--output {spec}: compression=estargz is not supported yet")
                    }
                    _ => bail!(
                        "--output {spec}: unknown compression {v:?}: use gzip, zstd or uncompressed"
                    ),
                }
            }
            "compression-level" => {
                image_only()?;
                level = Some(v.parse::<i32>().map_err(|_| {
                    anyhow!("--output {spec}: compression-level={v} is not a number")
                })?);
            }
            "force-compression" => {
                image_only()?;
                format.force_compression = bool_of(k, v)?;
            }
            "oci-mediatypes" => {
                image_only()?;
                format.oci_media_types = bool_of(k, v)?;
            }
            "rewrite-timestamp" => format.rewrite_timestamp = bool_of(k, v)?,
            _ if k.starts_with("annotation") => {
                image_only()?;
                let (kind, key) = k
                    .split_once('.')
                    .ok_or_else(|| anyhow!("--output {spec}: {k}: expected annotation.KEY"))?;
                let kind = kind.strip_prefix("annotation").unwrap_or(kind);
                let kind = kind.strip_prefix('-').unwrap_or(kind);
                format
                    .annotations
                    .add(kind, &format!("{key}={v}"), &format!("--output {spec}"))?;
            }
            "store"
            | "unpack"
            | "dangling-name-prefix"
            | "name-canonical"
            | "push-by-digest"
            | "insecure"
            | "registry.insecure"
            | "buildinfo"
            | "buildinfo-attrs"
            | "attest"
            | "platform-split"
            | "context" => {
                bail!("--output {spec}: the option {k} is not supported yet")
            }
            other => bail!("--output {spec}: unknown option {other:?} for type={kind}"),
        }
    }
    if let Some(level) = level {
        format.compression = match format.compression {
            Compression::Gzip { .. } if (0..=9).contains(&level) => Compression::Gzip {
                level: level as u32,
            },
            Compression::Zstd { .. } if (1..=22).contains(&level) => Compression::Zstd { level },
            Compression::Uncompressed => {
                bail!("--output {spec}: compression-level needs gzip or zstd compression")
            }
            _ => bail!(
                "--output {spec}: compression-level={level} is out of range (gzip 0-9, zstd 1-22)"
            ),
        };
    }
    let output = match kind.as_str() {
        "oci" => Output::Oci {
            dest: dest.ok_or_else(|| anyhow!("--output {spec}: type=oci needs dest=PATH"))?,
            tar,
        },
        "docker" => Output::Docker { dest },
        "local" => Output::Local {
            dest: dest.ok_or_else(|| anyhow!("--output {spec}: type=local needs dest=DIR"))?,
        },
        "tar" => Output::Tar {
            dest: dest.ok_or_else(|| anyhow!("--output {spec}: type=tar needs dest=FILE"))?,
        },
        _ => {
            if dest.is_some() {
                bail!("--output {spec}: type={kind} takes no dest; it names images with name=");
            }
            if names.is_empty() {
                bail!("--output {spec}: type={kind} needs a name: give name=REF or -t REF");
            }
            Output::Image { push }
        }
    };
    if !output.is_image() {
        names.clear();
    }
    Ok(OutputSpec {
        output,
        names,
        format,
    })
}

/// The format of an image no output asked for (for `--iidfile` and `--metadata-file`).
pub fn default_image_format(annotations: &Annotations) -> ImageFormat {
    default_format(true, annotations)
}

fn default_format(oci_media_types: bool, annotations: &Annotations) -> ImageFormat {
    ImageFormat {
        compression: Compression::default(),
        force_compression: false,
        oci_media_types,
        rewrite_timestamp: true,
        annotations: annotations.clone(),
    }
}

/// Splits at commas outside double quotes (buildx's CSV: `name="a,b",push=true`), removing
/// the quotes.
fn split_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> OutputSpec {
        parse(spec, &[], &Annotations::default()).unwrap()
    }

    #[test]
    fn outputs_of_every_type() {
        assert_eq!(
            one("type=oci,dest=out,tar=false").output,
            Output::Oci {
                dest: "out".into(),
                tar: false
            }
        );
        assert_eq!(
            one("type=oci,dest=o.tar").output,
            Output::Oci {
                dest: "o.tar".into(),
                tar: true
            }
        );
        assert_eq!(
            one("type=docker,dest=d.tar").output,
            Output::Docker {
                dest: Some("d.tar".into())
            }
        );
        assert_eq!(one("type=docker").output, Output::Docker { dest: None });
        assert_eq!(
            one("type=local,dest=dir").output,
            Output::Local { dest: "dir".into() }
        );
        assert_eq!(one("dir").output, Output::Local { dest: "dir".into() });
        assert_eq!(one("-").output, Output::Tar { dest: "-".into() });
        let spec = one(r#"type=image,"name=a:1,b:2",push=true"#);
        assert_eq!(spec.output, Output::Image { push: true });
        assert_eq!(spec.names, ["a:1", "b:2"]);
        let spec = one("type=registry,name=r:1");
        assert_eq!(spec.output, Output::Image { push: true });
    }

    #[test]
    fn image_formats() {
        let f = one("type=oci,dest=o,compression=zstd,compression-level=9").format;
        assert_eq!(f.compression, Compression::Zstd { level: 9 });
        assert!(f.oci_media_types && f.rewrite_timestamp && !f.force_compression);
        let f = one("type=docker,dest=d").format;
        assert!(!f.oci_media_types, "docker archives use Docker media types");
        let f = one("type=oci,dest=o,compression=uncompressed,oci-mediatypes=false,rewrite-timestamp=false,force-compression=true").format;
        assert_eq!(f.compression, Compression::Uncompressed);
        assert!(!f.oci_media_types && !f.rewrite_timestamp && f.force_compression);
        let f = one("type=oci,dest=o,compression-level=1").format;
        assert_eq!(f.compression, Compression::Gzip { level: 1 });
        let f = one("type=oci,dest=o,annotation.a=1,annotation-manifest-descriptor.b=2").format;
        assert_eq!(f.annotations.manifest["a"], "1");
        assert_eq!(f.annotations.manifest_descriptor["b"], "2");
    }

    #[test]
    fn tags_name_image_outputs_and_pick_the_default() {
        let tags = vec!["app:1".to_string()];
        let none = Annotations::default();
        let outs = outputs(&[], &tags, false, false, &none).unwrap();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].output, Output::Image { push: false });
        assert_eq!(outs[0].names, tags);
        assert!(outputs(&[], &[], false, false, &none).unwrap().is_empty());
        let outs = outputs(&["type=local,dest=d".into()], &tags, true, true, &none).unwrap();
        let kinds: Vec<_> = outs.iter().map(|o| o.output.clone()).collect();
        assert_eq!(
            kinds,
            [
                Output::Local { dest: "d".into() },
                Output::Image { push: true },
                Output::Docker { dest: None }
            ]
        );
        assert!(outs[0].names.is_empty());
    }

    #[test]
    fn annotation_flags() {
        let mut a = Annotations::default();
        a.add_flag("org.opencontainers.image.title=x:y").unwrap();
        a.add_flag("manifest-descriptor:k=v").unwrap();
        assert_eq!(a.manifest["org.opencontainers.image.title"], "x:y");
        assert_eq!(a.manifest_descriptor["k"], "v");
        for (flag, msg) in [
            ("index:k=v", "not supported yet"),
            ("novalue", "expected KEY=VALUE"),
            ("weird:k=v", "unknown annotation type"),
            ("manifest[linux/amd64]:k=v", "not supported yet"),
        ] {
            let e = a.add_flag(flag).unwrap_err().to_string();
            assert!(e.contains(msg), "{flag}: {e}");
        }
    }

    #[test]
    fn bad_outputs() {
        for (spec, msg) in [
            ("type=oci", "needs dest"),
            ("type=local", "needs dest"),
            ("type=oci,dest=x,tar=maybe", "true or false"),
            ("type=nope,dest=x", "unknown type"),
            ("dest=x", "missing type"),
            ("type=oci,dest=x,weird=1", "unknown option"),
            ("type=image", "needs a name"),
            ("type=image,name=a,dest=x", "takes no dest"),
            (
                "type=local,dest=d,compression=zstd",
                "option of image outputs",
            ),
            ("type=oci,dest=x,compression=lz4", "unknown compression"),
            ("type=oci,dest=x,compression=estargz", "not supported yet"),
            ("type=oci,dest=x,compression-level=10", "out of range"),
            (
                "type=oci,dest=x,compression=uncompressed,compression-level=1",
                "needs gzip",
            ),
            ("type=image,name=a,unpack=true", "not supported yet"),
            ("type=cacheonly", "not supported yet"),
        ] {
            let e = parse(spec, &[], &Annotations::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{spec}: {e}");
        }
    }
}
