//! `--output` specs as buildx takes them (`type=oci,dest=out,tar=false`, or the shorthands
//! `-o DIR` and `-o -`).

use anyhow::{anyhow, bail, Result};
use std::path::PathBuf;

/// Where a build's result goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An OCI image layout: a tar file (or stdout with `-`), or a directory with `tar=false`.
    Oci { dest: PathBuf, tar: bool },
}

/// Parses one `--output` value.
pub fn parse(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        let what = if spec == "-" {
            "type=tar to stdout"
        } else {
            "type=local"
        };
        bail!("--output {spec}: {what} (the shorthand for it) is not supported yet; use type=oci,dest=PATH");
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("--output {spec}: {field:?} is not KEY=VALUE"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_string()),
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" => {
                tar = match v {
                    "true" => true,
                    "false" => false,
                    _ => bail!("--output {spec}: tar={v} must be true or false"),
                }
            }
            "name" | "push" | "compression" | "compression-level" | "oci-mediatypes"
            | "rewrite-timestamp" | "annotation" => {
                bail!("--output {spec}: the option {k} is not supported yet")
            }
            other => bail!("--output {spec}: unknown option {other:?}"),
        }
    }
    let kind = kind.ok_or_else(|| {
        anyhow!("--output {spec}: missing type= (oci, docker, local, tar or image)")
    })?;
    match kind.as_str() {
        "oci" => {
            let dest = dest.ok_or_else(|| anyhow!("--output {spec}: type=oci needs dest=PATH"))?;
            Ok(Output::Oci { dest, tar })
        }
        "docker" | "local" | "tar" | "image" | "registry" => {
            bail!("--output {spec}: type={kind} is not supported yet; use type=oci")
        }
        other => {
            bail!("--output {spec}: unknown type {other:?}: use oci, docker, local, tar or image")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_outputs() {
        assert_eq!(
            parse("type=oci,dest=out,tar=false").unwrap(),
            Output::Oci {
                dest: "out".into(),
                tar: false
            }
        );
        assert_eq!(
            parse("type=oci,dest=o.tar").unwrap(),
            Output::Oci {
                dest: "o.tar".into(),
                tar: true
            }
        );
    }

    #[test]
    fn bad_outputs() {
        for (spec, msg) in [
            ("type=oci", "needs dest"),
            ("type=oci,dest=x,tar=maybe", "true or false"),
            ("type=nope,dest=x", "unknown type"),
            ("type=docker,dest=x", "not supported yet"),
            ("dest=x", "missing type"),
            ("outdir", "not supported yet"),
            ("type=oci,dest=x,weird=1", "unknown option"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(msg), "{spec}: {e}");
        }
    }
}
