//! `user[:group]` resolved against the image's `/etc/passwd` and `/etc/group`, with the rules of
//! BuildKit's `oci.GetUser`: `uid:gid` in numbers is taken as is (no lookup, no supplementary
//! groups); anything else goes through runc's `user.GetExecUser`, where a name must exist, a
//! number need not, the group comes from passwd unless given, and supplementary groups are the
//! `/etc/group` entries listing the user, only when no group was given.

use super::ExecError;

/// Who the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub sgids: Vec<u32>,
    /// From passwd; `/` when the user has no entry (runc's default).
    pub home: String,
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, …). `passwd` and `group` are
/// the files' contents, `None` when the image lacks them.
pub(crate) fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, ExecError> {
    let users = passwd.map(parse_passwd).unwrap_or_default();
    let groups = group.map(parse_groups).unwrap_or_default();
    let home_of = |uid: u32| {
        users
            .iter()
            .find(|u| u.uid == uid)
            .map_or_else(|| "/".to_string(), |u| u.home.clone())
    };

    if let Some((uid, gid)) = numeric_pair(spec) {
        return Ok(ExecUser {
            uid,
            gid,
            sgids: Vec::new(),
            home: home_of(uid),
        });
    }

    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let mut user = ExecUser {
        uid: 0,
        gid: 0,
        sgids: Vec::new(),
        home: "/".to_string(),
    };
    let numeric_user = user_arg.parse::<u32>().ok();
    let matched = users.iter().find(|u| match numeric_user {
        _ if user_arg.is_empty() => u.uid == 0,
        Some(uid) => u.uid == uid,
        None => u.name == user_arg,
    });
    match (matched, numeric_user) {
        (Some(entry), _) => {
            user.uid = entry.uid;
            user.gid = entry.gid;
            user.home = entry.home.clone();
        }
        (None, Some(uid)) => user.uid = uid,
        (None, None) if user_arg.is_empty() => {}
        (None, None) => {
            return Err(ExecError::UnknownUser {
                user: user_arg.to_string(),
            })
        }
    }

    if !group_arg.is_empty() {
        let numeric_group = group_arg.parse::<u32>().ok();
        let found = groups.iter().find(|g| match numeric_group {
            Some(gid) => g.gid == gid,
            None => g.name == group_arg,
        });
        user.gid = match (found, numeric_group) {
            (Some(g), _) => g.gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(ExecError::UnknownGroup {
                    group: group_arg.to_string(),
                })
            }
        };
    } else if let Some(entry) = matched {
        user.sgids = groups
            .iter()
            .filter(|g| g.members.contains(&entry.name))
            .map(|g| g.gid)
            .collect();
    }
    Ok(user)
}

/// BuildKit's fast path: both parts given, each a number or `root`.
fn numeric_pair(spec: &str) -> Option<(u32, u32)> {
    if spec.is_empty() {
        return Some((0, 0));
    }
    let (u, g) = spec.split_once(':')?;
    let id = |s: &str| if s == "root" { Some(0) } else { s.parse().ok() };
    Some((id(u)?, id(g)?))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    entries(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

fn parse_groups(text: &str) -> Vec<GroupEntry> {
    entries(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Colon-separated fields of the lines that are not blank or comments.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\nwheel:x:10:app\n";

    fn resolve(spec: &str) -> Result<ExecUser, ExecError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn name_takes_ids_home_and_supplementary_groups() {
        let u = resolve("app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.sgids, u.home.as_str()),
            (1000, 1000, vec![2000, 10], "/home/app")
        );
    }

    #[test]
    fn uid_alone_is_looked_up_in_passwd() {
        assert_eq!(resolve("1000").unwrap().sgids, vec![2000, 10]);
        let unknown = resolve("4242").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
    }

    #[test]
    fn uid_gid_skips_lookup_and_groups() {
        let u = resolve("1000:1000").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.sgids.len(), u.home.as_str()),
            (1000, 1000, 0, "/home/app")
        );
        assert_eq!(resolve("").unwrap().uid, 0);
    }

    #[test]
    fn explicit_group_replaces_gid_without_supplementary_groups() {
        let u = resolve("app:extra").unwrap();
        assert_eq!((u.uid, u.gid, u.sgids.len()), (1000, 2000, 0));
        assert_eq!(resolve("app:77").unwrap().gid, 77);
    }

    #[test]
    fn unknown_names_are_errors_a_user_can_read() {
        assert_eq!(
            resolve("nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("app:nogroup").unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve_user("app", None, None).is_err());
    }
}
