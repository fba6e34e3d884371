//! `--secret`, as buildx reads it: `id=ID,src=PATH` (`type=file`), `id=ID,env=VAR`
//! (`type=env`), or just `id=ID`, which takes the environment variable `ID` when it is set and
//! the file `ID` otherwise. Every value is read before the build starts, so a missing file or
//! variable fails the build before any step runs.

use anyhow::{bail, Context, Result};
use kiln_solver::executor::SecretBytes;
use kiln_solver::Secrets;

/// BuildKit's limit on a secret's size (`MaxSecretSize`).
const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// Where a secret's value comes from.
#[derive(Debug, PartialEq, Eq)]
enum SecretSource {
    File(String),
    Env(String),
}

/// Reads the value of every `--secret`; a later one with the same id replaces an earlier one.
pub fn read(specs: &[String]) -> Result<Secrets> {
    let mut secrets = Secrets::new();
    for spec in specs {
        let (id, source) = parse(spec).with_context(|| format!("--secret {spec}"))?;
        let value = load(&source).with_context(|| format!("--secret id={id}"))?;
        secrets.insert(id, value);
    }
    Ok(secrets)
}

/// `id` and source of one `--secret` (buildx's `parseSecret` and BuildKit's `NewStore`).
fn parse(spec: &str) -> Result<(String, SecretSource)> {
    let (mut id, mut typ, mut src, mut env) = (None, None, None, None);
    for field in spec.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid field {field:?}: it must be a key=value pair");
        };
        let value = value.to_string();
        match key.to_lowercase().as_str() {
            "type" if value == "file" || value == "env" => typ = Some(value),
            "type" => bail!("unsupported secret type {value:?}: use file or env"),
            "id" => id = Some(value),
            "source" | "src" => src = Some(value),
            "env" => env = Some(value),
            other => bail!("unexpected key {other:?}: use id, src, env or type"),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .context("the secret has no id")?;
    if typ.as_deref() == Some("env") && env.is_none() {
        env = src.take();
    }
    let source = match (src, env) {
        (Some(_), Some(_)) => bail!("give either src or env, not both"),
        (Some(path), None) => SecretSource::File(path),
        (None, Some(var)) => SecretSource::Env(var),
        (None, None) if typ.as_deref() == Some("file") => SecretSource::File(id.clone()),
        (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None) => SecretSource::File(id.clone()),
    };
    Ok((id, source))
}

fn load(source: &SecretSource) -> Result<SecretBytes> {
    match source {
        SecretSource::Env(var) => match std::env::var_os(var) {
            Some(value) => Ok(SecretBytes::new(std::os::unix::ffi::OsStringExt::into_vec(
                value,
            ))),
            None => bail!("the environment variable {var} is not set"),
        },
        SecretSource::File(path) => {
            let size = std::fs::metadata(path)
                .with_context(|| format!("reading {path}"))?
                .len();
            if size > MAX_SECRET_SIZE {
                bail!("{path} is too big for a secret ({size} bytes; at most 500KB)");
            }
            let value = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            Ok(SecretBytes::new(value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_as_buildx_reads_them() {
        let file = |p: &str| SecretSource::File(p.into());
        let env = |v: &str| SecretSource::Env(v.into());
        let ok = |s: &str| parse(s).unwrap();
        assert_eq!(ok("id=a,src=/p"), ("a".into(), file("/p")));
        assert_eq!(ok("id=a,source=/p,type=file"), ("a".into(), file("/p")));
        assert_eq!(ok("id=a,env=V"), ("a".into(), env("V")));
        assert_eq!(ok("type=env,id=a,src=V"), ("a".into(), env("V")));
        assert_eq!(ok("type=file,id=a"), ("a".into(), file("a")));
        // Neither src nor env: the variable named like the id if set, else the file.
        assert_eq!(ok("id=PATH"), ("PATH".into(), env("PATH")));
        assert_eq!(
            ok("id=kiln-no-such-variable"),
            (
                "kiln-no-such-variable".into(),
                file("kiln-no-such-variable")
            )
        );
        for bad in [
            "src=/p",
            "id=",
            "id=a,src",
            "id=a,type=ssh",
            "id=a,what=1",
            "id=a,src=/p,env=V",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_read_up_front_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "v4lue").unwrap();
        let spec = format!("id=a,src={}", path.display());
        let secrets = read(&[spec]).unwrap();
        assert_eq!(secrets["a"].as_bytes(), b"v4lue");
        let missing = format!("id=a,src={}", dir.path().join("nope").display());
        let err = format!("{:#}", read(&[missing]).unwrap_err());
        assert!(err.contains("id=a") && err.contains("nope"), "{err}");
        let err = format!(
            "{:#}",
            read(&["id=a,env=KILN_NO_SUCH_VAR".into()]).unwrap_err()
        );
        assert!(err.contains("KILN_NO_SUCH_VAR is not set"), "{err}");
        std::fs::write(&path, vec![b'x'; 600 * 1024]).unwrap();
        let err = format!(
            "{:#}",
            read(&[format!("id=a,src={}", path.display())]).unwrap_err()
        );
        assert!(err.contains("too big"), "{err}");
    }
}
