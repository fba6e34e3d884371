//! The build graph: a handful of op kinds, free of Dockerfile words, that any frontend can emit
//! (the role LLB plays in BuildKit). Each op has one output: a filesystem.

use kiln_oci::{Digest, Platform};
use serde::{Deserialize, Serialize};

/// Index of an op in its [`Graph`].
pub type OpId = usize;

/// Ops in dependency order: an op only refers to ops with a smaller id.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Graph {
    pub nodes: Vec<OpNode>,
}

/// An op and what the progress display and error messages say about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpNode {
    pub op: Op,
    pub meta: OpMeta,
}

/// Where an op came from, for humans; never part of a cache key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OpMeta {
    /// `[builder 2/4] RUN make`, as BuildKit names vertices.
    pub name: String,
    /// Source location (file, 1-based line) the op was made from, if any.
    pub location: Option<Location>,
    /// What names the step across builds while its cache key changes (the frontend's
    /// `<file>:<stage>:<instruction index>`): the solver remembers the inputs behind each
    /// step's last key under it, to say why the step missed the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// The (lowercased) name or `stage-N` label of the stage the op belongs to, for
    /// `--no-cache-filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Names of the build arguments in scope: variables of an exec op's env that came from
    /// an ARG, so a changed value is reported as a build arg rather than as env.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_args: Vec<String>,
}

/// A place in a frontend's input file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

/// The op kinds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// A filesystem that comes from outside the graph.
    Source(Source),
    /// A process run on a root filesystem; its output is that filesystem afterwards.
    Exec(ExecOp),
    /// File actions applied to a root filesystem; the output is the changed filesystem.
    File(FileOp),
    /// The layers of each input stacked in order (BuildKit's MergeOp): a layer made on scratch
    /// and merged onto a parent doesn't depend on that parent (`COPY --link`).
    Merge(Vec<OpId>),
}

/// Filesystems that enter the graph.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Source {
    /// The empty filesystem.
    Scratch,
    /// An image's root filesystem, already resolved to a manifest digest by the frontend.
    Image {
        reference: String,
        digest: Option<Digest>,
        platform: Platform,
    },
    /// A directory the user handed to the build (the context, or a named context).
    /// `exclude` holds `.dockerignore` patterns; `include` limits what is read, when not empty.
    Local {
        name: String,
        include: Vec<String>,
        exclude: Vec<String>,
    },
    /// A file fetched over HTTP(S), named `filename` in an otherwise empty filesystem.
    Http {
        url: String,
        checksum: Option<Digest>,
        filename: String,
        mode: u32,
    },
    /// An image in an OCI layout on disk (`path` holds `index.json` and `blobs/`), by the
    /// digest of its (single-platform) manifest.
    OciLayout {
        path: String,
        digest: Digest,
        platform: Platform,
    },
}

/// Run `args` in `rootfs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecOp {
    pub rootfs: OpId,
    pub args: Vec<String>,
    /// `KEY=value` pairs, in order.
    pub env: Vec<String>,
    pub cwd: String,
    /// `user[:group]`, names or ids, resolved in the rootfs.
    pub user: String,
    pub network: NetworkMode,
    pub mounts: Vec<Mount>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// The host's network (BuildKit's default without CNI).
    #[default]
    Host,
    /// Only a loopback interface.
    None,
}

/// An extra mount of a RUN step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mount {
    pub target: String,
    pub kind: MountKind,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MountKind {
    Bind {
        from: OpId,
        source: String,
        readwrite: bool,
    },
    Cache {
        id: String,
        sharing: CacheSharing,
        from: Option<OpId>,
        source: String,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
    },
    Tmpfs {
        size: Option<u64>,
    },
    Secret {
        id: String,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// File actions on `base`, applied in order into one new layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileOp {
    pub base: OpId,
    pub actions: Vec<FileAction>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FileAction {
    Copy(CopyAction),
    Mkdir {
        path: String,
        mode: u32,
        make_parents: bool,
        owner: Option<Chown>,
    },
    Mkfile {
        path: String,
        mode: u32,
        data: Vec<u8>,
        owner: Option<Chown>,
    },
}

/// Copy paths of the `source` op's filesystem into the base, with Docker's path rules.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CopyAction {
    pub source: OpId,
    /// Source paths relative to the source root; may hold wildcards (`*`, `?`, `[...]`).
    pub src: Vec<String>,
    /// Absolute destination in the base; a trailing `/` means "a directory".
    pub dest: String,
    pub owner: Option<Chown>,
    /// Octal mode for every copied file and directory.
    pub mode: Option<u32>,
    /// ADD: unpack local tar archives (gzip, bzip2, xz, zstd or plain) into `dest`.
    pub extract_archives: bool,
    /// Patterns (relative to the source root) of files not to copy.
    pub exclude: Vec<String>,
    /// Keep each source's parent directories under `dest` (`--parents`).
    pub parents: bool,
}

/// `--chown` as written: ids or names, names resolved in the destination's /etc/passwd and
/// /etc/group at the time the action runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    pub user: UserRef,
    pub group: Option<UserRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserRef {
    Id(u32),
    Name(String),
}

impl Graph {
    /// Appends `op` and returns its id.
    pub fn add(&mut self, op: Op, meta: OpMeta) -> OpId {
        self.nodes.push(OpNode { op, meta });
        self.nodes.len() - 1
    }

    /// The ops `id` reads from.
    pub fn inputs(&self, id: OpId) -> Vec<OpId> {
        match &self.nodes[id].op {
            Op::Source(_) => Vec::new(),
            Op::Exec(e) => {
                let mut v = vec![e.rootfs];
                for m in &e.mounts {
                    match &m.kind {
                        MountKind::Bind { from, .. } => v.push(*from),
                        MountKind::Cache { from: Some(f), .. } => v.push(*f),
                        _ => {}
                    }
                }
                v
            }
            Op::Merge(inputs) => inputs.clone(),
            Op::File(f) => {
                let mut v = vec![f.base];
                for a in &f.actions {
                    if let FileAction::Copy(c) = a {
                        v.push(c.source);
                    }
                }
                v
            }
        }
    }
}
