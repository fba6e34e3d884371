//! Conversion (pass three): instructions → the build graph of the stages the target needs, and
//! the image config the target carries. Stages are converted on demand from the target, so a
//! stage nothing needs is never converted (nor built); a stage met again while it is being
//! converted is a dependency cycle.

use crate::diagnostic::{Error, SourceFile, Span, Warning};
use crate::expand::Lexer;
use crate::instructions::{self, ArgDecl, Command, Copy, Healthcheck, Instruction, Kind};
use crate::parser::{self, Dockerfile, Heredoc, Node};
use kiln_oci::{Digest, EmptyObject, HistoryEntry, ImageConfig, Platform};
use kiln_solver::{
    CacheSharing, Chown, CopyAction, ExecOp, FileAction, FileOp, Graph, Location, Mount, MountKind,
    NetworkMode, Op, OpId, OpMeta, Source, UserRef,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What the caller decides about a build.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `--target`: the stage to build (the last one when `None`).
    pub target: Option<String>,
    /// `--build-arg` values, in the order given.
    pub build_args: Vec<(String, String)>,
    /// `--platform`: the target platform (the host's when `None`).
    pub platform: Option<Platform>,
    /// `.dockerignore` patterns, applied to the build context.
    pub dockerignore: Vec<String>,
    /// Named contexts (`--build-context NAME=…`), by normalised name ([`context_name`]).
    /// A named context replaces a stage of that name, and is used before an image of that
    /// name, in FROM, `COPY --from` and `RUN --mount=from` (BuildKit's `namedContext`).
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What a named context is, as the caller resolved it (the frontend does no I/O).
#[derive(Clone, Debug)]
pub enum NamedContext {
    /// A directory, handed to the solver as the local source `key`; `exclude` holds the
    /// patterns of the directory's own `.dockerignore`.
    Local { key: String, exclude: Vec<String> },
    /// An image reference, resolved as `FROM reference` would be.
    Image { reference: String },
    /// An image in an OCI layout on disk: its manifest digest (one platform's) and config.
    OciLayout {
        path: String,
        digest: Digest,
        platform: Platform,
        config: Box<ImageConfig>,
    },
}

/// The name a context is looked up by: as `reference.FamiliarString` would print a
/// reference, without `:latest` (`docker.io/library/alpine:latest` → `alpine`).
pub fn context_name(name: &str) -> String {
    let mut n = name.to_string();
    if let Some(rest) = n.strip_prefix("docker.io/") {
        n = rest.strip_prefix("library/").unwrap_or(rest).to_string();
    }
    if let Some(rest) = n.strip_suffix(":latest") {
        n = rest.to_string();
    }
    n
}

/// A base image as the resolver found it.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The normalised reference (`docker.io/library/alpine:latest`).
    pub reference: String,
    pub digest: Option<Digest>,
    pub config: ImageConfig,
    /// The OCI layout directory holding the image (a local image store), when it isn't to be
    /// pulled from its registry; `digest` is then its manifest's.
    pub layout: Option<String>,
}

/// Looks base images up (a registry, a local store); the frontend only needs their config.
pub trait ImageResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}

/// The result of conversion.
#[derive(Debug)]
pub struct BuildPlan {
    pub graph: Graph,
    /// The op whose filesystem is the target's root filesystem.
    pub target: OpId,
    /// The target's image config, history included (times are the exporter's business).
    pub image: ImageConfig,
    /// The target stage's name (or `stage-N`).
    pub target_name: String,
    pub warnings: Vec<Warning>,
}

/// Outline of a Dockerfile, as `--call outline` prints it.
#[derive(Debug, serde::Serialize)]
pub struct Outline {
    pub target: String,
    pub description: Option<String>,
    pub args: Vec<OutlineArg>,
    pub stages: Vec<OutlineStage>,
}

#[derive(Debug, serde::Serialize)]
pub struct OutlineArg {
    pub name: String,
    pub value: Option<String>,
    pub description: Option<String>,
    pub global: bool,
}

#[derive(Debug, serde::Serialize)]
pub struct OutlineStage {
    pub name: String,
    pub base: String,
    pub line: usize,
    pub needed: bool,
}

/// The stage name or `stage-N`, as BuildKit labels unnamed stages.
fn stage_label(stage: &Stage) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", stage.index))
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A stage as written.
#[derive(Debug)]
struct Stage {
    index: usize,
    /// Lowercased name.
    name: Option<String>,
    from: instructions::From,
    from_node: Node,
    body: Vec<Instruction>,
}

/// The Dockerfile split into global ARGs and stages.
struct Layout {
    meta_args: Vec<(ArgDecl, Node)>,
    stages: Vec<Stage>,
    warnings: Vec<Warning>,
}

fn layout(file: &Arc<SourceFile>, instrs: Vec<Instruction>) -> Result<Layout, Error> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut warnings = Vec::new();
    for ins in instrs {
        match ins.kind {
            Kind::From(from) => {
                let name = match &from.name {
                    Some(n) => {
                        let lower = n.to_lowercase();
                        if !valid_stage_name(&lower) {
                            return Err(Error::at(
                                file,
                                ins.node.rest_span,
                                format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                            ));
                        }
                        if stages.iter().any(|s| s.name.as_deref() == Some(&lower)) {
                            warnings.push(Warning {
                                message: format!("Duplicate stage name {n:?}, stage names should be unique (the later stage takes the name)"),
                                span: ins.node.rest_span,
                            });
                        }
                        Some(lower)
                    }
                    None => None,
                };
                stages.push(Stage {
                    index: stages.len(),
                    name,
                    from,
                    from_node: ins.node,
                    body: Vec::new(),
                });
            }
            Kind::Arg(decls) if stages.is_empty() => {
                for d in decls {
                    meta_args.push((d, ins.node.clone()));
                }
            }
            _ => match stages.last_mut() {
                Some(s) => s.body.push(ins),
                None => {
                    return Err(Error::at(
                        file,
                        ins.node.keyword_span,
                        format!(
                            "no build stage in current context: only ARG may come before the first FROM, not {}",
                            ins.node.keyword.to_uppercase()
                        ),
                    ))
                }
            },
        }
    }
    if stages.is_empty() {
        let span = Span::new(0, file.text.len().min(1));
        return Err(Error::at(
            file,
            span,
            "dockerfile contains no stages to build: a build needs at least one FROM",
        ));
    }
    Ok(Layout {
        meta_args,
        stages,
        warnings,
    })
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// Checks a `--build-arg` as given on the command line (`KEY=VALUE`).
pub fn parse_build_arg(s: &str) -> Result<(String, String), Error> {
    match s.split_once('=') {
        Some((k, v)) if valid_arg_name(k) => Ok((k.to_string(), v.to_string())),
        _ => match std::env::var(s) {
            Ok(v) if valid_arg_name(s) => Ok((s.to_string(), v)),
            _ => Err(Error::input(format!(
                "invalid --build-arg {s:?}: expected KEY=VALUE (or KEY, to take the value from the environment)"
            ))),
        },
    }
}

fn valid_arg_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}

/// Predefined platform ARGs, usable in FROM and, once declared with `ARG NAME`, in a stage.
fn platform_args(target: &Platform, build: &Platform) -> Vec<(String, String)> {
    let mut v = vec![
        ("TARGETPLATFORM".to_string(), target.to_string()),
        ("TARGETOS".to_string(), target.os.clone()),
        ("TARGETARCH".to_string(), target.architecture.clone()),
        (
            "TARGETVARIANT".to_string(),
            target.variant.clone().unwrap_or_default(),
        ),
        ("BUILDPLATFORM".to_string(), build.to_string()),
        ("BUILDOS".to_string(), build.os.clone()),
        ("BUILDARCH".to_string(), build.architecture.clone()),
        (
            "BUILDVARIANT".to_string(),
            build.variant.clone().unwrap_or_default(),
        ),
    ];
    v.sort();
    v
}

/// Parses, checks and converts a Dockerfile for `opts`.
pub fn plan(
    df: &Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildPlan, Error> {
    let mut conv = Converter::new(df, opts, resolver)?;
    let target = conv.target_index()?;
    let state = conv.stage(target)?;
    conv.report_unused_args();
    let target_name = stage_label(&conv.layout.stages[target]);
    Ok(BuildPlan {
        graph: conv.graph,
        target: state.op,
        image: state.config,
        target_name,
        warnings: conv.warnings,
    })
}

/// Describes the Dockerfile for `--call outline`.
pub fn outline(df: &Dockerfile, opts: &BuildOptions) -> Result<Outline, Error> {
    struct NoImages;
    impl ImageResolver for NoImages {
        fn resolve(&self, r: &str, _: &Platform) -> Result<ResolvedImage, String> {
            Err(format!("{r}: outline does not resolve images"))
        }
    }
    let conv = Converter::new(df, opts, &NoImages)?;
    let target = conv.target_index()?;
    let needed = conv.needed_stages(target);
    let stage = &conv.layout.stages[target];
    let mut args: Vec<OutlineArg> = Vec::new();
    for (decl, node) in &conv.layout.meta_args {
        args.push(OutlineArg {
            name: decl.name.clone(),
            value: conv.meta.get(&decl.name).cloned(),
            description: comment_above(&df.file, node.start_line),
            global: true,
        });
    }
    for s in conv
        .layout
        .stages
        .iter()
        .filter(|s| needed.contains(&s.index))
    {
        for ins in &s.body {
            if let Kind::Arg(decls) = &ins.kind {
                for d in decls {
                    if args.iter().any(|a| a.name == d.name) {
                        continue;
                    }
                    args.push(OutlineArg {
                        name: d.name.clone(),
                        value: conv.build_arg(&d.name).or_else(|| d.default.clone()),
                        description: comment_above(&df.file, ins.node.start_line),
                        global: false,
                    });
                }
            }
        }
    }
    Ok(Outline {
        target: stage_label(stage),
        description: comment_above(&df.file, stage.from_node.start_line),
        args,
        stages: conv
            .layout
            .stages
            .iter()
            .map(|s| OutlineStage {
                name: stage_label(s),
                base: s.from.image.clone(),
                line: s.from_node.start_line,
                needed: needed.contains(&s.index),
            })
            .collect(),
    })
}

/// The comment line directly above `line`, without its `#`, as buildx takes descriptions.
fn comment_above(file: &SourceFile, line: usize) -> Option<String> {
    let prev = file.line_text(line.checked_sub(1)?).trim();
    prev.strip_prefix('#').map(|c| c.trim().to_string())
}

/// The state of a stage while its instructions are dispatched.
#[derive(Clone, Debug)]
struct StageState {
    op: OpId,
    config: ImageConfig,
    /// The environment expansion and RUN see (BuildKit's LLB state env): the image's ENV plus
    /// the ARGs that have a value, in the order declared; a later declaration of a name wins.
    /// Only ENV reaches the image config.
    env: Vec<(String, String)>,
    /// ARGs in scope (declared in the stage or its parent stages), in declaration order.
    args: Vec<(String, Option<String>)>,
    platform: Platform,
    cmd_set: bool,
    label: String,
    step: usize,
    steps: usize,
}

impl StageState {
    /// The state of a stage starting from an image (or scratch) with `config`. As BuildKit
    /// does, a config without PATH gets the default one.
    fn from_image(op: OpId, mut config: ImageConfig, platform: Platform) -> StageState {
        let env = config.config.env.get_or_insert_with(Vec::new);
        if !env
            .iter()
            .any(|kv| kv.split_once('=').map(|(k, _)| k) == Some("PATH"))
        {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let state_env = env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.clone(), String::new()),
            })
            .collect();
        StageState {
            op,
            config,
            env: state_env,
            args: Vec::new(),
            platform,
            cmd_set: false,
            label: String::new(),
            step: 0,
            steps: 0,
        }
    }

    /// A variable as expansion and RUN see it.
    fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// ENV: into the image config and the state env.
    fn set_env(&mut self, key: &str, value: &str) {
        let env = self.config.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(kv) => *kv = entry,
            None => env.push(entry),
        }
        self.set_state_env(key, value);
    }

    /// ARG with a value: into the state env only.
    fn set_state_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    /// Records the history entry of a RUN, COPY or ADD, which BuildKit marks ` # buildkit`.
    fn history_step(&mut self, created_by: String) {
        self.history(format!("{created_by} # buildkit"), true);
    }

    /// Records a history entry; `layer` says whether the step made a layer.
    fn history(&mut self, created_by: String, layer: bool) {
        self.config.history.push(HistoryEntry {
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".to_string()),
            empty_layer: !layer,
            ..Default::default()
        });
    }
}

struct Converter<'a> {
    df: &'a Dockerfile,
    opts: &'a BuildOptions,
    resolver: &'a dyn ImageResolver,
    lexer: Lexer,
    layout: Layout,
    /// Global ARG values (and the predefined platform ARGs).
    meta: BTreeMap<String, String>,
    target_platform: Platform,
    graph: Graph,
    done: HashMap<usize, StageState>,
    in_progress: Vec<usize>,
    context: Option<OpId>,
    scratch: Option<OpId>,
    images: HashMap<String, OpId>,
    /// Base images resolved so far, by `reference@platform`: each is asked for once per build,
    /// so that every stage built FROM one reference sees one image (as BuildKit's resolver cache).
    resolved: HashMap<String, ResolvedImage>,
    /// Ops of named contexts already added: (name, as a root filesystem?) → op.
    named_ops: HashMap<(String, bool), OpId>,
    used_args: BTreeSet<String>,
    warnings: Vec<Warning>,
}

impl<'a> Converter<'a> {
    fn new(
        df: &'a Dockerfile,
        opts: &'a BuildOptions,
        resolver: &'a dyn ImageResolver,
    ) -> Result<Converter<'a>, Error> {
        let instrs = instructions::parse_all(&df.file, df.directives.escape, &df.nodes)?;
        let layout = layout(&df.file, instrs)?;
        let build_platform = Platform::host();
        let target_platform = opts
            .platform
            .clone()
            .unwrap_or_else(|| build_platform.clone());
        let mut conv = Converter {
            df,
            opts,
            resolver,
            lexer: Lexer::new(df.directives.escape),
            layout,
            meta: platform_args(&target_platform, &build_platform)
                .into_iter()
                .collect(),
            target_platform,
            graph: Graph::default(),
            done: HashMap::new(),
            in_progress: Vec::new(),
            context: None,
            scratch: None,
            images: HashMap::new(),
            resolved: HashMap::new(),
            named_ops: HashMap::new(),
            used_args: BTreeSet::new(),
            warnings: df.warnings.clone(),
        };
        conv.warnings.extend(conv.layout.warnings.clone());
        conv.eval_meta_args()?;
        Ok(conv)
    }

    fn file(&self) -> &Arc<SourceFile> {
        &self.df.file
    }

    fn build_arg(&self, name: &str) -> Option<String> {
        self.opts
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn eval_meta_args(&mut self) -> Result<(), Error> {
        let decls = self.layout.meta_args.clone();
        for (decl, node) in decls {
            let value = match self.build_arg(&decl.name) {
                Some(v) => {
                    self.used_args.insert(decl.name.clone());
                    Some(v)
                }
                None => match &decl.default {
                    Some(d) => {
                        let meta = self.meta.clone();
                        Some(self.expand(&node, d, &|k| meta.get(k).cloned())?)
                    }
                    None => None,
                },
            };
            // A value-less global ARG leaves a predefined value (TARGETARCH…) in place.
            if let Some(v) = value {
                self.meta.insert(decl.name.clone(), v);
            }
        }
        Ok(())
    }

    fn target_index(&self) -> Result<usize, Error> {
        let stages = &self.layout.stages;
        match &self.opts.target {
            None => Ok(stages.len() - 1),
            Some(t) => {
                if t.is_empty() {
                    return Err(Error::input(
                        "invalid --target \"\": give the name of a stage",
                    ));
                }
                let lower = t.to_lowercase();
                stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| {
                        let names: Vec<String> =
                            stages.iter().filter_map(|s| s.name.clone()).collect();
                        Error::input(format!(
                            "target stage {t:?} could not be found (stages: {})",
                            if names.is_empty() {
                                "none named".to_string()
                            } else {
                                names.join(", ")
                            }
                        ))
                    })
            }
        }
    }

    /// Stages `target` depends on through FROM and `--from` (by name or index, unexpanded
    /// words resolved with the global ARGs), for the outline.
    fn needed_stages(&self, target: usize) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let s = &self.layout.stages[i];
            let mut refs = vec![s.from.image.clone()];
            for ins in &s.body {
                if let Kind::Copy(c) = &ins.kind {
                    if let Some((f, _)) = &c.from {
                        refs.push(f.clone());
                    }
                }
            }
            for r in refs {
                let r = self
                    .lexer
                    .process_word(&r, &|k| self.meta.get(k).cloned())
                    .unwrap_or(r);
                if let Some(j) = self.find_stage(&r, i) {
                    todo.push(j);
                }
            }
        }
        needed
    }

    /// A stage by name or index (never `current` itself by index).
    fn find_stage(&self, name: &str, current: usize) -> Option<usize> {
        let lower = name.to_lowercase();
        if let Some(i) = self
            .layout
            .stages
            .iter()
            .rposition(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        match name.parse::<usize>() {
            Ok(i) if i < self.layout.stages.len() && i != current => Some(i),
            _ => None,
        }
    }

    fn report_unused_args(&mut self) {
        let unused: Vec<&str> = self
            .opts
            .build_args
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| {
                !self.used_args.contains(*k) && !PROXY_ARGS.contains(k) && *k != "SOURCE_DATE_EPOCH"
            })
            .collect();
        if !unused.is_empty() {
            self.warnings.push(Warning {
                message: format!(
                    "one or more build-args [{}] were not consumed",
                    unused.join(" ")
                ),
                span: Span::default(),
            });
        }
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> Error {
        Error::at(self.file(), span, msg)
    }

    fn expand(
        &self,
        node: &Node,
        word: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, Error> {
        self.lexer.process_word(word, env).map_err(|e| {
            self.err(
                node.rest_span_full(),
                format!("{}: {e}", node.keyword.to_uppercase()),
            )
        })
    }

    fn expand_in(&self, st: &StageState, node: &Node, word: &str) -> Result<String, Error> {
        self.expand(node, word, &|k| st.lookup(k))
    }

    fn meta_op(&self, st: &StageState, node: &Node) -> OpMeta {
        let original = node.original.trim();
        OpMeta {
            name: format!("[{} {}/{}] {}", st.label, st.step, st.steps, original),
            location: Some(Location {
                file: self.file().name.clone(),
                line: node.start_line,
            }),
            step_id: Some(format!("{}:{}:{}", self.file().name, st.label, st.step)),
            stage: Some(st.label.to_lowercase()),
            build_args: st
                .args
                .iter()
                .map(|(k, _)| k.clone())
                .chain(PROXY_ARGS.iter().map(|k| k.to_string()))
                .collect(),
        }
    }

    /// Converts stage `index` (and, first, what it needs), once.
    fn stage(&mut self, index: usize) -> Result<StageState, Error> {
        if let Some(s) = self.done.get(&index) {
            return Ok(s.clone());
        }
        if self.in_progress.contains(&index) {
            let node = &self.layout.stages[index].from_node;
            let label = stage_label(&self.layout.stages[index]);
            return Err(self.err(
                node.span,
                format!("circular dependency detected on stage: {label}"),
            ));
        }
        if let Some(name) = self.layout.stages[index].name.clone() {
            // As BuildKit: a named context of a stage's name replaces the stage.
            let node = self.layout.stages[index].from_node.clone();
            let platform = self.target_platform.clone();
            if let Some(mut st) = self.named_context_state(&node, &name, &platform)? {
                st.label = stage_label(&self.layout.stages[index]);
                self.done.insert(index, st.clone());
                return Ok(st);
            }
        }
        self.in_progress.push(index);
        let mut st = self.base_state(index)?;
        let body = std::mem::take(&mut self.layout.stages[index].body);
        let result = self.dispatch_all(&mut st, &body);
        self.layout.stages[index].body = body;
        result?;
        self.in_progress.retain(|i| *i != index);
        self.done.insert(index, st.clone());
        Ok(st)
    }

    fn dispatch_all(&mut self, st: &mut StageState, body: &[Instruction]) -> Result<(), Error> {
        for ins in body {
            st.step += 1;
            self.dispatch(st, ins)?;
        }
        Ok(())
    }

    /// The state a stage starts from: its FROM, then the base's ONBUILD triggers.
    fn base_state(&mut self, index: usize) -> Result<StageState, Error> {
        let stage = &self.layout.stages[index];
        let node = stage.from_node.clone();
        let from = stage.from.clone();
        let label = stage_label(stage);
        let steps = stage.body.len() + 1;
        let meta = self.meta.clone();
        let lookup = |k: &str| meta.get(k).cloned();
        let image = self.expand(&node, &from.image, &lookup)?;
        if image.is_empty() {
            return Err(self.err(
                node.rest_span_full(),
                format!("base name ({}) should not be blank", from.image),
            ));
        }
        let platform = match &from.platform {
            Some(p) => {
                let p = self.expand(&node, p, &lookup)?;
                p.parse::<Platform>().map_err(|e| {
                    self.err(
                        node.flags
                            .iter()
                            .find(|f| f.name == "platform")
                            .map(|f| f.span)
                            .unwrap_or(node.span),
                        e.to_string(),
                    )
                })?
            }
            None => self.target_platform.clone(),
        };
        let mut st = if let Some(base) = self
            .find_stage(&image, index)
            .filter(|base| *base < index && image.parse::<usize>().is_err())
        {
            // A child stage inherits its parent's state, ARGs included.
            let mut parent = self.stage(base)?;
            parent.cmd_set = false;
            parent
        } else if let Some(st) = self.named_context_state(&node, &image, &platform)? {
            st
        } else if image.eq_ignore_ascii_case("scratch") {
            let mut config = ImageConfig::scratch(&platform);
            config.config.working_dir = Some("/".into());
            StageState::from_image(self.scratch(), config, platform.clone())
        } else {
            let (op, config) = self.image_source(&node, &image, &platform)?;
            StageState::from_image(op, config, platform.clone())
        };
        st.platform = platform;
        st.label = label;
        st.step = 1;
        st.steps = steps;
        self.apply_onbuild(&mut st, &node)?;
        Ok(st)
    }

    fn scratch(&mut self) -> OpId {
        if let Some(s) = self.scratch {
            return s;
        }
        let id = self.graph.add(
            Op::Source(Source::Scratch),
            OpMeta {
                name: "scratch".into(),
                location: None,
                ..Default::default()
            },
        );
        self.scratch = Some(id);
        id
    }

    fn context(&mut self) -> OpId {
        if let Some(c) = self.context {
            return c;
        }
        let id = self.graph.add(
            Op::Source(Source::Local {
                name: "context".into(),
                include: Vec::new(),
                exclude: self.opts.dockerignore.clone(),
            }),
            OpMeta {
                name: "[internal] load build context".into(),
                location: None,
                ..Default::default()
            },
        );
        self.context = Some(id);
        id
    }

    /// The state a stage starts from when `name` is a named context.
    fn named_context_state(
        &mut self,
        node: &Node,
        name: &str,
        platform: &Platform,
    ) -> Result<Option<StageState>, Error> {
        let Some((op, config)) = self.named_context_op(node, name, platform, true)? else {
            return Ok(None);
        };
        let config = config.unwrap_or_else(|| {
            // A directory becomes one layer, which the history has to account for.
            let mut c = ImageConfig::scratch(platform);
            c.history.push(HistoryEntry {
                created_by: Some(format!("[context {}] load from client", context_name(name))),
                comment: Some("buildkit.dockerfile.v0".to_string()),
                empty_layer: false,
                ..Default::default()
            });
            c
        });
        let platform = match (config.os.is_empty(), config.architecture.is_empty()) {
            (false, false) => Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone(),
            },
            _ => platform.clone(),
        };
        Ok(Some(StageState::from_image(op, config, platform)))
    }

    /// The op of the named context `name`, if there is one, with its image config (none for a
    /// directory). With `rootfs`, a directory comes as a filesystem (copied onto scratch),
    /// which FROM and a replaced stage need.
    fn named_context_op(
        &mut self,
        node: &Node,
        name: &str,
        platform: &Platform,
        rootfs: bool,
    ) -> Result<Option<(OpId, Option<ImageConfig>)>, Error> {
        let key = context_name(name);
        let Some(ctx) = self.opts.named_contexts.get(&key).cloned() else {
            return Ok(None);
        };
        let location = Some(Location {
            file: self.file().name.clone(),
            line: node.start_line,
        });
        match ctx {
            NamedContext::Image { reference } => {
                let (op, config) = self.image_source(node, &reference, platform)?;
                Ok(Some((op, Some(config))))
            }
            NamedContext::OciLayout {
                path,
                digest,
                platform,
                config,
            } => {
                let op = match self.named_ops.get(&(key.clone(), false)) {
                    Some(op) => *op,
                    None => {
                        let op = self.graph.add(
                            Op::Source(Source::OciLayout {
                                path,
                                digest,
                                platform,
                            }),
                            OpMeta {
                                name: format!("[context {key}] load from OCI layout"),
                                location,
                                ..Default::default()
                            },
                        );
                        self.named_ops.insert((key.clone(), false), op);
                        op
                    }
                };
                Ok(Some((op, Some(*config))))
            }
            NamedContext::Local {
                key: local,
                exclude,
            } => {
                let dir = match self.named_ops.get(&(key.clone(), false)) {
                    Some(op) => *op,
                    None => {
                        let op = self.graph.add(
                            Op::Source(Source::Local {
                                name: local,
                                include: Vec::new(),
                                exclude,
                            }),
                            OpMeta {
                                name: format!("[context {key}] load from client"),
                                location: None,
                                ..Default::default()
                            },
                        );
                        self.named_ops.insert((key.clone(), false), op);
                        op
                    }
                };
                if !rootfs {
                    return Ok(Some((dir, None)));
                }
                if let Some(op) = self.named_ops.get(&(key.clone(), true)) {
                    return Ok(Some((*op, None)));
                }
                let scratch = self.scratch();
                let op = self.graph.add(
                    Op::File(FileOp {
                        base: scratch,
                        actions: vec![FileAction::Copy(CopyAction {
                            source: dir,
                            src: vec!["/".into()],
                            dest: "/".into(),
                            owner: None,
                            mode: None,
                            extract_archives: false,
                            exclude: Vec::new(),
                            parents: false,
                        })],
                    }),
                    OpMeta {
                        name: format!("[context {key}] copy to a root filesystem"),
                        location,
                        ..Default::default()
                    },
                );
                self.named_ops.insert((key, true), op);
                Ok(Some((op, None)))
            }
        }
    }

    fn image_source(
        &mut self,
        node: &Node,
        image: &str,
        platform: &Platform,
    ) -> Result<(OpId, ImageConfig), Error> {
        let asked = format!("{image}@{platform}");
        let resolved = match self.resolved.get(&asked) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = self.resolver.resolve(image, platform).map_err(|e| {
                    self.err(
                        node.rest_span_full(),
                        format!("failed to resolve base image {image}: {e}"),
                    )
                })?;
                self.resolved.insert(asked, resolved.clone());
                resolved
            }
        };
        let key = format!("{}@{:?}@{platform}", resolved.reference, resolved.digest);
        let op = match self.images.get(&key) {
            Some(op) => *op,
            None => {
                let source = match (&resolved.layout, &resolved.digest) {
                    (Some(path), Some(digest)) => Source::OciLayout {
                        path: path.clone(),
                        digest: digest.clone(),
                        platform: platform.clone(),
                    },
                    _ => Source::Image {
                        reference: resolved.reference.clone(),
                        digest: resolved.digest.clone(),
                        platform: platform.clone(),
                    },
                };
                let op = self.graph.add(
                    Op::Source(source),
                    OpMeta {
                        name: format!("[internal] load {}", resolved.reference),
                        location: Some(Location {
                            file: self.file().name.clone(),
                            line: node.start_line,
                        }),
                        ..Default::default()
                    },
                );
                self.images.insert(key, op);
                op
            }
        };
        Ok((op, resolved.config))
    }

    /// Runs the base's ONBUILD triggers, then clears them, as Docker does.
    fn apply_onbuild(&mut self, st: &mut StageState, from_node: &Node) -> Result<(), Error> {
        let Some(triggers) = st.config.config.on_build.take() else {
            return Ok(());
        };
        for (i, trigger) in triggers.iter().enumerate() {
            let file = SourceFile::new(
                format!(
                    "{} (ONBUILD trigger {} of the base of line {})",
                    self.file().name,
                    i + 1,
                    from_node.start_line
                ),
                trigger.clone(),
            );
            let parsed = parser::parse(file.clone())?;
            let instrs = instructions::parse_all(&file, self.df.directives.escape, &parsed.nodes)?;
            for ins in &instrs {
                if matches!(ins.kind, Kind::From(_) | Kind::Onbuild(_)) {
                    return Err(Error::at(
                        &file,
                        ins.node.keyword_span,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            ins.node.keyword.to_uppercase()
                        ),
                    ));
                }
                // Errors of triggers point into the trigger text; positions in history point at FROM.
                self.dispatch(st, ins)?;
            }
        }
        if st
            .config
            .config
            .on_build
            .as_ref()
            .is_some_and(|v| v.is_empty())
        {
            st.config.config.on_build = None;
        }
        Ok(())
    }

    fn dispatch(&mut self, st: &mut StageState, ins: &Instruction) -> Result<(), Error> {
        let node = &ins.node;
        match &ins.kind {
            Kind::From(_) => unreachable!("FROM starts a stage"),
            Kind::Env(pairs) => {
                let before = st.clone();
                let mut msg = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand_in(&before, node, k)?;
                    let v = self.expand_in(&before, node, v)?;
                    st.set_env(&k, &v);
                    msg.push(format!("{k}={v}"));
                }
                st.history(format!("ENV {}", msg.join(" ")), false);
            }
            Kind::Arg(decls) => self.dispatch_arg(st, node, decls)?,
            Kind::Label(pairs) => {
                let before = st.clone();
                let mut msg = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand_in(&before, node, k)?;
                    let v = self.expand_in(&before, node, v)?;
                    st.config
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k.clone(), v.clone());
                    msg.push(format!("{k}={v}"));
                }
                st.history(format!("LABEL {}", msg.join(" ")), false);
            }
            Kind::Maintainer(m) => {
                st.config.author = Some(m.clone());
                st.history(format!("MAINTAINER {m}"), false);
            }
            Kind::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    let expanded = self
                        .lexer
                        .process_words(w, &|k| st.lookup(k))
                        .map_err(|e| self.err(node.rest_span_full(), format!("EXPOSE: {e}")))?;
                    ports.extend(expanded);
                }
                let mut specs = BTreeSet::new();
                for p in &ports {
                    specs.extend(
                        parse_port_spec(p).map_err(|e| self.err(node.rest_span_full(), e))?,
                    );
                }
                let exposed = st
                    .config
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for spec in &specs {
                    exposed.insert(spec.clone(), EmptyObject {});
                }
                let listed: Vec<String> = specs.iter().map(|p| format!("{p}:{{}}")).collect();
                st.history(format!("EXPOSE map[{}]", listed.join(" ")), false);
            }
            Kind::User(u) => {
                let u = self.expand_in(st, node, u)?;
                st.config.config.user = Some(u.clone());
                st.history(format!("USER {u}"), false);
            }
            Kind::Workdir(w) => self.dispatch_workdir(st, node, w)?,
            Kind::Volume(vols) => {
                let mut expanded = Vec::new();
                for v in vols {
                    let v = self.expand_in(st, node, v)?;
                    if v.trim().is_empty() {
                        return Err(self.err(
                            node.rest_span_full(),
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    expanded.push(v);
                }
                let volumes = st.config.config.volumes.get_or_insert_with(BTreeMap::new);
                for v in &expanded {
                    volumes.insert(v.clone(), EmptyObject {});
                }
                st.history(format!("VOLUME [{}]", expanded.join(" ")), false);
            }
            Kind::Stopsignal(s) => {
                let s = self.expand_in(st, node, s)?;
                if !valid_signal(&s) {
                    return Err(self.err(
                        node.rest_span_full(),
                        format!("invalid signal {s:?}: use a name such as SIGTERM or a number"),
                    ));
                }
                st.config.config.stop_signal = Some(s.clone());
                st.history(format!("STOPSIGNAL {s}"), false);
            }
            Kind::Cmd(c) => {
                let args = self.command_args(st, c);
                st.config.config.cmd = Some(args.clone());
                st.config.config.args_escaped = Some(true);
                st.cmd_set = true;
                st.history(format!("CMD {}", go_quote_list(&args)), false);
            }
            Kind::Entrypoint(c) => {
                let args = self.command_args(st, c);
                st.config.config.entrypoint = Some(args.clone());
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                st.history(format!("ENTRYPOINT {}", go_quote_list(&args)), false);
            }
            Kind::Shell(s) => {
                st.config.config.shell = Some(s.clone());
                st.history(format!("SHELL [{}]", s.join(" ")), false);
            }
            Kind::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => kiln_oci::Healthcheck {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Healthcheck::Check {
                        command,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let mut test = Vec::new();
                        if command.shell_form {
                            test.push("CMD-SHELL".to_string());
                        } else {
                            test.push("CMD".to_string());
                        }
                        test.extend(command.args.iter().cloned());
                        kiln_oci::Healthcheck {
                            test,
                            interval: *interval,
                            timeout: *timeout,
                            start_period: *start_period,
                            start_interval: *start_interval,
                            retries: *retries,
                        }
                    }
                };
                st.history(format!("HEALTHCHECK {}", go_healthcheck(&hc)), false);
                st.config.config.healthcheck = Some(hc);
            }
            Kind::Onbuild(inner) => {
                // As BuildKit records it: heredoc bodies follow the trigger line.
                let mut expr = inner.original.trim().to_string();
                for h in &inner.heredocs {
                    expr.push('\n');
                    expr.push_str(&h.content);
                    expr.push_str(&h.name);
                }
                st.config
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expr.clone());
            }
            Kind::Run(run) => self.dispatch_run(st, node, run)?,
            Kind::Copy(c) => self.dispatch_copy(st, node, c)?,
        }
        Ok(())
    }

    /// Shell form wrapped in the stage's SHELL; exec form as written.
    fn command_args(&self, st: &StageState, c: &Command) -> Vec<String> {
        if c.shell_form {
            let mut args = st.shell();
            args.extend(c.args.iter().cloned());
            args
        } else {
            c.args.clone()
        }
    }

    fn dispatch_arg(
        &mut self,
        st: &mut StageState,
        node: &Node,
        decls: &[ArgDecl],
    ) -> Result<(), Error> {
        let mut msg = Vec::new();
        for d in decls {
            let value = match self.build_arg(&d.name) {
                Some(v) => {
                    self.used_args.insert(d.name.clone());
                    Some(v)
                }
                None => match &d.default {
                    Some(def) => Some(self.expand_in(st, node, def)?),
                    None => self.meta.get(&d.name).cloned(),
                },
            };
            msg.push(match &value {
                Some(v) => format!("{}={v}", d.name),
                None => d.name.clone(),
            });
            if let Some(v) = &value {
                st.set_state_env(&d.name, v);
            }
            match st.args.iter_mut().find(|(k, _)| k == &d.name) {
                Some(slot) => slot.1 = value,
                None => st.args.push((d.name.clone(), value)),
            }
        }
        st.history(format!("ARG {}", msg.join(" ")), false);
        Ok(())
    }

    fn dispatch_workdir(&mut self, st: &mut StageState, node: &Node, w: &str) -> Result<(), Error> {
        let w = self.expand_in(st, node, w)?;
        let wd = join_path(&st.workdir(), &w);
        st.config.config.working_dir = Some(wd.clone());
        let layer = wd != "/";
        if layer {
            let owner = st
                .config
                .config
                .user
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(parse_chown);
            let meta = self.meta_op(st, node);
            st.op = self.graph.add(
                Op::File(FileOp {
                    base: st.op,
                    actions: vec![FileAction::Mkdir {
                        path: wd.clone(),
                        mode: 0o755,
                        make_parents: true,
                        owner,
                    }],
                }),
                meta,
            );
        }
        st.history(format!("WORKDIR {wd}"), layer);
        Ok(())
    }

    fn dispatch_run(
        &mut self,
        st: &mut StageState,
        node: &Node,
        run: &instructions::Run,
    ) -> Result<(), Error> {
        let mut mounts = Vec::new();
        let args = if run.command.heredocs.is_empty() {
            self.command_args(st, &run.command)
        } else {
            self.heredoc_run_args(st, &run.command, &mut mounts)
        };
        let network = match run.network.as_ref().map(|(n, _)| n.as_str()) {
            Some("none") => NetworkMode::None,
            _ => NetworkMode::Host,
        };
        if let Some((s, span)) = &run.security {
            if s == "insecure" {
                return Err(self.err(*span, "RUN --security=insecure is not supported yet"));
            }
        }
        for (m, span) in &run.mounts {
            let m = self.expand_in(st, node, m)?;
            mounts.push(self.parse_mount(st, *span, &m)?);
        }
        // The environment: the state env, then proxy build args, which need no ARG.
        let mut env: Vec<String> = st.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let history_args: Vec<String> = st
            .args
            .iter()
            .map(|(k, _)| format!("{k}={}", st.lookup(k).unwrap_or_default()))
            .collect();
        for (k, v) in &self.opts.build_args {
            if !PROXY_ARGS.contains(&k.as_str()) {
                continue;
            }
            self.used_args.insert(k.clone());
            for name in [k.to_uppercase(), k.to_lowercase()] {
                if !env
                    .iter()
                    .any(|e| e.split_once('=').map(|(n, _)| n) == Some(name.as_str()))
                {
                    env.push(format!("{name}={v}"));
                }
            }
        }
        let meta = self.meta_op(st, node);
        st.op = self.graph.add(
            Op::Exec(ExecOp {
                rootfs: st.op,
                args: args.clone(),
                env,
                cwd: st.workdir(),
                user: st.config.config.user.clone().unwrap_or_default(),
                network,
                mounts,
            }),
            meta,
        );
        let prefix = if history_args.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", history_args.len(), history_args.join(" "))
        };
        st.history_step(format!("RUN {prefix}{}", args.join(" ")));
        Ok(())
    }

    /// `--mount=type=…,k=v,…` into a solver mount.
    fn parse_mount(&mut self, st: &StageState, span: Span, spec: &str) -> Result<Mount, Error> {
        let mut fields: Vec<(String, Option<String>)> = Vec::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k, v)) => fields.push((k.trim().to_lowercase(), Some(v.to_string()))),
                None => fields.push((part.trim().to_lowercase(), None)),
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.clone())
        };
        // Boolean options as Go's strconv.ParseBool reads them; a bare key means true.
        let mut flags: Vec<(String, bool)> = Vec::new();
        for (k, v) in &fields {
            if !["required", "ro", "readonly", "rw", "readwrite"].contains(&k.as_str()) {
                continue;
            }
            let value = match v.as_deref() {
                None | Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
                Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
                Some(other) => {
                    return Err(self.err(
                        span,
                        format!("invalid value for {k}: {other} (expected true or false)"),
                    ))
                }
            };
            flags.push((k.clone(), value));
        }
        let has = |k: &str| {
            flags
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .is_some_and(|f| f.1)
        };
        let kind = get("type").unwrap_or_else(|| "bind".into());
        let allowed: &[&str] = match kind.as_str() {
            "bind" => &[
                "type",
                "target",
                "dst",
                "destination",
                "source",
                "src",
                "from",
                "rw",
                "readwrite",
                "readonly",
                "ro",
            ],
            "cache" => &[
                "type",
                "target",
                "dst",
                "destination",
                "id",
                "sharing",
                "from",
                "source",
                "src",
                "mode",
                "uid",
                "gid",
                "ro",
                "readonly",
                "rw",
                "readwrite",
            ],
            "tmpfs" => &["type", "target", "dst", "destination", "size"],
            "secret" => &[
                "type",
                "id",
                "source",
                "src",
                "target",
                "dst",
                "destination",
                "env",
                "required",
                "mode",
                "uid",
                "gid",
            ],
            "ssh" => &[
                "type",
                "id",
                "target",
                "dst",
                "destination",
                "required",
                "mode",
                "uid",
                "gid",
            ],
            other => {
                return Err(self.err(
                    span,
                    format!(
                        "unsupported mount type {other:?}: use bind, cache, tmpfs, secret or ssh"
                    ),
                ))
            }
        };
        if let Some((bad, _)) = fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(self.err(
                span,
                format!("unexpected key {bad:?} in --mount={spec} for type={kind}"),
            ));
        }
        let target = get("target")
            .or_else(|| get("dst"))
            .or_else(|| get("destination"));
        if let Some(t) = &target {
            if climbs_out(&st.workdir(), t) {
                return Err(self.err(
                    span,
                    format!("invalid mount target {t:?}: it is outside the root filesystem"),
                ));
            }
        }
        let file = self.file().clone();
        let octal = |k: &str, default: u32| -> Result<u32, Error> {
            match get(k) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(&v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        Error::at(
                            &file,
                            span,
                            format!(
                                "invalid {k}={v} in --mount: expected an octal mode (at most 7777)"
                            ),
                        )
                    }),
            }
        };
        let number = |k: &str| -> Result<u32, Error> {
            match get(k) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| {
                    Error::at(
                        &file,
                        span,
                        format!("invalid {k}={v} in --mount: expected a number"),
                    )
                }),
            }
        };
        let required_target = |t: &Option<String>| -> Result<String, Error> {
            match t {
                Some(t) if !t.is_empty() => Ok(join_path(&st.workdir(), t)),
                _ => Err(Error::at(
                    &file,
                    span,
                    format!("--mount=type={kind} needs a target"),
                )),
            }
        };
        let mount_kind =
            match kind.as_str() {
                "bind" => {
                    let from = self.mount_from(st, span, get("from"))?;
                    MountKind::Bind {
                        from,
                        source: get("source")
                            .or_else(|| get("src"))
                            .unwrap_or_else(|| "/".into()),
                        readwrite: has("rw") || has("readwrite"),
                    }
                }
                "cache" => {
                    let target = required_target(&target)?;
                    let from = match get("from") {
                        Some(f) => Some(self.mount_from(st, span, Some(f))?),
                        None => None,
                    };
                    let sharing = match get("sharing").as_deref() {
                        None | Some("shared") => CacheSharing::Shared,
                        Some("private") => CacheSharing::Private,
                        Some("locked") => CacheSharing::Locked,
                        Some(o) => {
                            return Err(self.err(
                                span,
                                format!("invalid sharing={o}: use shared, private or locked"),
                            ))
                        }
                    };
                    MountKind::Cache {
                        id: get("id").unwrap_or_else(|| target.clone()),
                        sharing,
                        from,
                        source: get("source")
                            .or_else(|| get("src"))
                            .unwrap_or_else(|| "/".into()),
                        mode: octal("mode", 0o755)?,
                        uid: number("uid")?,
                        gid: number("gid")?,
                        readonly: has("ro") || has("readonly"),
                    }
                }
                "tmpfs" => MountKind::Tmpfs {
                    size: match get("size") {
                        None => None,
                        Some(s) => Some(parse_size(&s).ok_or_else(|| {
                            self.err(span, format!("invalid size={s} in --mount"))
                        })?),
                    },
                },
                "secret" => MountKind::Secret {
                    id: secret_id(
                        get("id"),
                        get("source").or_else(|| get("src")),
                        target.as_deref(),
                    )
                    .map_err(|m| self.err(span, m))?,
                    env: get("env"),
                    required: has("required"),
                    mode: octal("mode", 0o400)?,
                    uid: number("uid")?,
                    gid: number("gid")?,
                },
                _ => MountKind::Ssh {
                    id: get("id").unwrap_or_else(|| "default".into()),
                    required: has("required"),
                    mode: octal("mode", 0o600)?,
                    uid: number("uid")?,
                    gid: number("gid")?,
                },
            };
        let target = match (&mount_kind, &target) {
            (MountKind::Secret { id, env, .. }, None) => {
                if env.is_some() {
                    String::new()
                } else {
                    format!("/run/secrets/{}", base_name(id))
                }
            }
            // The solver picks /run/buildkit/ssh_agent.N, N counting the step's ssh mounts.
            (MountKind::Ssh { .. }, None) => String::new(),
            _ => required_target(&target)?,
        };
        if target == "/" {
            return Err(self.err(span, "a mount target can't be /"));
        }
        Ok(Mount {
            target,
            kind: mount_kind,
        })
    }

    fn mount_from(
        &mut self,
        st: &StageState,
        span: Span,
        from: Option<String>,
    ) -> Result<OpId, Error> {
        match from {
            None => Ok(self.context()),
            Some(f) => self.copy_source(st, span, &f),
        }
    }

    /// The op `--from=X` names: a stage (by name or index), a named context, or an image.
    fn copy_source(&mut self, st: &StageState, span: Span, from: &str) -> Result<OpId, Error> {
        let current = self.in_progress.last().copied().unwrap_or(usize::MAX);
        if let Some(i) = self.find_stage(from, current) {
            if i > current {
                // As BuildKit: only earlier stages, which also rules out dependency cycles.
                let here = stage_label(&self.layout.stages[current]);
                return Err(self.err(span, format!("cannot copy from stage {from:?}, it needs to be defined before current stage {here:?}")));
            }
            return Ok(self.stage(i)?.op);
        }
        if let Ok(i) = from.parse::<i64>() {
            let why = if i == current as i64 {
                " (a stage can't copy from itself)"
            } else {
                ""
            };
            return Err(self.err(span, format!("invalid stage index {from}{why}")));
        }
        let node = Node::synthetic(span);
        if let Some(op) = self.named_context_op(&node, from, &st.platform.clone(), false)? {
            return Ok(op.0);
        }
        let (op, _) = self.image_source(&node, from, &st.platform)?;
        Ok(op)
    }

    fn dispatch_copy(&mut self, st: &mut StageState, node: &Node, c: &Copy) -> Result<(), Error> {
        let name = if c.add { "ADD" } else { "COPY" };
        if c.keep_git_dir {
            let span = node
                .flags
                .iter()
                .find(|f| f.name == "keep-git-dir")
                .map(|f| f.span)
                .unwrap_or(node.span);
            return Err(self.err(span, "ADD --keep-git-dir is not supported yet"));
        }
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.expand_in(st, node, s)?);
        }
        let dest_raw = self.expand_in(st, node, &c.dest)?;
        if dest_raw.is_empty() {
            return Err(self.err(
                node.rest_span_full(),
                format!("{name}: the destination can't be empty"),
            ));
        }
        let dest = join_path_keep_slash(&st.workdir(), &dest_raw);
        if sources.len() + c.heredocs.len() > 1 && !dest.ends_with('/') {
            return Err(self.err(node.rest_span_full(), format!("When using {name} with more than one source file, the destination must be a directory and end with a /")));
        }
        let owner = match &c.chown {
            Some((v, span)) => {
                let owner = parse_chown(&self.expand_in(st, node, v)?);
                let named = matches!(owner.user, UserRef::Name(_))
                    || matches!(owner.group, Some(UserRef::Name(_)));
                if c.link && named {
                    return Err(self.err(*span, format!("{name} --link with --chown by name is not supported yet: use numeric ids")));
                }
                Some(owner)
            }
            None => None,
        };
        let mode = match &c.chmod {
            Some((v, span)) => {
                let v = self.expand_in(st, node, v)?;
                Some(
                    u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            self.err(
                                *span,
                                format!("invalid --chmod={v}: expected an octal mode such as 0644"),
                            )
                        })?,
                )
            }
            None => None,
        };
        let checksum = match &c.checksum {
            Some((v, span)) => Some(
                self.expand_in(st, node, v)?
                    .parse::<Digest>()
                    .map_err(|e| self.err(*span, format!("invalid --checksum: {e}")))?,
            ),
            None => None,
        };
        let mut excludes = Vec::new();
        excludes.extend(c.excludes.iter().cloned());
        if let Err(e) = kiln_patterns::PatternMatcher::new(&excludes) {
            return Err(self.err(node.span, format!("invalid --exclude: {e}")));
        }
        // BuildKit expands neither --from nor --exclude; an empty --from is the context.
        let from_op = match &c.from {
            Some((f, span)) if f.contains('$') => {
                return Err(self.err(*span, "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"));
            }
            Some((f, span)) if !f.is_empty() => Some(self.copy_source(st, *span, f)?),
            _ => None,
        };
        let mut actions = Vec::new();
        let mut local = Vec::new();
        for src in &sources {
            if instructions::is_url(src) {
                if !c.add {
                    return Err(self.err(
                        node.rest_span_full(),
                        format!("COPY can't copy from a URL ({src}): use ADD"),
                    ));
                }
                if from_op.is_some() {
                    return Err(self.err(
                        node.rest_span_full(),
                        "ADD --from can't be used with a URL source",
                    ));
                }
                let filename = url_filename(src);
                let http = self.graph.add(
                    Op::Source(Source::Http {
                        url: src.clone(),
                        checksum: checksum.clone(),
                        filename: filename.clone(),
                        mode: 0o600,
                    }),
                    OpMeta {
                        name: format!("[internal] fetch {src}"),
                        location: Some(Location {
                            file: self.file().name.clone(),
                            line: node.start_line,
                        }),
                        ..Default::default()
                    },
                );
                actions.push(FileAction::Copy(CopyAction {
                    source: http,
                    src: vec![filename],
                    dest: dest.clone(),
                    owner: owner.clone(),
                    mode,
                    extract_archives: false,
                    exclude: Vec::new(),
                    parents: false,
                }));
            } else if src.starts_with("git@") || src.ends_with(".git") && src.contains("://") {
                return Err(self.err(
                    node.rest_span_full(),
                    format!("ADD of a git repository ({src}) is not supported yet"),
                ));
            } else {
                local.push(src.clone());
            }
        }
        if !local.is_empty() {
            let source = match from_op {
                Some(op) => op,
                None => self.context(),
            };
            actions.push(FileAction::Copy(CopyAction {
                source,
                src: local,
                dest: dest.clone(),
                owner: owner.clone(),
                mode,
                extract_archives: c.add && from_op.is_none(),
                exclude: excludes.clone(),
                parents: c.parents,
            }));
        }
        for h in &c.heredocs {
            let data = if h.expand {
                self.expand_heredoc(st, node, h)?
            } else {
                h.content.clone()
            };
            let data = if h.chomp { chomp_heredoc(&data) } else { data };
            let scratch = self.scratch();
            let file_op = self.graph.add(
                Op::File(FileOp {
                    base: scratch,
                    actions: vec![FileAction::Mkfile {
                        path: format!("/{}", h.name),
                        mode: mode.unwrap_or(0o644),
                        data: data.into_bytes(),
                        owner: None,
                    }],
                }),
                OpMeta {
                    name: format!("[internal] preparing inline document {}", h.name),
                    location: None,
                    ..Default::default()
                },
            );
            actions.push(FileAction::Copy(CopyAction {
                source: file_op,
                src: vec![h.name.clone()],
                dest: dest.clone(),
                owner: owner.clone(),
                mode,
                extract_archives: false,
                exclude: Vec::new(),
                parents: false,
            }));
        }
        let meta = self.meta_op(st, node);
        st.op = if c.link {
            // --link: the copy is made on scratch, so its layer doesn't depend on the parent,
            // then stacked onto it (BuildKit's MergeOp).
            let base = self.scratch();
            let linked = self
                .graph
                .add(Op::File(FileOp { base, actions }), meta.clone());
            self.graph.add(Op::Merge(vec![st.op, linked]), meta)
        } else {
            self.graph.add(
                Op::File(FileOp {
                    base: st.op,
                    actions,
                }),
                meta,
            )
        };
        let mut msg = vec![name.to_string()];
        if c.parents {
            msg.push("--parents".into());
        }
        if let Some((v, _)) = &c.chown {
            msg.push(format!("--chown={}", self.expand_in(st, node, v)?));
        }
        if let Some((v, _)) = &c.chmod {
            msg.push(format!("--chmod={}", self.expand_in(st, node, v)?));
        }
        msg.extend(sources.iter().cloned());
        msg.extend(c.heredocs.iter().map(|h| format!("<<{}", h.name)));
        msg.push(dest_raw);
        st.history_step(msg.join(" "));
        Ok(())
    }

    /// RUN with heredocs, as BuildKit turns it into a command: a lone `<<EOF` runs its body
    /// with the shell, or, when the body starts with `#!`, as a script file mounted at
    /// `/dev/pipes/`; anything else hands the command and the bodies to the shell.
    fn heredoc_run_args(
        &mut self,
        st: &StageState,
        c: &Command,
        mounts: &mut Vec<Mount>,
    ) -> Vec<String> {
        let cmdline = c.args.join(" ");
        let first = &c.heredocs[0];
        if c.shell_form
            && c.heredocs.len() == 1
            && instructions::heredoc_marker(cmdline.trim()) == Some(first.name.as_str())
        {
            let data = if first.chomp {
                chomp_heredoc(&first.content)
            } else {
                first.content.clone()
            };
            if data.starts_with("#!") {
                let scratch = self.scratch();
                let script = self.graph.add(
                    Op::File(FileOp {
                        base: scratch,
                        actions: vec![FileAction::Mkfile {
                            path: format!("/{}", first.name),
                            mode: 0o755,
                            data: data.into_bytes(),
                            owner: None,
                        }],
                    }),
                    OpMeta {
                        name: "[internal] preparing inline document".into(),
                        location: None,
                        ..Default::default()
                    },
                );
                mounts.push(Mount {
                    target: "/dev/pipes/".into(),
                    kind: MountKind::Bind {
                        from: script,
                        source: "/".into(),
                        readwrite: false,
                    },
                });
                return vec![format!("/dev/pipes/{}", first.name)];
            }
            let mut args = st.shell();
            args.push(data);
            return args;
        }
        let mut full = cmdline;
        for h in &c.heredocs {
            full.push('\n');
            full.push_str(&h.content);
            full.push_str(&h.name);
        }
        if c.shell_form {
            let mut args = st.shell();
            args.push(full);
            args
        } else {
            vec![full]
        }
    }

    /// Heredoc text with variables expanded (unquoted delimiters only): quotes in the text are
    /// kept, as a shell heredoc keeps them.
    fn expand_heredoc(&self, st: &StageState, node: &Node, h: &Heredoc) -> Result<String, Error> {
        let mut out = String::new();
        for line in h.content.split_inclusive('\n') {
            let escaped = line.replace('\\', "\\\\").replace('"', "\\\"");
            let word = format!("\"{}\"", escaped.trim_end_matches('\n'));
            let mut e = self.expand_in(st, node, &word)?;
            if line.ends_with('\n') {
                e.push('\n');
            }
            out.push_str(&e);
        }
        Ok(out)
    }
}

/// Strips leading tabs from every line (`<<-`).
fn chomp_heredoc(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// The file name ADD gives a URL's content: the last path segment, or `__unnamed__`.
fn url_filename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "__unnamed__".to_string())
}

/// `user[:group]` with ids or names.
fn parse_chown(s: &str) -> Chown {
    let part = |p: &str| match p.parse::<u32>() {
        Ok(id) => UserRef::Id(id),
        Err(_) => UserRef::Name(p.to_string()),
    };
    match s.split_once(':') {
        Some((u, g)) => Chown {
            user: part(u),
            group: Some(part(g)),
        },
        None => Chown {
            user: part(s),
            group: None,
        },
    }
}

/// The last element of a slash path (`path.Base`, without its `.` for empty paths).
fn base_name(p: &str) -> &str {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// A secret mount's id as BuildKit picks it: `id`, or `source` (another name for it), or the
/// target's file name.
fn secret_id(
    id: Option<String>,
    source: Option<String>,
    target: Option<&str>,
) -> Result<String, &'static str> {
    match (id, source) {
        (Some(_), Some(_)) => Err("both source and id can't be set"),
        (Some(id), None) | (None, Some(id)) if !id.is_empty() => Ok(id),
        _ => match target.map(base_name) {
            Some(name) if !name.is_empty() => Ok(name.to_string()),
            _ => Err("invalid secret mount: one of id, source or target is required"),
        },
    }
}

/// Whether `p`, relative to `base` unless absolute, climbs above the root with `..`.
fn climbs_out(base: &str, p: &str) -> bool {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut depth = 0usize;
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// `base` joined with `p` (absolute `p` wins), cleaned.
fn join_path(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    kiln_patterns::clean(&joined)
}

/// Like [`join_path`], keeping a trailing `/` (it means "a directory" to COPY).
fn join_path_keep_slash(base: &str, p: &str) -> String {
    let mut j = join_path(base, p);
    if (p.ends_with('/') || p.ends_with("/.") || p == ".") && !j.ends_with('/') {
        j.push('/');
    }
    j
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (
            &s[..i],
            match s[i..].to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return None,
            },
        ),
        None => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// moby's `signal.ParseSignal`: a non-zero number, or a Linux signal name in any case, with or
/// without `SIG`.
fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return n != 0;
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |prefix: &str, sign: char| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sign))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    NAMES.contains(&name) || realtime("RTMIN", '+') || realtime("RTMAX", '-')
}

/// EXPOSE specs → `port/proto` keys (ranges expanded).
fn parse_port_spec(spec: &str) -> Result<Vec<String>, String> {
    let bad = || format!("invalid port {spec:?} in EXPOSE: expected PORT[-PORT][/tcp|udp|sctp]");
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    // An `ip:hostport:containerport` form is accepted by Docker; keep the container port.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// A healthcheck as BuildKit writes it into history (Go's `%q` of the struct).
fn go_healthcheck(hc: &kiln_oci::Healthcheck) -> String {
    format!(
        "&{{{} \"{}\" \"{}\" \"{}\" \"{}\" {}}}",
        go_quote_list(&hc.test),
        go_duration(hc.interval),
        go_duration(hc.timeout),
        go_duration(hc.start_period),
        go_duration(hc.start_interval),
        go_quote_rune(hc.retries)
    )
}

/// Go's `%q` of an integer as a rune: `'a'`, `'\x00'`, `'\n'`, `'Ĭ'`.
fn go_quote_rune(n: i64) -> String {
    let body = match u32::try_from(n).ok().and_then(char::from_u32) {
        None => "\u{fffd}".to_string(),
        Some('\u{7}') => r"\a".to_string(),
        Some('\u{8}') => r"\b".to_string(),
        Some('\u{c}') => r"\f".to_string(),
        Some('\n') => r"\n".to_string(),
        Some('\r') => r"\r".to_string(),
        Some('\t') => r"\t".to_string(),
        Some('\u{b}') => r"\v".to_string(),
        Some('\'') => r"\'".to_string(),
        Some('\\') => r"\\".to_string(),
        Some(c) if c.is_ascii_control() => format!(r"\x{:02x}", c as u32),
        Some(c) if c.is_control() || (c.is_whitespace() && c != ' ') => {
            if (c as u32) <= 0xffff {
                format!(r"\u{:04x}", c as u32)
            } else {
                format!(r"\U{:08x}", c as u32)
            }
        }
        Some(c) => c.to_string(),
    };
    format!("'{body}'")
}

/// Go's `time.Duration.String()`: `0s`, `100ms`, `1m30s`, `1h0m0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let h = n / 3_600_000_000_000;
    let m = n / 60_000_000_000 % 60;
    let secs = trim_fraction(n % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// `n / div` with the fraction's trailing zeros dropped (`1.5`, `2`).
fn trim_fraction(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(" "))
}

impl Node {
    /// The arguments' span through the end of the instruction, for errors about them.
    fn rest_span_full(&self) -> Span {
        Span::new(
            self.rest_span.start,
            self.span.end.max(self.rest_span.start),
        )
    }

    /// A node standing for a span, for errors about a flag value.
    fn synthetic(span: Span) -> Node {
        Node {
            keyword: String::new(),
            keyword_span: span,
            flags: Vec::new(),
            rest: String::new(),
            rest_span: span,
            heredocs: Vec::new(),
            original: String::new(),
            span,
            start_line: 0,
            end_line: 0,
            inner: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("8080").unwrap(), vec!["8080/tcp"]);
        assert_eq!(parse_port_spec("53/udp").unwrap(), vec!["53/udp"]);
        assert_eq!(
            parse_port_spec("80-81/tcp").unwrap(),
            vec!["80/tcp", "81/tcp"]
        );
        assert!(parse_port_spec("abc").is_err());
        assert!(parse_port_spec("80/xyz").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(join_path("/base", "sub"), "/base/sub");
        assert_eq!(join_path("/base", "/abs/"), "/abs");
        assert_eq!(join_path_keep_slash("/app", "dir/"), "/app/dir/");
        assert_eq!(join_path_keep_slash("/app", "."), "/app/");
        assert_eq!(join_path_keep_slash("/", "x"), "/x");
    }

    #[test]
    fn url_names() {
        assert_eq!(url_filename("http://h/a/b.txt"), "b.txt");
        assert_eq!(url_filename("http://h/a/b.txt?x=1"), "b.txt");
        assert_eq!(url_filename("http://h"), "__unnamed__");
        assert_eq!(url_filename("http://h/dir/"), "dir");
    }

    #[test]
    fn chown_forms() {
        assert_eq!(
            parse_chown("1:2"),
            Chown {
                user: UserRef::Id(1),
                group: Some(UserRef::Id(2))
            }
        );
        assert_eq!(
            parse_chown("app"),
            Chown {
                user: UserRef::Name("app".into()),
                group: None
            }
        );
    }

    #[test]
    fn go_formats() {
        for (nanos, want) in [
            (0, "0s"),
            (5_000_000_000, "5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (100_000_000, "100ms"),
            (1_500_000_000, "1.5s"),
        ] {
            assert_eq!(go_duration(nanos), want);
        }
        let hc = kiln_oci::Healthcheck {
            test: vec!["CMD-SHELL".into(), "echo hi".into()],
            interval: 5_000_000_000,
            ..Default::default()
        };
        // As BuildKit wrote it (observed on Docker 20.10, plus the newer StartInterval field).
        assert_eq!(
            go_healthcheck(&hc),
            r#"&{["CMD-SHELL" "echo hi"] "5s" "0s" "0s" "0s" '\x00'}"#
        );
    }

    #[test]
    fn go_quote() {
        assert_eq!(
            go_quote_list(&["/bin/sh".into(), "-c".into(), "echo hi".into()]),
            r#"["/bin/sh" "-c" "echo hi"]"#
        );
    }
}
