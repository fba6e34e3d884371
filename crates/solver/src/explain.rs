//! Why a step missed the cache. Each step that makes a layer leaves a [`StepRecord`] under its
//! identity (the frontend's step id, which stays put while the step's key changes): its key and
//! the inputs that key was computed from. When the step misses the cache next time, the new
//! inputs are compared with the record and the first, most specific difference is reported:
//! a copied file, a build arg, the command, the env, the parent step.
//!
//! The inputs are what the key computation has at hand anyway (the copy selection's entries,
//! the exec op's definition, the inputs' keys): explaining reads no file the key didn't.

use crate::cachekey::CacheKey;
use crate::contenthash::SelectedEntry;
use crate::op::{ExecOp, FileAction, MountKind};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The inputs behind a step's cache key. `key` must stay the first field: the record store
/// checks it without parsing the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's cache key, hex.
    pub key: String,
    /// The filesystem the step starts from.
    pub parent: ParentInputs,
    pub inputs: StepInputs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParentInputs {
    pub key: String,
    /// `reference@digest` when the parent is a base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StepInputs {
    Exec(ExecInputs),
    File(FileInputs),
}

/// What a RUN step's key covers, besides its parent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecInputs {
    pub args: Vec<String>,
    /// `KEY=value`, build args in scope included.
    pub env: Vec<String>,
    pub user: String,
    pub cwd: String,
    pub network: String,
    /// The mount definitions (sources by position, not by key).
    pub mounts: String,
    /// Keys of the filesystems the mounts read.
    pub mount_sources: Vec<String>,
}

/// What a COPY/ADD/WORKDIR step's key covers, besides its parent: one entry per action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInputs {
    pub actions: Vec<ActionInputs>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionInputs {
    /// The action as written (sources by position).
    pub definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CopySource>,
}

/// What a copy read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopySource {
    /// The selected files of a local directory: `[path, digest]` in copy order.
    Files(Vec<(String, String)>),
    /// Another step's filesystem (`COPY --from`), by key, with its display name.
    Step { key: String, name: String },
}

impl CopySource {
    pub fn files(entries: &[SelectedEntry]) -> CopySource {
        CopySource::Files(
            entries
                .iter()
                .map(|e| (e.path.to_string_lossy().into_owned(), hex::encode(e.digest)))
                .collect(),
        )
    }
}

impl ExecInputs {
    /// An exec op's inputs, with the keys of what its mounts read.
    pub fn new(e: &ExecOp, keys: &HashMap<usize, CacheKey>) -> ExecInputs {
        let mut mount_sources = Vec::new();
        let mut mounts = e.mounts.clone();
        for m in &mut mounts {
            match &mut m.kind {
                MountKind::Bind { from, .. }
                | MountKind::Cache {
                    from: Some(from), ..
                } => {
                    mount_sources.push(keys[from].hex());
                    *from = 0;
                }
                _ => {}
            }
        }
        ExecInputs {
            args: e.args.clone(),
            env: e.env.clone(),
            user: e.user.clone(),
            cwd: e.cwd.clone(),
            network: format!("{:?}", e.network).to_lowercase(),
            mounts: serde_json::to_string(&mounts).expect("mounts serialise"),
            mount_sources,
        }
    }
}

/// A file action's definition with its copy source blanked, as its key covers it.
pub fn action_definition(action: &FileAction) -> String {
    let mut action = action.clone();
    if let FileAction::Copy(c) = &mut action {
        c.source = 0;
    }
    serde_json::to_string(&action).expect("actions serialise")
}

/// What the explanation needs beyond the two records.
pub struct Context<'a> {
    /// Names of the build args in scope (the rest of the env is ENV).
    pub build_args: &'a [String],
    /// The parent step ran in this build (rather than coming from the cache).
    pub parent_ran: bool,
}

/// Why a step whose inputs are `new` missed the cache, given its `old` record.
pub fn explain(old: Option<&StepRecord>, new: &StepRecord, cx: &Context<'_>) -> String {
    let Some(old) = old else {
        return "first build".into();
    };
    if old.key == new.key {
        // Same inputs as last time, but the result is gone (pruned, or never committed).
        return "no cached result".into();
    }
    let own = match (&old.inputs, &new.inputs) {
        (StepInputs::Exec(a), StepInputs::Exec(b)) => exec_change(a, b, cx),
        (StepInputs::File(a), StepInputs::File(b)) => file_change(a, b),
        _ => Some("instruction changed".into()),
    };
    if let Some(reason) = own {
        return reason;
    }
    if old.parent.key != new.parent.key {
        return match (&old.parent.image, &new.parent.image) {
            (Some(a), Some(b)) if a != b => {
                let (name, was) = split_image(a);
                let (new_name, now) = split_image(b);
                if name == new_name {
                    format!(
                        "base image {name} changed ({} → {})",
                        short(was),
                        short(now)
                    )
                } else {
                    format!("base image changed ({name} → {new_name})")
                }
            }
            (Some(_), Some(b)) => format!("base image {} changed", split_image(b).0),
            _ if cx.parent_ran => "parent step re-ran".into(),
            _ => "parent step changed".into(),
        };
    }
    "inputs changed".into()
}

fn exec_change(a: &ExecInputs, b: &ExecInputs, cx: &Context<'_>) -> Option<String> {
    let old_env = env_map(&a.env);
    let new_env = env_map(&b.env);
    let is_arg = |k: &str| cx.build_args.iter().any(|a| a == k);
    let mut env_changed = None;
    // Names in the new order, then names that are gone.
    let names = new_env
        .iter()
        .map(|(k, _)| *k)
        .chain(old_env.iter().map(|(k, _)| *k));
    for name in names {
        let was = lookup(&old_env, name);
        let now = lookup(&new_env, name);
        if was == now {
            continue;
        }
        if is_arg(name) {
            return Some(format!(
                "build arg {name} changed ({} → {})",
                shown(was),
                shown(now)
            ));
        }
        env_changed.get_or_insert_with(|| format!("env {name} changed"));
    }
    if a.args != b.args {
        return Some("command changed".into());
    }
    if env_changed.is_some() {
        return env_changed;
    }
    if a.user != b.user {
        return Some(format!("user changed ({:?} → {:?})", a.user, b.user));
    }
    if a.cwd != b.cwd {
        return Some(format!("workdir changed ({} → {})", a.cwd, b.cwd));
    }
    if a.network != b.network {
        return Some(format!(
            "network mode changed ({} → {})",
            a.network, b.network
        ));
    }
    if a.mounts != b.mounts {
        return Some("mounts changed".into());
    }
    if a.mount_sources != b.mount_sources {
        return Some("a mounted source changed".into());
    }
    None
}

fn file_change(a: &FileInputs, b: &FileInputs) -> Option<String> {
    if a.actions.len() != b.actions.len()
        || a.actions
            .iter()
            .zip(&b.actions)
            .any(|(x, y)| x.definition != y.definition)
    {
        return Some("instruction changed".into());
    }
    for (x, y) in a.actions.iter().zip(&b.actions) {
        match (&x.source, &y.source) {
            (Some(CopySource::Files(old)), Some(CopySource::Files(new))) => {
                if let Some(reason) = files_change(old, new) {
                    return Some(reason);
                }
            }
            (Some(CopySource::Step { key: k1, .. }), Some(CopySource::Step { key: k2, name }))
                if k1 != k2 =>
            {
                return Some(format!("source {name} changed"));
            }
            (s1, s2) if s1 != s2 && std::mem::discriminant(s1) != std::mem::discriminant(s2) => {
                return Some("instruction changed".into());
            }
            _ => {}
        }
    }
    None
}

/// The first changed, added or removed file, in copy order, and how many more there are.
fn files_change(old: &[(String, String)], new: &[(String, String)]) -> Option<String> {
    let before: HashMap<&str, &str> = old.iter().map(|(p, d)| (p.as_str(), d.as_str())).collect();
    let after: HashMap<&str, &str> = new.iter().map(|(p, d)| (p.as_str(), d.as_str())).collect();
    let mut changes = new
        .iter()
        .filter_map(|(p, d)| match before.get(p.as_str()) {
            None => Some(format!("{p} added")),
            Some(was) if was != d => Some(format!("{p} changed")),
            Some(_) => None,
        })
        .chain(
            old.iter()
                .filter(|(p, _)| !after.contains_key(p.as_str()))
                .map(|(p, _)| format!("{p} removed")),
        );
    let first = changes.next()?;
    Some(match changes.count() {
        0 => first,
        1 => format!("{first} (and 1 more file)"),
        n => format!("{first} (and {n} more files)"),
    })
}

fn env_map(env: &[String]) -> Vec<(&str, &str)> {
    env.iter()
        .map(|kv| kv.split_once('=').unwrap_or((kv.as_str(), "")))
        .collect()
}

/// The value a variable has (the last one given wins, as for a process's environment).
fn lookup<'a>(env: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    env.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A value for a one-line message: `unset`, or the value, cut when long.
fn shown(v: Option<&str>) -> String {
    match v {
        None => "unset".into(),
        Some(v) if v.chars().count() > 40 => {
            format!("{}…", v.chars().take(39).collect::<String>())
        }
        Some(v) => v.to_string(),
    }
}

fn split_image(s: &str) -> (&str, &str) {
    s.rsplit_once('@').unwrap_or((s, ""))
}

/// `sha256:0123456789ab` of a digest.
fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(0, |i| i + 1) + 12;
    digest.get(..end).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(env: &[&str], args: &[&str]) -> StepInputs {
        StepInputs::Exec(ExecInputs {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            user: String::new(),
            cwd: "/".into(),
            network: "host".into(),
            mounts: "[]".into(),
            mount_sources: Vec::new(),
        })
    }

    fn files(f: &[(&str, &str)]) -> StepInputs {
        StepInputs::File(FileInputs {
            actions: vec![ActionInputs {
                definition: "copy".into(),
                source: Some(CopySource::Files(
                    f.iter()
                        .map(|(p, d)| (p.to_string(), d.to_string()))
                        .collect(),
                )),
            }],
        })
    }

    fn rec(key: &str, parent: &str, inputs: StepInputs) -> StepRecord {
        StepRecord {
            key: key.into(),
            parent: ParentInputs {
                key: parent.into(),
                image: None,
            },
            inputs,
        }
    }

    const CX: Context<'static> = Context {
        build_args: &[],
        parent_ran: true,
    };

    #[test]
    fn names_the_first_difference() {
        let args = ["VERSION".to_string()];
        let cx = Context {
            build_args: &args,
            parent_ran: true,
        };
        let a = rec("1", "p", exec(&["PATH=/bin", "VERSION=1.2"], &["make"]));
        let b = rec("2", "p", exec(&["PATH=/bin", "VERSION=1.3"], &["make"]));
        assert_eq!(
            explain(Some(&a), &b, &cx),
            "build arg VERSION changed (1.2 → 1.3)"
        );
        let c = rec("3", "p", exec(&["PATH=/bin"], &["make"]));
        assert_eq!(
            explain(Some(&a), &c, &cx),
            "build arg VERSION changed (1.2 → unset)"
        );
        let d = rec("4", "p", exec(&["PATH=/usr/bin", "VERSION=1.2"], &["make"]));
        assert_eq!(explain(Some(&a), &d, &cx), "env PATH changed");
        let e = rec(
            "5",
            "p",
            exec(&["PATH=/bin", "VERSION=1.2"], &["make", "all"]),
        );
        assert_eq!(explain(Some(&a), &e, &cx), "command changed");
        let f = rec("6", "q", exec(&["PATH=/bin", "VERSION=1.2"], &["make"]));
        assert_eq!(explain(Some(&a), &f, &cx), "parent step re-ran");
        assert_eq!(explain(None, &f, &cx), "first build");
        assert_eq!(explain(Some(&a), &a, &cx), "no cached result");
    }

    #[test]
    fn names_changed_added_and_removed_files() {
        let a = rec("1", "p", files(&[("src/a", "1"), ("src/b", "2")]));
        let b = rec("2", "p", files(&[("src/a", "1"), ("src/b", "3")]));
        assert_eq!(explain(Some(&a), &b, &CX), "src/b changed");
        let c = rec(
            "3",
            "p",
            files(&[("src/a", "1"), ("src/b", "2"), ("src/c", "4")]),
        );
        assert_eq!(explain(Some(&a), &c, &CX), "src/c added");
        let d = rec("4", "p", files(&[("src/b", "9")]));
        assert_eq!(
            explain(Some(&a), &d, &CX),
            "src/b changed (and 1 more file)"
        );
        let e = rec("5", "p", files(&[("src/a", "1")]));
        assert_eq!(explain(Some(&a), &e, &CX), "src/b removed");
    }

    #[test]
    fn names_a_changed_base_image() {
        let mut a = rec("1", "p", exec(&[], &["true"]));
        a.parent.image = Some("busybox:1@sha256:aaaaaaaaaaaaaaaaaaaa".into());
        let mut b = rec("2", "q", exec(&[], &["true"]));
        b.parent.image = Some("busybox:1@sha256:bbbbbbbbbbbbbbbbbbbb".into());
        assert_eq!(
            explain(Some(&a), &b, &CX),
            "base image busybox:1 changed (sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb)"
        );
    }
}
