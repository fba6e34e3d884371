//! Solving a graph: every op the target needs gets a cache key from its definition and its
//! inputs' keys; an op whose result is in the snapshot store is reused, any other is computed
//! and committed. (Ops run one at a time here; the parallel scheduler replaces this loop.)

use crate::cachekey::{tree_digest, CacheKey, KeyBuilder};
use crate::executor::{
    resolve_in_root, ExecError, ExecMount, ExecMountKind, ExecSpec, Executor, Stream,
};
use crate::fileop::{self, FileOpOptions, SourceFs};
use crate::op::{CopyAction, ExecOp, FileAction, Graph, Location, MountKind, Op, OpId, Source};
use crate::{source_http, source_oci_layout};
use kiln_cache::{ContentStore, Mounted, SnapshotId, SnapshotStore};
use kiln_oci::{Descriptor, Digest, Platform};
use kiln_patterns::PatternMatcher;
use kiln_registry::Reference;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an HTTP source may wait for a connection, a response or the next bytes.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A layer of a solved filesystem.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub id: SnapshotId,
    /// The layer's directory in overlay upperdir form.
    pub diff: PathBuf,
    /// For a base image's layer: its blob as pulled, which exports reuse byte for byte.
    pub blob: Option<LayerBlob>,
}

/// A pulled layer blob (in the content store) and its uncompressed digest.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerBlob {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// What an op produced.
#[derive(Clone, Debug)]
enum Output {
    /// A root filesystem: layers, bottom first.
    Layers(Vec<Layer>),
    /// A directory handed to the build, with the paths it hides.
    Local {
        root: PathBuf,
        ignore: Option<Arc<PatternMatcher>>,
    },
}

/// What the solver reports while it works.
#[derive(Clone, Debug)]
pub enum Event {
    Started { op: OpId, name: String },
    Cached { op: OpId, name: String },
    Done { op: OpId, elapsed: Duration },
    Log { op: OpId, line: String },
}

/// A failure, with the op it happened in.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SolveError {
    /// The op's display name (`[stage-0 2/3] COPY a b`).
    pub op_name: String,
    pub location: Option<Location>,
    pub message: String,
}

/// What a solve needs from its caller.
pub struct SolveRequest<'a> {
    pub graph: &'a Graph,
    pub target: OpId,
    /// Directories behind `Source::Local` names (`context` is the build context).
    pub locals: &'a HashMap<String, PathBuf>,
    /// Compute every op even when its result is cached.
    pub no_cache: bool,
    /// Set (by a Ctrl-C handler) to stop the build: the running step is killed, nothing more starts.
    pub cancel: &'a AtomicBool,
}

/// The solver's result: the target's layers, bottom first.
#[derive(Debug)]
pub struct Solved {
    pub layers: Vec<Layer>,
    /// Ops run and ops found in the cache.
    pub ran: usize,
    pub cached: usize,
}

/// Solves graphs against a snapshot store, pulling base images through a registry client.
pub struct Solver {
    snapshots: SnapshotStore,
    content: ContentStore,
    registry: Arc<kiln_registry::Client>,
    executor: Box<dyn Executor>,
}

impl Solver {
    pub fn new(
        snapshots: SnapshotStore,
        content: ContentStore,
        registry: Arc<kiln_registry::Client>,
        executor: Box<dyn Executor>,
    ) -> Solver {
        Solver {
            snapshots,
            content,
            registry,
            executor,
        }
    }

    /// Computes the target of `req`, reporting progress to `events`.
    pub fn solve(
        &self,
        req: &SolveRequest<'_>,
        events: &dyn Fn(Event),
    ) -> Result<Solved, SolveError> {
        let needed = needed_ops(req.graph, req.target);
        let mut keys: HashMap<OpId, CacheKey> = HashMap::new();
        let mut outputs: HashMap<OpId, Output> = HashMap::new();
        let mut solved = Solved {
            layers: Vec::new(),
            ran: 0,
            cached: 0,
        };
        for id in needed {
            let node = &req.graph.nodes[id];
            if req.cancel.load(Ordering::SeqCst) {
                return Err(SolveError {
                    op_name: node.meta.name.clone(),
                    location: None,
                    message: "the build was cancelled".into(),
                });
            }
            let fail = |message: String| SolveError {
                op_name: node.meta.name.clone(),
                location: node.meta.location.clone(),
                message,
            };
            let (key, output) = match &node.op {
                Op::Source(Source::Scratch) => (
                    KeyBuilder::new("scratch").finish(),
                    Output::Layers(Vec::new()),
                ),
                Op::Source(Source::Local {
                    name,
                    include,
                    exclude,
                }) => {
                    let root = req.locals.get(name).ok_or_else(|| {
                        fail(format!(
                            "no local directory named {name:?} was given to the build"
                        ))
                    })?;
                    if !include.is_empty() {
                        return Err(fail(
                            "include patterns of local sources are not supported yet".into(),
                        ));
                    }
                    let ignore = if exclude.is_empty() {
                        None
                    } else {
                        Some(Arc::new(
                            PatternMatcher::new(exclude)
                                .map_err(|e| fail(format!("invalid .dockerignore: {e}")))?,
                        ))
                    };
                    events(Event::Started {
                        op: id,
                        name: node.meta.name.clone(),
                    });
                    let start = Instant::now();
                    let digest = tree_digest(root, ignore.as_deref())
                        .map_err(|e| fail(format!("reading {}: {e}", root.display())))?;
                    events(Event::Log {
                        op: id,
                        line: format!(
                            "context: {} entries, {}",
                            digest.entries,
                            human_bytes(digest.bytes)
                        ),
                    });
                    events(Event::Done {
                        op: id,
                        elapsed: start.elapsed(),
                    });
                    let key = KeyBuilder::new("local").str(name).key(&digest.key).finish();
                    (
                        key,
                        Output::Local {
                            root: root.clone(),
                            ignore,
                        },
                    )
                }
                Op::Source(Source::Image {
                    reference,
                    digest,
                    platform,
                }) => {
                    let name = node.meta.name.clone();
                    events(Event::Started { op: id, name });
                    let start = Instant::now();
                    let layers = self
                        .pull(reference, digest.as_ref(), platform, &|line| {
                            events(Event::Log { op: id, line })
                        })
                        .map_err(fail)?;
                    events(Event::Done {
                        op: id,
                        elapsed: start.elapsed(),
                    });
                    let mut key = KeyBuilder::new("image");
                    for l in &layers {
                        key.str(&l.id.0);
                    }
                    (key.finish(), Output::Layers(layers))
                }
                Op::Source(Source::Http {
                    url,
                    checksum,
                    filename,
                    mode,
                }) => {
                    // As BuildKit: fetched on every build, keyed by URL and content digest.
                    events(Event::Started {
                        op: id,
                        name: node.meta.name.clone(),
                    });
                    let start = Instant::now();
                    let prepared = self.snapshots.prepare().map_err(|e| fail(e.to_string()))?;
                    let fetched = match source_http::fetch(
                        url,
                        &prepared.diff_dir(),
                        filename,
                        *mode,
                        checksum.as_ref(),
                        HTTP_TIMEOUT,
                    ) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = self.snapshots.discard(prepared);
                            return Err(fail(e));
                        }
                    };
                    let key = KeyBuilder::new("http")
                        .str(url)
                        .str(&fetched.digest.to_string())
                        .str(filename)
                        .str(&format!("{mode:o}"))
                        .finish();
                    let sid = SnapshotId(key.hex());
                    // An existing snapshot of the same key is kept (commit drops ours).
                    self.snapshots
                        .commit(prepared, &sid)
                        .map_err(|e| fail(e.to_string()))?;
                    events(Event::Log {
                        op: id,
                        line: format!("{} {}", fetched.digest, human_bytes(fetched.size)),
                    });
                    events(Event::Done {
                        op: id,
                        elapsed: start.elapsed(),
                    });
                    let layer = Layer {
                        diff: self.snapshots.diff_dir(&sid),
                        id: sid,
                        blob: None,
                    };
                    (key, Output::Layers(vec![layer]))
                }
                Op::Source(Source::OciLayout {
                    path,
                    digest,
                    platform: _,
                }) => {
                    let name = node.meta.name.clone();
                    events(Event::Started { op: id, name });
                    let start = Instant::now();
                    let layers = self
                        .load_oci_layout(std::path::Path::new(path), digest, &|line| {
                            events(Event::Log { op: id, line })
                        })
                        .map_err(fail)?;
                    events(Event::Done {
                        op: id,
                        elapsed: start.elapsed(),
                    });
                    let mut key = KeyBuilder::new("image");
                    for l in &layers {
                        key.str(&l.id.0);
                    }
                    (key.finish(), Output::Layers(layers))
                }
                Op::Exec(e) => {
                    if let Some(kind) = e.mounts.iter().find_map(|m| match m.kind {
                        MountKind::Cache { .. } => Some("cache"),
                        MountKind::Secret { .. } => Some("secret"),
                        MountKind::Ssh { .. } => Some("ssh"),
                        MountKind::Bind { .. } | MountKind::Tmpfs { .. } => None,
                    }) {
                        return Err(fail(format!(
                            "RUN --mount=type={kind} is not supported yet"
                        )));
                    }
                    let key = exec_key(e, &keys);
                    let log = |line: String| events(Event::Log { op: id, line });
                    let output = self
                        .layer_step(
                            id,
                            node,
                            key,
                            &outputs[&e.rootfs],
                            req,
                            events,
                            &mut solved,
                            |base, sid| self.run_exec(base, e, sid, &outputs, req.cancel, &log),
                        )
                        .map_err(fail)?;
                    (key, output)
                }
                Op::File(f) => {
                    let key = file_key(f.base, &f.actions, &keys);
                    let output = self
                        .layer_step(
                            id,
                            node,
                            key,
                            &outputs[&f.base],
                            req,
                            events,
                            &mut solved,
                            |base, sid| self.run_file_op(base, &f.actions, sid, &outputs),
                        )
                        .map_err(fail)?;
                    (key, output)
                }
                Op::Merge(inputs) => {
                    let mut key = KeyBuilder::new("merge");
                    let mut layers = Vec::new();
                    for input in inputs {
                        key.key(&keys[input]);
                        match &outputs[input] {
                            Output::Layers(l) => layers.extend(l.iter().cloned()),
                            Output::Local { .. } => {
                                return Err(fail("only root filesystems can be merged".into()))
                            }
                        }
                    }
                    (key.finish(), Output::Layers(layers))
                }
            };
            keys.insert(id, key);
            outputs.insert(id, output);
        }
        match outputs.remove(&req.target) {
            Some(Output::Layers(layers)) => {
                solved.layers = layers;
                Ok(solved)
            }
            _ => {
                let node = &req.graph.nodes[req.target];
                Err(SolveError {
                    op_name: node.meta.name.clone(),
                    location: node.meta.location.clone(),
                    message: "the target is not a root filesystem".into(),
                })
            }
        }
    }

    /// Pulls an image's layers into the content store and unpacks each into a snapshot of its
    /// own (named by its diff_id, so images that share a layer share its snapshot).
    fn pull(
        &self,
        reference: &str,
        digest: Option<&Digest>,
        platform: &Platform,
        log: &dyn Fn(String),
    ) -> Result<Vec<Layer>, String> {
        let mut r: Reference = reference.parse().map_err(|e| format!("{e}"))?;
        if let Some(d) = digest {
            r.digest = Some(d.clone());
        }
        let resolved = self
            .registry
            .resolve(&r, platform)
            .map_err(|e| e.to_string())?;
        let diff_ids = &resolved.config.rootfs.diff_ids;
        if diff_ids.len() != resolved.manifest.layers.len() {
            return Err(format!(
                "{r}: the image is inconsistent: {} layers but {} diff_ids in its config",
                resolved.manifest.layers.len(),
                diff_ids.len()
            ));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in resolved.manifest.layers.iter().zip(diff_ids) {
            let sid = SnapshotId(format!("layer-{}", diff_id.hex()));
            if !self.snapshots.exists(&sid) {
                if !self.content.contains(&desc.digest) {
                    log(format!(
                        "pulling {} {}",
                        desc.digest,
                        human_bytes(desc.size)
                    ));
                    self.registry
                        .fetch_blob(&r, desc, &self.content)
                        .map_err(|e| e.to_string())?;
                }
                kiln_cache::unpack_to_snapshot(&self.content, &self.snapshots, desc, diff_id, &sid)
                    .map_err(|e| format!("{r}: layer {}: {e}", desc.digest))?;
            } else if !self.content.contains(&desc.digest) {
                // The snapshot outlived its blob: fetch it again so exports can reuse it.
                self.registry
                    .fetch_blob(&r, desc, &self.content)
                    .map_err(|e| e.to_string())?;
            }
            layers.push(Layer {
                diff: self.snapshots.diff_dir(&sid),
                id: sid,
                blob: Some(LayerBlob {
                    descriptor: desc.clone(),
                    diff_id: diff_id.clone(),
                }),
            });
        }
        Ok(layers)
    }

    /// Brings the layers of the manifest `digest` of the OCI layout at `root` into the content
    /// store (verified) and unpacks each into a snapshot named by its diff_id, as `pull` does.
    fn load_oci_layout(
        &self,
        root: &std::path::Path,
        digest: &Digest,
        log: &dyn Fn(String),
    ) -> Result<Vec<Layer>, String> {
        let manifest: kiln_oci::Manifest =
            serde_json::from_slice(&source_oci_layout::read_blob(root, digest)?)
                .map_err(|e| format!("{}: invalid manifest {digest}: {e}", root.display()))?;
        let config: kiln_oci::ImageConfig = serde_json::from_slice(&source_oci_layout::read_blob(
            root,
            &manifest.config.digest,
        )?)
        .map_err(|e| {
            format!(
                "{}: invalid image config {}: {e}",
                root.display(),
                manifest.config.digest
            )
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(format!(
                "{}: the image is inconsistent: {} layers but {} diff_ids in its config",
                root.display(),
                manifest.layers.len(),
                diff_ids.len()
            ));
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let sid = SnapshotId(format!("layer-{}", diff_id.hex()));
            if !self.content.contains(&desc.digest) {
                log(format!(
                    "loading {} {}",
                    desc.digest,
                    human_bytes(desc.size)
                ));
                source_oci_layout::import_blob(root, desc, &self.content)?;
            }
            kiln_cache::unpack_to_snapshot(&self.content, &self.snapshots, desc, diff_id, &sid)
                .map_err(|e| format!("{}: layer {}: {e}", root.display(), desc.digest))?;
            layers.push(Layer {
                diff: self.snapshots.diff_dir(&sid),
                id: sid,
                blob: Some(LayerBlob {
                    descriptor: desc.clone(),
                    diff_id: diff_id.clone(),
                }),
            });
        }
        Ok(layers)
    }

    /// A step that adds one layer on top of `base`: reused from the snapshot store when its key
    /// is there (unless `--no-cache`), computed by `run` otherwise.
    #[allow(clippy::too_many_arguments)]
    fn layer_step(
        &self,
        id: OpId,
        node: &crate::op::OpNode,
        key: CacheKey,
        base: &Output,
        req: &SolveRequest<'_>,
        events: &dyn Fn(Event),
        solved: &mut Solved,
        run: impl FnOnce(&[Layer], &SnapshotId) -> Result<(), String>,
    ) -> Result<Output, String> {
        let Output::Layers(base) = base else {
            return Err("this step needs a root filesystem, not a local directory".into());
        };
        let sid = SnapshotId(key.hex());
        let name = node.meta.name.clone();
        if !req.no_cache && self.snapshots.exists(&sid) {
            events(Event::Cached { op: id, name });
            solved.cached += 1;
        } else {
            events(Event::Started { op: id, name });
            let start = Instant::now();
            run(base, &sid)?;
            events(Event::Done {
                op: id,
                elapsed: start.elapsed(),
            });
            solved.ran += 1;
        }
        let mut layers = base.clone();
        layers.push(Layer {
            diff: self.snapshots.diff_dir(&sid),
            id: sid,
            blob: None,
        });
        Ok(Output::Layers(layers))
    }

    /// Runs a process on top of `base`; what it leaves becomes the snapshot `sid`.
    fn run_exec(
        &self,
        base: &[Layer],
        e: &ExecOp,
        sid: &SnapshotId,
        outputs: &HashMap<OpId, Output>,
        cancel: &AtomicBool,
        log: &dyn Fn(String),
    ) -> Result<(), String> {
        let prepared = self.snapshots.prepare().map_err(|e| e.to_string())?;
        let mut step_mounts = StepMounts::default();
        let result = (|| {
            let lower: Vec<PathBuf> = base.iter().map(|l| l.diff.clone()).collect();
            let rootfs = self
                .snapshots
                .mount_rw(&lower, &prepared)
                .map_err(|e| e.to_string())?;
            let spec = ExecSpec {
                rootfs: rootfs.path().to_path_buf(),
                args: e.args.clone(),
                env: e.env.clone(),
                cwd: e.cwd.clone(),
                user: e.user.clone(),
                network: e.network,
                mounts: self.prepare_mounts(e, outputs, &mut step_mounts)?,
                ..Default::default()
            };
            let mut lines = LineSplitter::default();
            let code = self
                .executor
                .run(
                    &spec,
                    &mut |stream, chunk| lines.push(stream, chunk, log),
                    cancel,
                )
                .map_err(|err| match err {
                    ExecError::Cancelled => "the build was cancelled".to_string(),
                    other => other.to_string(),
                })?;
            lines.flush(log);
            if code != 0 {
                return Err(format!(
                    "process \"{}\" did not complete successfully: exit code: {code}",
                    e.args.join(" ")
                ));
            }
            Ok(())
        })();
        step_mounts.release(&self.snapshots);
        match result {
            Ok(()) => self
                .snapshots
                .commit(prepared, sid)
                .map_err(|e| e.to_string()),
            Err(e) => {
                let _ = self.snapshots.discard(prepared);
                Err(e)
            }
        }
    }

    /// The exec op's bind and tmpfs mounts as the executor takes them, with what keeps their
    /// sources alive (read-only views, throwaway layers) added to `keep`, as BuildKit's exec
    /// op prepares its mounts: a bind of a stage or image is a read-only view of its layers, or
    /// with `rw` a writable layer on top of them that is thrown away after the step; a bind of
    /// a local directory (the context) is that directory as `.dockerignore` filters it.
    fn prepare_mounts(
        &self,
        e: &ExecOp,
        outputs: &HashMap<OpId, Output>,
        keep: &mut StepMounts,
    ) -> Result<Vec<ExecMount>, String> {
        let mut mounts = Vec::new();
        for m in &e.mounts {
            match &m.kind {
                MountKind::Tmpfs { size } => mounts.push(ExecMount {
                    source: PathBuf::new(),
                    target: m.target.clone(),
                    readonly: false,
                    kind: ExecMountKind::Tmpfs,
                    size: *size,
                }),
                MountKind::Bind {
                    from,
                    source,
                    readwrite,
                } => {
                    let path = self.bind_source(&outputs[from], source, *readwrite, keep)?;
                    mounts.push(ExecMount {
                        source: path,
                        target: m.target.clone(),
                        readonly: !readwrite,
                        kind: ExecMountKind::Bind,
                        size: None,
                    });
                }
                MountKind::Cache { .. } | MountKind::Secret { .. } | MountKind::Ssh { .. } => {
                    return Err("RUN --mount of this type is not supported yet".into())
                }
            }
        }
        Ok(mounts)
    }

    /// The host path to bind for `source` of `output`.
    fn bind_source(
        &self,
        output: &Output,
        source: &str,
        readwrite: bool,
        keep: &mut StepMounts,
    ) -> Result<PathBuf, String> {
        let not_found = |what: &str, e: std::io::Error| {
            format!("RUN --mount: source {source:?} in {what}: {e}")
        };
        let root = match output {
            Output::Local { root, ignore } if ignore.is_none() && !readwrite => {
                // Nothing to hide and nothing to protect: the directory itself.
                return resolve_in_root(root, source)
                    .map_err(|e| not_found("the build context", e));
            }
            Output::Local { root, ignore } => {
                // A copy: what `.dockerignore` hides is left out, and writes go nowhere.
                let prepared = self.snapshots.prepare().map_err(|e| e.to_string())?;
                let dir = prepared.diff_dir();
                keep.scratch.push((None, prepared));
                let copy = FileAction::Copy(CopyAction {
                    source: 0,
                    src: vec![source.to_string()],
                    dest: "/mount".into(),
                    owner: None,
                    mode: None,
                    extract_archives: false,
                    exclude: Vec::new(),
                    parents: false,
                });
                let sources =
                    |_: OpId| SourceFs::local(root.clone(), "the build context", ignore.clone());
                fileop::apply(&copy, &dir, &sources, &FileOpOptions::default())
                    .map_err(|e| format!("RUN --mount: {e}"))?;
                return Ok(dir.join("mount"));
            }
            Output::Layers(layers) => {
                let dirs: Vec<PathBuf> = layers.iter().map(|l| l.diff.clone()).collect();
                if readwrite {
                    let prepared = self.snapshots.prepare().map_err(|e| e.to_string())?;
                    match self.snapshots.mount_rw(&dirs, &prepared) {
                        Ok(mounted) => {
                            let path = mounted.path().to_path_buf();
                            keep.scratch.push((Some(mounted), prepared));
                            path
                        }
                        Err(e) => {
                            let _ = self.snapshots.discard(prepared);
                            return Err(e.to_string());
                        }
                    }
                } else {
                    let view = self.snapshots.mount_ro(&dirs).map_err(|e| e.to_string())?;
                    let path = view.path().to_path_buf();
                    keep.views.push(view);
                    path
                }
            }
        };
        resolve_in_root(&root, source).map_err(|e| not_found("the mounted filesystem", e))
    }

    /// Applies `actions` on top of `base` into a new snapshot committed as `sid`.
    fn run_file_op(
        &self,
        base: &[Layer],
        actions: &[FileAction],
        sid: &SnapshotId,
        outputs: &HashMap<OpId, Output>,
    ) -> Result<(), String> {
        let prepared = self.snapshots.prepare().map_err(|e| e.to_string())?;
        let result = (|| {
            let lower: Vec<PathBuf> = base.iter().map(|l| l.diff.clone()).collect();
            let dest = self
                .snapshots
                .mount_rw(&lower, &prepared)
                .map_err(|e| e.to_string())?;
            let mut views: HashMap<OpId, Mounted> = HashMap::new();
            for action in actions {
                if let FileAction::Copy(c) = action {
                    if let (Output::Layers(layers), false) =
                        (&outputs[&c.source], views.contains_key(&c.source))
                    {
                        let dirs: Vec<PathBuf> = layers.iter().map(|l| l.diff.clone()).collect();
                        views.insert(
                            c.source,
                            self.snapshots.mount_ro(&dirs).map_err(|e| e.to_string())?,
                        );
                    }
                }
            }
            let sources = |op: OpId| -> SourceFs {
                match (&outputs[&op], views.get(&op)) {
                    (Output::Local { root, ignore }, _) => SourceFs::local(
                        root.clone(),
                        "the build context".to_string(),
                        ignore.clone(),
                    ),
                    (_, Some(view)) => SourceFs::snapshot(
                        view.path().to_path_buf(),
                        "the source stage".to_string(),
                    ),
                    (Output::Layers(_), None) => {
                        unreachable!("every layered copy source is mounted above")
                    }
                }
            };
            for action in actions {
                fileop::apply(action, dest.path(), &sources, &FileOpOptions::default())
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })();
        match result {
            Ok(()) => self
                .snapshots
                .commit(prepared, sid)
                .map_err(|e| e.to_string()),
            Err(e) => {
                let _ = self.snapshots.discard(prepared);
                Err(e)
            }
        }
    }
}

/// What keeps the sources of an exec op's mounts alive until the process is gone.
#[derive(Default)]
struct StepMounts {
    /// Read-only views of layers.
    views: Vec<Mounted>,
    /// Throwaway writable layers (mounted over their lower layers) and copies.
    scratch: Vec<(Option<Mounted>, kiln_cache::Prepared)>,
}

impl StepMounts {
    /// Unmounts the views and throws the writable layers and copies away.
    fn release(self, snapshots: &SnapshotStore) {
        drop(self.views);
        for (mounted, prepared) in self.scratch {
            drop(mounted);
            let _ = snapshots.discard(prepared);
        }
    }
}

/// The ops `target` depends on, in graph (dependency) order.
fn needed_ops(graph: &Graph, target: OpId) -> Vec<OpId> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![target];
    while let Some(id) = todo.pop() {
        if seen.insert(id) {
            todo.extend(graph.inputs(id));
        }
    }
    seen.into_iter().collect()
}

/// An exec op's key: its rootfs's key and everything else it says (command, env, user, cwd,
/// network, mounts), with the ops its mounts read named by their keys.
fn exec_key(e: &ExecOp, keys: &HashMap<OpId, CacheKey>) -> CacheKey {
    let mut b = KeyBuilder::new("exec");
    b.key(&keys[&e.rootfs]);
    let mut e = e.clone();
    e.rootfs = 0;
    for m in &mut e.mounts {
        match &mut m.kind {
            crate::op::MountKind::Bind { from, .. } => {
                b.key(&keys[from]);
                *from = 0;
            }
            crate::op::MountKind::Cache {
                from: Some(from), ..
            } => {
                b.key(&keys[from]);
                *from = 0;
            }
            _ => {}
        }
    }
    b.str(&serde_json::to_string(&e).expect("exec ops serialise"));
    b.finish()
}

/// Cuts a step's output into lines for the progress display, per stream.
#[derive(Default)]
struct LineSplitter {
    pending: [Vec<u8>; 2],
}

impl LineSplitter {
    fn push(&mut self, stream: Stream, chunk: &[u8], log: &dyn Fn(String)) {
        let buf = &mut self.pending[matches!(stream, Stream::Stderr) as usize];
        buf.extend_from_slice(chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            log(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
    }

    fn flush(&mut self, log: &dyn Fn(String)) {
        for buf in &mut self.pending {
            if !buf.is_empty() {
                log(String::from_utf8_lossy(buf).into_owned());
                buf.clear();
            }
        }
    }
}

/// A file op's key: its base's key and its actions, with each copy source named by its key.
fn file_key(base: OpId, actions: &[FileAction], keys: &HashMap<OpId, CacheKey>) -> CacheKey {
    let mut b = KeyBuilder::new("file");
    b.key(&keys[&base]);
    for action in actions {
        let mut action = action.clone();
        if let FileAction::Copy(c) = &mut action {
            b.key(&keys[&c.source]);
            c.source = 0;
        }
        b.str(&serde_json::to_string(&action).expect("actions serialise"));
    }
    b.finish()
}

/// `1.2kB`, `3.4MB`, as BuildKit prints sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.2}{}", UNITS[u])
    }
}
