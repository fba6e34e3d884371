//! `--chown` names resolved the way BuildKit does it: in the destination filesystem's
//! `/etc/passwd` and `/etc/group`, read inside its root.

use std::fs;
use std::io;
use std::path::Path;

use super::rootpath::{is_missing, resolve, Escape};
use super::FileOpError;
use crate::op::{Chown, UserRef};

/// A numeric owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Resolves `chown` against the databases in `dest_root`. A user id without a group also gives
/// the group id; a user name without a group gives that user's primary group.
pub(crate) fn resolve_owner(chown: &Chown, dest_root: &Path) -> Result<Owner, FileOpError> {
    let mut owner = match &chown.user {
        UserRef::Id(id) => Owner { uid: *id, gid: *id },
        UserRef::Name(name) => lookup(dest_root, "etc/passwd", name, 2, 3)?
            .map(|(uid, gid)| Owner { uid, gid })
            .or_else(|| builtin_root(name).map(|_| Owner { uid: 0, gid: 0 }))
            .ok_or_else(|| FileOpError::UnknownUser { name: name.clone() })?,
    };
    match &chown.group {
        None => {}
        Some(UserRef::Id(id)) => owner.gid = *id,
        Some(UserRef::Name(name)) => {
            owner.gid = lookup(dest_root, "etc/group", name, 2, 2)?
                .map(|(gid, _)| gid)
                .or_else(|| builtin_root(name))
                .ok_or_else(|| FileOpError::UnknownGroup { name: name.clone() })?;
        }
    }
    Ok(owner)
}

/// `root` means id 0 even in a filesystem without a passwd file (a scratch stage), the one name
/// BuildKit accepts without a lookup for `COPY --link --chown`.
fn builtin_root(name: &str) -> Option<u32> {
    (name == "root").then_some(0)
}

/// Finds `name` in the colon-separated database at `db` and returns the numeric fields at
/// `first` and `second`. A missing file holds no entries.
fn lookup(
    dest_root: &Path,
    db: &str,
    name: &str,
    first: usize,
    second: usize,
) -> Result<Option<(u32, u32)>, FileOpError> {
    let text = match read_db(dest_root, db) {
        Ok(text) => text,
        Err(e) if is_missing(&e) => return Ok(None),
        Err(e) => {
            return Err(FileOpError::Io {
                action: "failed to read",
                path: format!("/{db}"),
                error: e,
            })
        }
    };
    Ok(text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let a = fields.get(first)?.trim().parse().ok()?;
        let b = fields.get(second)?.trim().parse().ok()?;
        Some((a, b))
    }))
}

fn read_db(dest_root: &Path, db: &str) -> io::Result<String> {
    let rel =
        resolve(dest_root, Path::new(db), true, Escape::Clamp, &|_| false).map_err(
            |e| match e {
                super::rootpath::ResolveError::Io(e) => e,
                _ => io::Error::from(io::ErrorKind::NotFound),
            },
        )?;
    let bytes = fs::read(dest_root.join(rel))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbroken\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        )
        .unwrap();
        dir
    }

    fn name(s: &str) -> UserRef {
        UserRef::Name(s.to_string())
    }

    #[test]
    fn resolves_ids_and_names() {
        let dir = root_with_db();
        let cases = [
            (UserRef::Id(42), None, (42, 42)),
            (UserRef::Id(42), Some(UserRef::Id(7)), (42, 7)),
            (name("app"), None, (1000, 1001)),
            (name("app"), Some(name("staff")), (1000, 50)),
            (UserRef::Id(5), Some(name("staff")), (5, 50)),
            (name("root"), Some(UserRef::Id(3)), (0, 3)),
        ];
        for (user, group, (uid, gid)) in cases {
            let chown = Chown { user, group };
            assert_eq!(
                resolve_owner(&chown, dir.path()).unwrap(),
                Owner { uid, gid },
                "{chown:?}"
            );
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        let dir = root_with_db();
        let err = resolve_owner(
            &Chown {
                user: name("nobody"),
                group: None,
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let err = resolve_owner(
            &Chown {
                user: name("app"),
                group: Some(name("wheel")),
            },
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group wheel: no matching entries in group file"
        );
    }

    #[test]
    fn root_without_passwd_file() {
        let dir = tempfile::tempdir().unwrap();
        let chown = Chown {
            user: name("root"),
            group: Some(name("root")),
        };
        assert_eq!(
            resolve_owner(&chown, dir.path()).unwrap(),
            Owner { uid: 0, gid: 0 }
        );
    }
}
