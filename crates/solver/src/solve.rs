//! Solving a graph: every op the target needs gets a cache key from its definition and its
//! inputs' keys; an op whose result is in the snapshot store is reused, any other is computed
//! and committed. The [`scheduler`](crate::scheduler) runs independent ops at the same time and
//! computes ops of equal keys once; this module says what each kind of op does.

use crate::cachekey::{tree_digest_cached, CacheKey, KeyBuilder};
use crate::cachemount::{CacheMounts, CacheName, Lease};
use crate::contenthash::{copy_selection, SelectedEntry};
use crate::executor::{
    resolve_in_root, ExecError, ExecMount, ExecMountKind, ExecSpec, Executor, SecretBytes, Stream,
};
use crate::explain::{
    self, action_definition, ActionInputs, CopySource, ExecInputs, FileInputs, ParentInputs,
    StepInputs, StepRecord,
};
use crate::fileop::{self, FileOpOptions, SourceFs};
use crate::op::{
    CacheSharing, CopyAction, ExecOp, FileAction, Graph, Location, MountKind, Op, OpId, OpNode,
    Source,
};
use crate::scheduler::{self, Failure, Failures, Inputs, Job, Plan, StepContext};
use crate::{source_http, source_oci_layout};
use kiln_cache::StatCache;
use kiln_cache::{ContentStore, Mounted, RecordStore, SnapshotId, SnapshotStore};
use kiln_oci::{Descriptor, Digest, Platform};
use kiln_patterns::PatternMatcher;
use kiln_registry::Reference;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
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
        /// Content hashes of the directory's files by stat data, shared by the steps that
        /// read it so an unchanged file is hashed once per build and not at all next time.
        stat: Arc<StatCache>,
    },
}

/// What the solver reports while it works. Ops run in parallel, so events of different ops
/// interleave; each names its op.
#[derive(Clone, Debug)]
pub enum Event {
    Started {
        op: OpId,
        name: String,
        /// For a step that could have come from the cache: why it didn't (`src/a.txt
        /// changed`, `build arg V changed (1 → 2)`, `parent step re-ran`, `first build`, …).
        cache_miss: Option<String>,
    },
    /// The op's result was reused: from the cache, or from an op of the same key in this build.
    Cached {
        op: OpId,
        name: String,
    },
    Done {
        op: OpId,
        elapsed: Duration,
    },
    Log {
        op: OpId,
        line: String,
    },
}

/// Why a solve failed: every step that failed, in graph order.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.summary())]
pub struct SolveError {
    /// Steps that failed on their own; empty when the build was cancelled from outside
    /// (Ctrl-C).
    pub failures: Vec<StepError>,
    /// Display names of the steps that were running and were stopped, because another step
    /// failed or the build was cancelled.
    pub cancelled: Vec<String>,
}

impl SolveError {
    fn summary(&self) -> String {
        match &self.failures[..] {
            [] => "the build was cancelled".to_string(),
            [one] => one.message.clone(),
            [first, rest @ ..] => format!(
                "{} (and {} more failed step{})",
                first.message,
                rest.len(),
                if rest.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
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
    /// Stages (lowercased names or `stage-N` labels, as [`OpMeta::stage`](crate::OpMeta))
    /// whose steps are computed even when cached (`--no-cache-filter`).
    pub no_cache_filter: &'a [String],
    /// Set (by a Ctrl-C handler) to stop the build: running steps are killed, nothing more
    /// starts.
    pub cancel: &'a AtomicBool,
    /// How many ops may run at once (0 counts as 1); [`default_jobs`] is one per CPU.
    pub jobs: usize,
    /// Secret values by id, for `RUN --mount=type=secret`. They reach the step's process only:
    /// never a key, a record, an event or a layer.
    pub secrets: &'a Secrets,
    /// Host sockets (SSH agents) by id, forwarded into steps by `RUN --mount=type=ssh`.
    pub ssh: &'a HashMap<String, PathBuf>,
}

/// Build secrets by id.
pub type Secrets = HashMap<String, SecretBytes>;

/// What a step's mounts read from outside the graph.
struct MountInputs {
    secrets: Secrets,
    ssh: HashMap<String, PathBuf>,
}

/// One job per CPU the process may use.
pub fn default_jobs() -> usize {
    // Steps mostly wait (on processes, the network, the disk), so twice the cores, at least 4.
    std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).max(4))
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
    worker: Arc<Worker>,
}

/// What computes ops; shared by the threads that run them.
struct Worker {
    snapshots: SnapshotStore,
    /// What each step's last key was made of, to explain cache misses.
    records: RecordStore,
    content: ContentStore,
    registry: Arc<kiln_registry::Client>,
    executor: Box<dyn Executor>,
    /// `RUN --mount=type=cache` directories, in the state directory.
    cache_mounts: CacheMounts,
}

impl Solver {
    pub fn new(
        snapshots: SnapshotStore,
        content: ContentStore,
        registry: Arc<kiln_registry::Client>,
        executor: Box<dyn Executor>,
    ) -> Solver {
        Solver {
            worker: Arc::new(Worker {
                records: RecordStore::open(snapshots.root()),
                cache_mounts: CacheMounts::new(snapshots.root()),
                snapshots,
                content,
                registry,
                executor,
            }),
        }
    }

    /// Computes the target of `req`, reporting progress to `events` (called on this thread).
    /// On failure, returns once every running step has stopped and cleaned up.
    pub fn solve(
        &self,
        req: &SolveRequest<'_>,
        events: &(dyn Fn(Event) + Send + Sync),
    ) -> Result<Solved, SolveError> {
        let plan = Plan {
            inputs: needed_ops(req.graph, req.target)
                .into_iter()
                .map(|id| (id, req.graph.inputs(id)))
                .collect(),
        };
        check_required_mounts(req, &plan)?;
        let job = Arc::new(GraphJob {
            worker: self.worker.clone(),
            graph: Arc::new(req.graph.clone()),
            locals: Arc::new(req.locals.clone()),
            no_cache: req.no_cache,
            no_cache_stages: req
                .no_cache_filter
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            identities: step_identities(req.graph, &plan, req.locals.get("context")),
            mount_inputs: Arc::new(MountInputs {
                secrets: req.secrets.clone(),
                ssh: req.ssh.clone(),
            }),
        });
        let mut done = scheduler::solve(job, &plan, req.jobs, req.cancel, events)
            .map_err(|failures| solve_error(req.graph, failures))?;
        let count = |outcome: Outcome| done.values().filter(|s| s.outcome == outcome).count();
        let (ran, cached) = (count(Outcome::Ran), count(Outcome::Cached));
        match done.remove(&req.target).map(|s| s.output) {
            Some(Output::Layers(layers)) => Ok(Solved {
                layers,
                ran,
                cached,
            }),
            _ => {
                let node = &req.graph.nodes[req.target];
                Err(SolveError {
                    failures: vec![StepError {
                        op_name: node.meta.name.clone(),
                        location: node.meta.location.clone(),
                        message: "the target is not a root filesystem".into(),
                    }],
                    cancelled: Vec::new(),
                })
            }
        }
    }
}

/// Fails, before anything runs, when a step the target needs requires a secret or an SSH
/// socket that the build wasn't given (BuildKit fails such a step when it starts).
fn check_required_mounts(req: &SolveRequest<'_>, plan: &Plan) -> Result<(), SolveError> {
    let mut failures = Vec::new();
    for &op in plan.inputs.keys() {
        let node = &req.graph.nodes[op];
        let Op::Exec(e) = &node.op else { continue };
        for m in &e.mounts {
            let message = match &m.kind {
                MountKind::Secret {
                    id, required: true, ..
                } if !req.secrets.contains_key(id) => {
                    format!("secret {id:?} is required by RUN --mount=type=secret but was not given to the build")
                }
                MountKind::Ssh {
                    id, required: true, ..
                } if !req.ssh.contains_key(id) => {
                    format!("SSH agent {id:?} is required by RUN --mount=type=ssh but was not given to the build")
                }
                _ => continue,
            };
            failures.push(StepError {
                op_name: node.meta.name.clone(),
                location: node.meta.location.clone(),
                message,
            });
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(SolveError {
            failures,
            cancelled: Vec::new(),
        })
    }
}

/// The scheduler's failures as the caller reads them.
fn solve_error(graph: &Graph, failures: Failures) -> SolveError {
    let mut error = SolveError {
        failures: Vec::new(),
        cancelled: Vec::new(),
    };
    for (op, failure) in failures {
        let meta = &graph.nodes[op].meta;
        match failure {
            Failure::Failed(message) => error.failures.push(StepError {
                op_name: meta.name.clone(),
                location: meta.location.clone(),
                message,
            }),
            Failure::Cancelled => error.cancelled.push(meta.name.clone()),
        }
    }
    error
}

/// A solved op, as its dependents read it.
#[derive(Clone, Debug)]
struct Step {
    key: CacheKey,
    output: Output,
    outcome: Outcome,
}

/// How a step got its result (sources are neither run nor cached steps in the summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ran,
    Cached,
    Source,
}

/// The ops of one solve, as the scheduler runs them.
struct GraphJob {
    worker: Arc<Worker>,
    graph: Arc<Graph>,
    locals: Arc<HashMap<String, PathBuf>>,
    no_cache: bool,
    /// `--no-cache-filter` stages, lowercased.
    no_cache_stages: HashSet<String>,
    /// The record identity of each step that makes a layer and has a step id.
    identities: HashMap<OpId, String>,
    mount_inputs: Arc<MountInputs>,
}

/// What names each layer-making step's record: the build context's directory and the step id
/// (made unique in graph order should a frontend give two ops the same one), so two projects
/// with a `Dockerfile` of the same name don't read each other's records.
fn step_identities(graph: &Graph, plan: &Plan, context: Option<&PathBuf>) -> HashMap<OpId, String> {
    let context = context
        .map(|c| {
            std::fs::canonicalize(c)
                .unwrap_or_else(|_| c.clone())
                .display()
                .to_string()
        })
        .unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut ids = HashMap::new();
    for &op in plan.inputs.keys() {
        let node = &graph.nodes[op];
        let (Op::Exec(_) | Op::File(_), Some(step)) = (&node.op, &node.meta.step_id) else {
            continue;
        };
        let n = seen.entry(step.as_str()).or_default();
        *n += 1;
        let id = match *n {
            1 => format!("{context}\n{step}"),
            n => format!("{context}\n{step}#{n}"),
        };
        ids.insert(op, id);
    }
    ids
}

impl Job for GraphJob {
    type Output = Step;

    /// The cache key where it follows from the inputs' keys; for sources, whose keys depend
    /// on what they read, a digest of their definition.
    fn identity(&self, op: OpId, done: &HashMap<OpId, Step>) -> CacheKey {
        let keys: HashMap<OpId, CacheKey> = self
            .graph
            .inputs(op)
            .into_iter()
            .map(|input| (input, done[&input].key))
            .collect();
        let identity = match &self.graph.nodes[op].op {
            Op::Source(Source::Scratch) => scratch_key(),
            Op::Source(source) => KeyBuilder::new("source")
                .str(&serde_json::to_string(source).expect("sources serialise"))
                .finish(),
            Op::Exec(e) => exec_key(e, &keys),
            Op::File(f) => file_key(f.base, &f.actions, &keys),
            Op::Merge(inputs) => merge_key(inputs, &keys),
        };
        if self.cache_disabled(&self.graph.nodes[op]).is_some() && !self.no_cache {
            // A step that must run doesn't share the result of one that may come from the
            // cache.
            return KeyBuilder::new("no-cache-filter").key(&identity).finish();
        }
        identity
    }

    fn run(&self, op: OpId, inputs: Inputs<Step>, ctx: &StepContext) -> Result<Step, Failure> {
        let mut keys = HashMap::new();
        let mut ran = HashSet::new();
        let outputs: HashMap<OpId, Output> = inputs
            .into_iter()
            .map(|(id, step)| {
                keys.insert(id, step.key);
                if step.outcome == Outcome::Ran {
                    ran.insert(id);
                }
                (id, step.output)
            })
            .collect();
        self.compute(op, &keys, &outputs, &ran, ctx)
    }

    fn reuse(&self, op: OpId, done: &Step, ctx: &StepContext) -> Step {
        let node = &self.graph.nodes[op];
        let outcome = match &node.op {
            Op::Exec(_) | Op::File(_) => Outcome::Cached,
            _ => done.outcome,
        };
        if !matches!(node.op, Op::Source(Source::Scratch) | Op::Merge(_)) {
            ctx.emit(Event::Cached {
                op,
                name: node.meta.name.clone(),
            });
        }
        Step {
            outcome,
            ..done.clone()
        }
    }
}

impl GraphJob {
    /// Computes one op from its inputs' keys and outputs.
    fn compute(
        &self,
        id: OpId,
        keys: &HashMap<OpId, CacheKey>,
        outputs: &HashMap<OpId, Output>,
        ran: &HashSet<OpId>,
        ctx: &StepContext,
    ) -> Result<Step, Failure> {
        let node = &self.graph.nodes[id];
        let worker = &self.worker;
        let source = |key: CacheKey, output: Output| Step {
            key,
            output,
            outcome: Outcome::Source,
        };
        let started = || {
            ctx.emit(Event::Started {
                op: id,
                name: node.meta.name.clone(),
                cache_miss: None,
            });
            Instant::now()
        };
        let done = |start: Instant| {
            ctx.emit(Event::Done {
                op: id,
                elapsed: start.elapsed(),
            })
        };
        let log = |line: String| ctx.emit(Event::Log { op: id, line });
        match &node.op {
            Op::Source(Source::Scratch) => Ok(source(scratch_key(), Output::Layers(Vec::new()))),
            Op::Source(Source::Local {
                name,
                include,
                exclude,
            }) => {
                let root = self.locals.get(name).ok_or_else(|| {
                    format!("no local directory named {name:?} was given to the build")
                })?;
                if !include.is_empty() {
                    return Err(Failure::Failed(
                        "include patterns of local sources are not supported yet".into(),
                    ));
                }
                let ignore = if exclude.is_empty() {
                    None
                } else {
                    Some(Arc::new(
                        PatternMatcher::new(exclude)
                            .map_err(|e| format!("invalid .dockerignore: {e}"))?,
                    ))
                };
                let start = started();
                let stat = Arc::new(StatCache::open(worker.snapshots.root(), root));
                let digest = tree_digest_cached(root, ignore.as_deref(), Some(&stat))
                    .map_err(|e| format!("reading {}: {e}", root.display()))?;
                let _ = stat.save();
                log(format!(
                    "context: {} entries, {}",
                    digest.entries,
                    human_bytes(digest.bytes)
                ));
                done(start);
                let key = KeyBuilder::new("local").str(name).key(&digest.key).finish();
                Ok(source(
                    key,
                    Output::Local {
                        root: root.clone(),
                        ignore,
                        stat,
                    },
                ))
            }
            Op::Source(Source::Image {
                reference,
                digest,
                platform,
            }) => {
                let start = started();
                let layers = worker.pull(reference, digest.as_ref(), platform, ctx, &log)?;
                done(start);
                Ok(source(image_key(&layers), Output::Layers(layers)))
            }
            Op::Source(Source::Http {
                url,
                checksum,
                filename,
                mode,
            }) => {
                // As BuildKit: fetched on every build, keyed by URL and content digest.
                let start = started();
                let prepared = worker.snapshots.prepare().map_err(|e| e.to_string())?;
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
                        let _ = worker.snapshots.discard(prepared);
                        return Err(Failure::Failed(e));
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
                worker
                    .snapshots
                    .commit(prepared, &sid)
                    .map_err(|e| e.to_string())?;
                log(format!("{} {}", fetched.digest, human_bytes(fetched.size)));
                done(start);
                let layer = Layer {
                    diff: worker.snapshots.diff_dir(&sid),
                    id: sid,
                    blob: None,
                };
                Ok(source(key, Output::Layers(vec![layer])))
            }
            Op::Source(Source::OciLayout {
                path,
                digest,
                platform: _,
            }) => {
                let start = started();
                let layers = worker.load_oci_layout(
                    std::path::Path::new(path),
                    digest,
                    ctx.cancel_flag(),
                    &log,
                )?;
                done(start);
                Ok(source(image_key(&layers), Output::Layers(layers)))
            }
            Op::Exec(e) => {
                let key = exec_key(e, keys);
                let record = || StepRecord {
                    key: key.hex(),
                    parent: self.parent_inputs(e.rootfs, keys),
                    inputs: StepInputs::Exec(ExecInputs::new(e, keys)),
                };
                let base = (&outputs[&e.rootfs], ran.contains(&e.rootfs));
                let cx = RunContext {
                    outputs,
                    keys,
                    inputs: &self.mount_inputs,
                    cancel: ctx.cancel_flag(),
                    log: &log,
                };
                self.layer_step(id, node, key, base, record, ctx, |base, sid, _| {
                    worker.run_exec(base, e, sid, &cx)
                })
            }
            Op::File(f) => {
                let (key, selections) = copy_aware_file_key(f.base, &f.actions, keys, outputs)?;
                let record = || StepRecord {
                    key: key.hex(),
                    parent: self.parent_inputs(f.base, keys),
                    inputs: StepInputs::File(FileInputs {
                        actions: f
                            .actions
                            .iter()
                            .zip(&selections)
                            .map(|(action, selected)| ActionInputs {
                                definition: action_definition(action),
                                source: match (action, selected) {
                                    (_, Some(entries)) => Some(CopySource::files(entries)),
                                    (FileAction::Copy(c), None) => Some(CopySource::Step {
                                        key: keys[&c.source].hex(),
                                        name: self.graph.nodes[c.source].meta.name.clone(),
                                    }),
                                    _ => None,
                                },
                            })
                            .collect(),
                    }),
                };
                let base = (&outputs[&f.base], ran.contains(&f.base));
                self.layer_step(id, node, key, base, record, ctx, |base, sid, previous| {
                    Ok(worker.run_file_op(base, &f.actions, sid, outputs, previous)?)
                })
            }
            Op::Merge(inputs) => {
                let mut layers = Vec::new();
                for input in inputs {
                    match &outputs[input] {
                        Output::Layers(l) => layers.extend(l.iter().cloned()),
                        Output::Local { .. } => {
                            return Err(Failure::Failed(
                                "only root filesystems can be merged".into(),
                            ))
                        }
                    }
                }
                Ok(source(merge_key(inputs, keys), Output::Layers(layers)))
            }
        }
    }

    /// Why `node` may not use the cache, if it may not (`--no-cache`, `--no-cache-filter`).
    fn cache_disabled(&self, node: &OpNode) -> Option<String> {
        if self.no_cache {
            return Some("cache disabled (--no-cache)".into());
        }
        let stage = node.meta.stage.as_ref()?;
        self.no_cache_stages
            .contains(stage)
            .then(|| format!("cache disabled for stage {stage} (--no-cache-filter)"))
    }

    /// What a step's record says of the filesystem it starts from.
    fn parent_inputs(&self, parent: OpId, keys: &HashMap<OpId, CacheKey>) -> ParentInputs {
        let image = match &self.graph.nodes[parent].op {
            Op::Source(Source::Image {
                reference, digest, ..
            }) => Some(format!(
                "{reference}@{}",
                digest.as_ref().map(|d| d.to_string()).unwrap_or_default()
            )),
            Op::Source(Source::OciLayout { path, digest, .. }) => Some(format!("{path}@{digest}")),
            _ => None,
        };
        ParentInputs {
            key: keys[&parent].hex(),
            image,
        }
    }

    /// A step that adds one layer on top of `base` (with whether that ran in this build):
    /// reused from the snapshot store when its key is there (unless `--no-cache` or
    /// `--no-cache-filter` says otherwise), computed by `run` otherwise. `record` gives the
    /// inputs behind the key: a step that runs says how they differ from its record's (the
    /// cache-miss reason) and leaves them as its new record; a cached step only rewrites its
    /// record when that was made for another key.
    #[allow(clippy::too_many_arguments)]
    fn layer_step(
        &self,
        id: OpId,
        node: &OpNode,
        key: CacheKey,
        (base, parent_ran): (&Output, bool),
        record: impl FnOnce() -> StepRecord,
        ctx: &StepContext,
        run: impl FnOnce(&[Layer], &SnapshotId, Option<PathBuf>) -> Result<(), Failure>,
    ) -> Result<Step, Failure> {
        let Output::Layers(base) = base else {
            return Err(Failure::Failed(
                "this step needs a root filesystem, not a local directory".into(),
            ));
        };
        let sid = SnapshotId(key.hex());
        let name = node.meta.name.clone();
        let records = &self.worker.records;
        let identity = self.identities.get(&id);
        let disabled = self.cache_disabled(node);
        let outcome = if disabled.is_none() && self.worker.snapshots.exists(&sid) {
            ctx.emit(Event::Cached { op: id, name });
            if let Some(identity) = identity {
                if !records.key_matches(identity, &key.hex()) {
                    let _ = records.store(identity, &record());
                }
            }
            Outcome::Cached
        } else {
            let new = identity.map(|identity| (identity, record()));
            let old = identity.and_then(|identity| records.load::<StepRecord>(identity));
            let cache_miss = match (&new, disabled) {
                (_, Some(disabled)) => Some(disabled),
                (Some((_, new)), None) => {
                    let cx = explain::Context {
                        build_args: &node.meta.build_args,
                        parent_ran,
                    };
                    Some(explain::explain(old.as_ref(), new, &cx))
                }
                (None, None) => None,
            };
            // The step's previous result, whose unchanged files a copy may share.
            let previous = old
                .map(|old| SnapshotId(old.key))
                .filter(|prev| *prev != sid && self.worker.snapshots.exists(prev))
                .map(|prev| self.worker.snapshots.diff_dir(&prev));
            ctx.emit(Event::Started {
                op: id,
                name,
                cache_miss,
            });
            let start = Instant::now();
            run(base, &sid, previous)?;
            if let Some((identity, new)) = &new {
                let _ = records.store(identity, new);
            }
            ctx.emit(Event::Done {
                op: id,
                elapsed: start.elapsed(),
            });
            Outcome::Ran
        };
        let mut layers = base.clone();
        layers.push(Layer {
            diff: self.worker.snapshots.diff_dir(&sid),
            id: sid,
            blob: None,
        });
        Ok(Step {
            key,
            output: Output::Layers(layers),
            outcome,
        })
    }
}

impl Worker {
    /// Pulls an image's layers into the content store and unpacks each into a snapshot of its
    /// own (named by its diff_id, so images that share a layer share its snapshot).
    fn pull(
        &self,
        reference: &str,
        digest: Option<&Digest>,
        platform: &Platform,
        ctx: &StepContext,
        log: &dyn Fn(String),
    ) -> Result<Vec<Layer>, Failure> {
        let mut r: Reference = reference.parse().map_err(|e| format!("{e}"))?;
        if let Some(d) = digest {
            r.digest = Some(d.clone());
        }
        // A manifest pinned by digest never changes: once its manifest and config are in the
        // content store, the registry isn't asked again.
        let (manifest, config) = match digest.and_then(|d| self.stored_manifest(d)) {
            Some(stored) => stored,
            None => {
                let resolved = self
                    .registry
                    .resolve(&r, platform)
                    .map_err(|e| e.to_string())?;
                if digest.is_some() {
                    resolved.keep(&self.content);
                }
                (resolved.manifest, resolved.config)
            }
        };
        let fetch = |desc: &Descriptor| {
            self.registry
                .fetch_blob(&r, desc, &self.content)
                .map_err(|e| e.to_string())
        };
        self.image_layers(
            &r.to_string(),
            &manifest,
            &config,
            ctx.cancel_flag(),
            &Fetch {
                verb: "pulling",
                fetch: &fetch,
                log,
            },
        )
    }

    /// Makes sure every layer of an image (its `manifest` and `config`, `what` naming it in
    /// messages) has its blob in the content store and its snapshot, named by its diff_id so
    /// that images sharing a layer share it; returns the image's layers, bottom first. Missing
    /// blobs come from `fetch`. Each layer is unpacked into a snapshot of its own, so layers are
    /// fetched and unpacked several at a time.
    fn image_layers(
        &self,
        what: &str,
        manifest: &kiln_oci::Manifest,
        config: &kiln_oci::ImageConfig,
        cancel: &AtomicBool,
        fetch: &Fetch<'_>,
    ) -> Result<Vec<Layer>, Failure> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Failure::Failed(format!(
                "{what}: the image is inconsistent: {} layers but {} diff_ids in its config",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        // What is missing, once per layer (an image may repeat one, empty layers say).
        let mut seen = HashSet::new();
        let work: Vec<(&Descriptor, &Digest)> = manifest
            .layers
            .iter()
            .zip(diff_ids)
            .filter(|(desc, diff_id)| {
                let missing = !self.snapshots.exists(&SnapshotId::layer(diff_id))
                    // A snapshot that outlived its blob: the blob comes again, for exports.
                    || !self.content.contains(&desc.digest);
                missing && seen.insert((desc.digest.clone(), (*diff_id).clone()))
            })
            .collect();
        for (desc, _) in &work {
            if !self.content.contains(&desc.digest) {
                (fetch.log)(format!(
                    "{} {} {}",
                    fetch.verb,
                    desc.digest,
                    human_bytes(desc.size)
                ));
            }
        }
        let one = |(desc, diff_id): (&Descriptor, &Digest)| -> Result<(), Failure> {
            if !self.content.contains(&desc.digest) {
                (fetch.fetch)(desc)?;
            }
            if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Failure::Cancelled);
            }
            let sid = SnapshotId::layer(diff_id);
            kiln_cache::unpack_to_snapshot(&self.content, &self.snapshots, desc, diff_id, &sid)
                .map_err(|e| Failure::Failed(format!("{what}: layer {}: {e}", desc.digest)))
        };
        let results = in_parallel(&work, LAYERS_AT_ONCE, cancel, |item| one(*item));
        // The first failure in layer order is the one reported (others were stopped by it).
        let mut cancelled = false;
        for result in results {
            match result {
                Err(Failure::Cancelled) => cancelled = true,
                other => other?,
            }
        }
        if cancelled {
            return Err(Failure::Cancelled);
        }
        Ok(manifest
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(desc, diff_id)| self.base_layer(SnapshotId::layer(diff_id), desc, diff_id))
            .collect())
    }

    /// A base image's layer: its snapshot `sid` and the blob it came from.
    fn base_layer(&self, sid: SnapshotId, desc: &kiln_oci::Descriptor, diff_id: &Digest) -> Layer {
        Layer {
            diff: self.snapshots.diff_dir(&sid),
            id: sid,
            blob: Some(LayerBlob {
                descriptor: desc.clone(),
                diff_id: diff_id.clone(),
            }),
        }
    }

    /// The image manifest `digest` and its config, if both are in the content store (the
    /// store verified their digests when they were written).
    fn stored_manifest(
        &self,
        digest: &Digest,
    ) -> Option<(kiln_oci::Manifest, kiln_oci::ImageConfig)> {
        let read = |d: &Digest| std::fs::read(self.content.blob_path(d)).ok();
        let manifest: kiln_oci::Manifest = serde_json::from_slice(&read(digest)?).ok()?;
        let config = serde_json::from_slice(&read(&manifest.config.digest)?).ok()?;
        Some((manifest, config))
    }

    /// Brings the layers of the manifest `digest` of the OCI layout at `root` into the content
    /// store (verified) and unpacks each into a snapshot named by its diff_id, as `pull` does.
    fn load_oci_layout(
        &self,
        root: &std::path::Path,
        digest: &Digest,
        cancel: &AtomicBool,
        log: &dyn Fn(String),
    ) -> Result<Vec<Layer>, Failure> {
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
        let fetch = |desc: &Descriptor| source_oci_layout::import_blob(root, desc, &self.content);
        self.image_layers(
            &root.display().to_string(),
            &manifest,
            &config,
            cancel,
            &Fetch {
                verb: "loading",
                fetch: &fetch,
                log,
            },
        )
    }

    /// Runs a process on top of `base`; what it leaves becomes the snapshot `sid`.
    fn run_exec(
        &self,
        base: &[Layer],
        e: &ExecOp,
        sid: &SnapshotId,
        cx: &RunContext<'_>,
    ) -> Result<(), Failure> {
        let (cancel, log) = (cx.cancel, cx.log);
        let prepared = self.snapshots.prepare().map_err(|e| e.to_string())?;
        let mut step_mounts = StepMounts::default();
        let result = (|| {
            let lower: Vec<PathBuf> = base.iter().map(|l| l.diff.clone()).collect();
            let rootfs = self
                .snapshots
                .mount_rw(&lower, &prepared)
                .map_err(|e| e.to_string())?;
            let mut spec = ExecSpec {
                rootfs: rootfs.path().to_path_buf(),
                args: e.args.clone(),
                env: e.env.clone(),
                cwd: e.cwd.clone(),
                user: e.user.clone(),
                network: e.network,
                ..Default::default()
            };
            self.prepare_mounts(e, cx, &mut spec, &mut step_mounts)?;
            let mut lines = LineSplitter::default();
            let code = self
                .executor
                .run(
                    &spec,
                    &mut |stream, chunk| lines.push(stream, chunk, log),
                    cancel,
                )
                .map_err(|err| match err {
                    ExecError::Cancelled => Failure::Cancelled,
                    other => Failure::Failed(other.to_string()),
                })?;
            lines.flush(log);
            if code != 0 {
                return Err(Failure::Failed(format!(
                    "process \"{}\" did not complete successfully: exit code: {code}",
                    e.args.join(" ")
                )));
            }
            Ok(())
        })();
        step_mounts.release(&self.snapshots);
        match result {
            Ok(()) => Ok(self
                .snapshots
                .commit(prepared, sid)
                .map_err(|e| e.to_string())?),
            Err(e) => {
                let _ = self.snapshots.discard(prepared);
                Err(e)
            }
        }
    }

    /// The exec op's mounts as the executor takes them, added to `spec`, with what keeps
    /// their sources alive (read-only views, throwaway layers, cache mount locks) added to
    /// `keep`, as BuildKit's exec op prepares its mounts: a bind of a stage or image is a
    /// read-only view of its layers, or with `rw` a writable layer on top of them that is
    /// thrown away after the step; a bind of a local directory (the context) is that directory
    /// as `.dockerignore` filters it; a cache mount is a directory of the state directory; a
    /// secret is a file the executor makes on a tmpfs (and/or an environment variable); an SSH
    /// mount is a socket the executor forwards to the agent. A secret or SSH agent the build
    /// wasn't given mounts nothing (required ones were checked before the solve started).
    fn prepare_mounts(
        &self,
        e: &ExecOp,
        cx: &RunContext<'_>,
        spec: &mut ExecSpec,
        keep: &mut StepMounts,
    ) -> Result<(), Failure> {
        let mut ssh_mounts = 0;
        for m in &e.mounts {
            let mount = |source: PathBuf, readonly: bool, kind: ExecMountKind| ExecMount {
                source,
                target: m.target.clone(),
                readonly,
                kind,
                size: None,
            };
            match &m.kind {
                MountKind::Tmpfs { size } => spec.mounts.push(ExecMount {
                    size: *size,
                    ..mount(PathBuf::new(), false, ExecMountKind::Tmpfs)
                }),
                MountKind::Bind {
                    from,
                    source,
                    readwrite,
                } => {
                    let path = self.bind_source(&cx.outputs[from], source, *readwrite, keep)?;
                    spec.mounts
                        .push(mount(path, !readwrite, ExecMountKind::Bind));
                }
                MountKind::Cache {
                    readonly, sharing, ..
                } => {
                    let lease = self.cache_mount(m, *sharing, cx)?;
                    spec.mounts
                        .push(mount(lease.data.clone(), *readonly, ExecMountKind::Bind));
                    keep.caches.push(lease);
                }
                MountKind::Secret {
                    id,
                    env,
                    mode,
                    uid,
                    gid,
                    required: _,
                } => {
                    let Some(value) = cx.inputs.secrets.get(id) else {
                        continue;
                    };
                    if let Some(name) = env {
                        spec.secret_env.push((name.clone(), value.clone()));
                    }
                    if !m.target.is_empty() {
                        let file = ExecMountKind::File {
                            contents: value.clone(),
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        };
                        spec.mounts.push(mount(PathBuf::new(), true, file));
                    }
                }
                MountKind::Ssh {
                    id,
                    mode,
                    uid,
                    gid,
                    required: _,
                } => {
                    // As BuildKit's LLB: /run/buildkit/ssh_agent.N by default, and the first
                    // one is SSH_AUTH_SOCK unless the step sets that itself.
                    let target = if m.target.is_empty() {
                        format!("/run/buildkit/ssh_agent.{ssh_mounts}")
                    } else {
                        m.target.clone()
                    };
                    let has_sock = spec.env.iter().any(|kv| kv.starts_with("SSH_AUTH_SOCK="));
                    if ssh_mounts == 0 && !has_sock {
                        spec.env.push(format!("SSH_AUTH_SOCK={target}"));
                    }
                    ssh_mounts += 1;
                    let Some(socket) = cx.inputs.ssh.get(id) else {
                        continue;
                    };
                    let kind = ExecMountKind::Socket {
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                    };
                    spec.mounts.push(ExecMount {
                        target,
                        ..mount(socket.clone(), false, kind)
                    });
                }
            }
        }
        Ok(())
    }

    /// The cache mount `m`'s directory, waiting for other users as its sharing mode says. A
    /// fresh one is seeded from its `from` filesystem's `source`, or else made empty with the
    /// mount's mode and owner.
    fn cache_mount(
        &self,
        m: &crate::op::Mount,
        sharing: CacheSharing,
        cx: &RunContext<'_>,
    ) -> Result<Lease, Failure> {
        let MountKind::Cache {
            id,
            from,
            source,
            mode,
            uid,
            gid,
            ..
        } = &m.kind
        else {
            unreachable!("called for cache mounts only")
        };
        let name = CacheName {
            id,
            seed: from.map(|f| (cx.keys[&f].hex(), source.as_str())),
            mode: *mode,
            uid: *uid,
            gid: *gid,
        };
        let init = |dir: &Path| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(dir).map_err(|e| e.to_string())?;
            match from {
                Some(from) => self.seed_cache(&cx.outputs[from], source, dir),
                None => std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))
                    .and_then(|()| {
                        std::fs::set_permissions(
                            dir,
                            std::fs::Permissions::from_mode(*mode & 0o7777),
                        )
                    })
                    .map_err(|e| e.to_string()),
            }
        };
        self.cache_mounts
            .acquire(&name, sharing, cx.cancel, cx.log, &init)
    }

    /// Copies `source` of `output` into the empty directory `dir`.
    fn seed_cache(&self, output: &Output, source: &str, dir: &Path) -> Result<(), String> {
        let copy = FileAction::Copy(CopyAction {
            source: 0,
            src: vec![source.to_string()],
            dest: "/".into(),
            owner: None,
            mode: None,
            extract_archives: false,
            exclude: Vec::new(),
            parents: false,
        });
        let (fs, _view) = match output {
            Output::Local { root, ignore, .. } => (
                SourceFs::local(root.clone(), "the build context", ignore.clone()),
                None,
            ),
            Output::Layers(layers) => {
                let dirs: Vec<PathBuf> = layers.iter().map(|l| l.diff.clone()).collect();
                let view = self.snapshots.mount_ro(&dirs).map_err(|e| e.to_string())?;
                let fs = SourceFs::snapshot(view.path().to_path_buf(), "the cache mount's source");
                (fs, Some(view))
            }
        };
        fileop::apply(&copy, dir, &|_| fs.clone(), &FileOpOptions::default())
            .map_err(|e| format!("RUN --mount=type=cache: {e}"))
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
            Output::Local { root, ignore, .. } if ignore.is_none() && !readwrite => {
                // Nothing to hide and nothing to protect: the directory itself.
                return resolve_in_root(root, source)
                    .map_err(|e| not_found("the build context", e));
            }
            Output::Local { root, ignore, .. } => {
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
        previous: Option<PathBuf>,
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
                    (Output::Local { root, ignore, .. }, _) => SourceFs::local(
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
            // Only a lone action may write below the mount (see `FileOpOptions::upper`).
            let upper = (actions.len() == 1)
                .then(|| dest.upper().map(Path::to_path_buf))
                .flatten();
            let opts = FileOpOptions {
                previous,
                upper,
                ..FileOpOptions::default()
            };
            for action in actions {
                fileop::apply(action, dest.path(), &sources, &opts).map_err(|e| e.to_string())?;
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

/// What a RUN step reads besides its rootfs, and what it reports to.
struct RunContext<'a> {
    outputs: &'a HashMap<OpId, Output>,
    keys: &'a HashMap<OpId, CacheKey>,
    inputs: &'a MountInputs,
    cancel: &'a AtomicBool,
    log: &'a dyn Fn(String),
}

/// What keeps the sources of an exec op's mounts alive until the process is gone.
#[derive(Default)]
struct StepMounts {
    /// Read-only views of layers.
    views: Vec<Mounted>,
    /// Throwaway writable layers (mounted over their lower layers) and copies.
    scratch: Vec<(Option<Mounted>, kiln_cache::Prepared)>,
    /// Cache mounts in use (their locks).
    caches: Vec<Lease>,
}

impl StepMounts {
    /// Unmounts the views, throws the writable layers and copies away and lets the cache
    /// mounts go.
    fn release(self, snapshots: &SnapshotStore) {
        drop(self.caches);
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
    let key_source = |_: usize, c: &CopyAction, b: &mut KeyBuilder| {
        b.key(&keys[&c.source]);
        Ok::<(), String>(())
    };
    file_key_with(base, actions, keys, key_source).expect("naming sources by key can't fail")
}

/// The walk both file-op keys share: the base's key, then each action, with each copy's
/// source named by `key_source(action index, copy, builder)` and its op id left out.
fn file_key_with(
    base: OpId,
    actions: &[FileAction],
    keys: &HashMap<OpId, CacheKey>,
    mut key_source: impl FnMut(usize, &CopyAction, &mut KeyBuilder) -> Result<(), String>,
) -> Result<CacheKey, String> {
    let mut b = KeyBuilder::new("file");
    b.key(&keys[&base]);
    for (index, action) in actions.iter().enumerate() {
        let mut action = action.clone();
        if let FileAction::Copy(c) = &mut action {
            key_source(index, c, &mut b)?;
            c.source = 0;
        }
        b.str(&serde_json::to_string(&action).expect("actions serialise"));
    }
    Ok(b.finish())
}

/// The entries a copy action selected from a local directory (`None` for other actions).
type Selected = Option<Vec<SelectedEntry>>;

/// A file op's cache key: as [`file_key`], except that a copy from a local directory counts
/// the digest of exactly the files it selects (content, type, mode, links, relative paths)
/// rather than the whole directory's key, so editing a file a COPY doesn't read (the
/// Dockerfile itself, say) keeps that COPY cached, on any machine and checkout path.
/// Also returns, per action, the entries a copy from a local directory selected (to explain
/// a cache miss).
fn copy_aware_file_key(
    base: OpId,
    actions: &[FileAction],
    keys: &HashMap<OpId, CacheKey>,
    outputs: &HashMap<OpId, Output>,
) -> Result<(CacheKey, Vec<Selected>), String> {
    let mut selections: Vec<Selected> = actions.iter().map(|_| None).collect();
    let key = file_key_with(base, actions, keys, |index, c, b| {
        match &outputs[&c.source] {
            Output::Local { root, ignore, stat } => {
                let src = SourceFs::local(root.clone(), "the build context", ignore.clone());
                let selection = copy_selection(c, &src, Some(stat)).map_err(|e| e.to_string())?;
                let _ = stat.save();
                b.str("selection").key(&selection.key);
                selections[index] = Some(selection.entries);
            }
            Output::Layers(_) => {
                b.key(&keys[&c.source]);
            }
        }
        Ok(())
    })?;
    Ok((key, selections))
}

/// A merge's key: its inputs' keys, in order.
fn merge_key(inputs: &[OpId], keys: &HashMap<OpId, CacheKey>) -> CacheKey {
    let mut key = KeyBuilder::new("merge");
    for input in inputs {
        key.key(&keys[input]);
    }
    key.finish()
}

fn scratch_key() -> CacheKey {
    KeyBuilder::new("scratch").finish()
}

/// An image's key: its layers, which are named by their diff_ids.
fn image_key(layers: &[Layer]) -> CacheKey {
    let mut key = KeyBuilder::new("image");
    for l in layers {
        key.str(&l.id.0);
    }
    key.finish()
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

/// How many layers of an image are fetched and unpacked at once (containerd fetches three).
const LAYERS_AT_ONCE: usize = 3;

/// Where an image's missing layer blobs come from: `fetch` brings one into the content store;
/// `log` says so beforehand, as "`verb` DIGEST SIZE".
struct Fetch<'a> {
    verb: &'a str,
    fetch: &'a (dyn Fn(&Descriptor) -> Result<(), String> + Sync),
    log: &'a dyn Fn(String),
}

/// Runs `f` on each of `items`, on up to `at_once` threads; the results come in the items'
/// order. Once an item fails, or `cancel` is set, items not yet started are not run (they give
/// `Failure::Cancelled`). A single item runs on the calling thread.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    at_once: usize,
    cancel: &AtomicBool,
    f: impl Fn(&T) -> Result<R, Failure> + Sync,
) -> Vec<Result<R, Failure>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<R, Failure>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..at_once.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                let result = if failed.load(Ordering::SeqCst) || cancel.load(Ordering::SeqCst) {
                    Err(Failure::Cancelled)
                } else {
                    f(item)
                };
                if result.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Err(Failure::Cancelled))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn in_parallel_keeps_the_order_and_stops_after_a_failure() {
        let items: Vec<usize> = (0..20).collect();
        let never = AtomicBool::new(false);
        let doubled = in_parallel(&items, 3, &never, |i| Ok(i * 2));
        let doubled: Vec<usize> = doubled.into_iter().map(|r| r.unwrap_or(0)).collect();
        assert_eq!(doubled, (0..20).map(|i| i * 2).collect::<Vec<_>>());

        // Item 2 fails: every item after it that had not started is not run.
        let ran = AtomicUsize::new(0);
        let results = in_parallel(&items, 2, &never, |&i| {
            ran.fetch_add(1, Ordering::SeqCst);
            if i == 2 {
                Err(Failure::Failed("two".into()))
            } else {
                Ok(i)
            }
        });
        assert!(matches!(&results[2], Err(Failure::Failed(m)) if m == "two"));
        assert!(ran.load(Ordering::SeqCst) < 20);
        assert!(matches!(results[19], Err(Failure::Cancelled)));

        // A cancelled build starts nothing.
        let cancelled = AtomicBool::new(true);
        let results = in_parallel(&items, 3, &cancelled, |&i| Ok(i));
        assert!(results.iter().all(|r| matches!(r, Err(Failure::Cancelled))));
    }
}
