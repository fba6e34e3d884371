//! `kiln build`: reads the Dockerfile and its `.dockerignore`, asks the frontend for a plan,
//! the solver for the target's layers and the exporter for the outputs. Glue only: the work is
//! in the library crates.

use crate::cli::{BuildArgs, GraphFormat};
use crate::images;
use crate::output::{self, Output};
use crate::progress::{Progress, Summary};
use crate::state::State;
use anyhow::{anyhow, bail, Context, Result};
use kiln_exporter::{ExportInput, Exporter, ImageOptions, InputKind, LayerOptions};
use kiln_frontend::{
    convert::{self, BuildOptions, NamedContext},
    parser, Error as FrontendError, SourceFile, Span,
};
use kiln_oci::Platform;
use kiln_solver::{SolveError, SolveRequest, Solver, StepError};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The Dockerfile and context of a build, as the user named them.
struct Inputs {
    dockerfile: Arc<SourceFile>,
    /// The directory behind the build context (an empty one for `kiln build -`).
    context: PathBuf,
    dockerignore: Vec<String>,
    /// Directories of named contexts, by their local source key.
    named_locals: Vec<(String, PathBuf)>,
    _empty_context: Option<tempfile::TempDir>,
}

pub fn run(root: &Path, args: BuildArgs) -> Result<()> {
    reject_unsupported(&args)?;
    let secrets = crate::secrets::read(&args.secret)?;
    let ssh = crate::ssh::sockets(&args.ssh)?;
    let progress = Progress::new(args.progress)?;
    let inputs = read_inputs(&args)?;
    let mut inputs = inputs;
    let opts = build_options(&args, &mut inputs)?;
    let df = parser::parse(inputs.dockerfile.clone()).map_err(report)?;
    for w in &df.warnings {
        let (line, _) = df.file.line_col(w.span.start);
        eprintln!("WARNING: {}:{line}: {}", df.file.name, w.message);
    }

    if args.call == "outline" {
        let outline = convert::outline(&df, &opts).map_err(report)?;
        print_outline(&outline);
        return Ok(());
    }
    if args.call != "build" {
        bail!(
            "--call {}: unknown method (kiln knows build and outline)",
            args.call
        );
    }

    let registry = Arc::new(
        kiln_registry::Client::new(kiln_registry::ClientOptions {
            insecure_registries: args.insecure_registries.clone(),
            ..Default::default()
        })
        .context("setting up the registry client")?,
    );
    crate::state::claim(root)?;
    let resolver = images::Resolver {
        client: registry.clone(),
        content: kiln_cache::ContentStore::open(&root.join("content"))?,
    };
    let no_cache_filter = no_cache_stages(&df, &opts, &args.no_cache_filter)?;
    let plan = convert::plan(&df, &opts, &resolver).map_err(report)?;
    for w in &plan.warnings {
        eprintln!("WARNING: {}", w.message);
    }
    if let Some(format) = args.print_graph {
        print_graph(&plan, format)?;
        return Ok(());
    }

    let mut annotations = output::Annotations::default();
    for a in &args.annotations {
        annotations.add_flag(a)?;
    }
    let outputs = output::outputs(
        &args.outputs,
        &args.tags,
        args.push,
        args.load,
        &annotations,
    )?;
    let labels = parse_labels(&args.labels)?;
    // Each output's image names, checked before anything is built.
    let output_names: Vec<Vec<images::Name>> = outputs
        .iter()
        .map(|spec| spec.names.iter().map(|n| images::normalise(n)).collect())
        .collect::<Result<_>>()?;
    if outputs.is_empty() {
        eprintln!("WARNING: no output specified: the build result will only remain in the build cache (use -t NAME, or --output type=oci,dest=PATH)");
    }

    let state = State::open(root)?;
    let executor = kiln_solver::executor::executor_for(&args.runtime, &root.join("executor"))
        .with_context(|| format!("--runtime {}", args.runtime))?;
    let solver = Solver::new(
        state.snapshots.clone(),
        state.content.clone(),
        registry.clone(),
        executor,
    );
    let mut locals = HashMap::new();
    locals.insert("context".to_string(), inputs.context.clone());
    locals.extend(inputs.named_locals.iter().cloned());
    let request = SolveRequest {
        graph: &plan.graph,
        target: plan.target,
        locals: &locals,
        no_cache: args.no_cache,
        no_cache_filter: &no_cache_filter,
        cancel: crate::interrupt::flag(),
        jobs: args.jobs.unwrap_or_else(kiln_solver::default_jobs),
        secrets: &secrets,
        ssh: &ssh,
    };
    let solved = match solver.solve(&request, &|e| progress.event(e)) {
        Ok(solved) => solved,
        Err(e) => {
            for f in &e.failures {
                progress.failed(&f.op_name, &f.message);
            }
            // The display closes its blocks first; then every failure is printed together.
            drop(progress);
            return Err(solve_error(&inputs.dockerfile, e));
        }
    };

    if outputs.is_empty() && args.iidfile.is_none() && args.metadata_file.is_none() {
        progress.finish(Summary {
            ran: solved.ran,
            cached: solved.cached,
            ..Summary::default()
        });
        return Ok(());
    }
    let mut plan_image = plan.image.clone();
    if !labels.is_empty() {
        plan_image
            .config
            .labels
            .get_or_insert_with(Default::default)
            .extend(labels);
    }
    let mut maker = ImageMaker {
        state: &state,
        config: &plan_image,
        layers: &solved.layers,
        epoch: source_date_epoch(&opts)?,
        created: created_at(&solved.layers),
        platform: opts.platform.clone().unwrap_or_else(Platform::host),
        made: Vec::new(),
    };
    let mut rootfs: Option<kiln_cache::Mounted> = None;
    // The image the build's metadata describes: that of the first image output.
    let mut main_image: Option<kiln_exporter::Image> = None;
    for (spec, names) in outputs.iter().zip(&output_names) {
        // Outputs written by an exporter to a destination: which, and how the step is named.
        let (exporter, what): (Box<dyn Exporter>, String) = match &spec.output {
            Output::Local { dest } => (
                Box::new(kiln_exporter::RootfsExporter::Local { dest: dest.clone() }),
                format!("copying files to {}", dest.display()),
            ),
            Output::Tar { dest } => (
                Box::new(kiln_exporter::RootfsExporter::Tar {
                    dest: dest.clone(),
                    mtime_clamp: maker.epoch.filter(|_| spec.format.rewrite_timestamp),
                }),
                format!("sending tarball to {}", dest.display()),
            ),
            Output::Oci { dest, tar } => (
                Box::new(kiln_exporter::OciExporter {
                    dest: if *tar {
                        kiln_exporter::OciDest::Tar(dest.clone())
                    } else {
                        kiln_exporter::OciDest::Dir(dest.clone())
                    },
                    image_name: names.first().map(|n| n.full.clone()),
                }),
                format!("exporting to oci image format at {}", dest.display()),
            ),
            Output::Docker { dest: Some(dest) } => (
                Box::new(kiln_exporter::DockerExporter {
                    dest: dest.clone(),
                    repo_tags: names.iter().map(|n| n.familiar.clone()).collect(),
                }),
                format!("exporting to docker image format at {}", dest.display()),
            ),
            Output::Docker { dest: None } => {
                let image = maker.image(&spec.format, &progress)?;
                let tags: Vec<String> = names.iter().map(|n| n.familiar.clone()).collect();
                progress.step("loading the image into the local engine", |log| {
                    images::load(&state.content, &image, &tags, log)
                })?;
                main_image.get_or_insert(image);
                continue;
            }
            Output::Image { push } => {
                let image = maker.image(&spec.format, &progress)?;
                let store = kiln_cache::ImageStore::open(&state.content)?;
                for name in names {
                    progress.step(&format!("naming to {}", name.full), |_| {
                        store.tag(&name.full, &image.descriptor)?;
                        Ok(())
                    })?;
                }
                if *push {
                    for name in names {
                        progress.step(&format!("pushing {}", name.full), |log| {
                            images::push(
                                &registry,
                                &state.content,
                                &image.descriptor,
                                name,
                                base_image_sources(&plan.graph, &solved.layers),
                                log,
                            )
                        })?;
                    }
                }
                main_image.get_or_insert(image);
                continue;
            }
        };
        match exporter.input() {
            InputKind::Rootfs => {
                if rootfs.is_none() {
                    let diffs: Vec<PathBuf> =
                        solved.layers.iter().map(|l| l.diff.clone()).collect();
                    rootfs = Some(state.snapshots.mount_ro(&diffs)?);
                }
                let path = rootfs.as_ref().expect("mounted").path();
                progress.step(&what, |_| {
                    exporter.export(&state.content, ExportInput::Rootfs(path))?;
                    Ok(())
                })?;
            }
            InputKind::Image => {
                let image = maker.image(&spec.format, &progress)?;
                progress.step(&what, |log| {
                    exporter.export(&state.content, ExportInput::Image(&image))?;
                    log(&format!("manifest {}", image.descriptor.digest));
                    Ok(())
                })?;
                main_image.get_or_insert(image);
            }
        }
    }
    drop(rootfs);
    if main_image.is_none() && (args.iidfile.is_some() || args.metadata_file.is_some()) {
        main_image = Some(maker.image(&output::default_image_format(&annotations), &progress)?);
    }
    if let Some(image) = &main_image {
        if let Some(path) = &args.iidfile {
            write_file(path, image.manifest.config.digest.to_string().as_bytes())?;
        }
        if let Some(path) = &args.metadata_file {
            let mut meta = serde_json::Map::new();
            meta.insert(
                "containerimage.digest".into(),
                image.descriptor.digest.to_string().into(),
            );
            meta.insert(
                "containerimage.config.digest".into(),
                image.manifest.config.digest.to_string().into(),
            );
            meta.insert(
                "containerimage.descriptor".into(),
                serde_json::to_value(&image.descriptor)?,
            );
            let mut names: Vec<&str> = Vec::new();
            for name in output_names.iter().flatten() {
                if !names.contains(&name.full.as_str()) {
                    names.push(&name.full);
                }
            }
            if !names.is_empty() {
                meta.insert("image.name".into(), names.join(",").into());
            }
            write_file(path, &serde_json::to_vec_pretty(&meta)?)?;
        }
    }
    progress.finish(Summary {
        ran: solved.ran,
        cached: solved.cached,
        digest: main_image.as_ref().map(|i| i.descriptor.digest.to_string()),
        image_id: main_image
            .as_ref()
            .map(|i| i.manifest.config.digest.to_string()),
    });
    Ok(())
}

/// Makes the build's image once per image format its outputs ask for.
struct ImageMaker<'a> {
    state: &'a State,
    config: &'a kiln_oci::ImageConfig,
    layers: &'a [kiln_solver::Layer],
    epoch: Option<i64>,
    /// When the images are created (without an epoch): once for all of them.
    created: i64,
    platform: Platform,
    made: Vec<(output::ImageFormat, kiln_exporter::Image)>,
}

impl ImageMaker<'_> {
    fn image(
        &mut self,
        format: &output::ImageFormat,
        progress: &Progress,
    ) -> Result<kiln_exporter::Image> {
        if let Some((_, image)) = self.made.iter().find(|(f, _)| f == format) {
            return Ok(image.clone());
        }
        let layer_opts = LayerOptions {
            compression: format.compression,
            epoch: self.epoch,
            rewrite_timestamp: self.epoch.is_some() && format.rewrite_timestamp,
            oci_media_types: format.oci_media_types,
        };
        let content = &self.state.content;
        let image = progress.step("exporting layers", |_| {
            // Base image layers are reused byte for byte unless `force-compression` asks for
            // the output's compression everywhere; the build's own layers are written.
            let layers = self
                .layers
                .iter()
                .map(|l| match &l.blob {
                    Some(blob) if !format.force_compression => Ok(kiln_exporter::Layer {
                        descriptor: blob.descriptor.clone(),
                        diff_id: blob.diff_id.clone(),
                        empty: false,
                    }),
                    // A committed snapshot never changes: its layer blob is made once.
                    _ => kiln_exporter::write_layer_memo(
                        content,
                        &l.diff,
                        &layer_opts,
                        l.diff.parent().unwrap_or(&l.diff),
                    ),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let image_opts = ImageOptions {
                epoch: self.epoch,
                created: Some(self.created),
                oci_media_types: format.oci_media_types,
                platform: self.platform.clone(),
                manifest_annotations: format.annotations.manifest.clone(),
                descriptor_annotations: format.annotations.manifest_descriptor.clone(),
            };
            Ok(kiln_exporter::write_image(
                content,
                self.config,
                &layers,
                &image_opts,
            )?)
        })?;
        self.made.push((format.clone(), image.clone()));
        Ok(image)
    }
}

/// Where the base image layers of the result came from, for cross-repository mounts: each
/// pulled layer by the reference of an image source of the graph that lists it. A wrong guess
/// only costs the registry a refused mount (then the layer is uploaded).
fn base_image_sources(
    graph: &kiln_solver::Graph,
    layers: &[kiln_solver::Layer],
) -> HashMap<kiln_oci::Digest, kiln_registry::Reference> {
    let reference = graph.nodes.iter().find_map(|node| match &node.op {
        kiln_solver::Op::Source(kiln_solver::Source::Image { reference, .. }) => {
            reference.parse::<kiln_registry::Reference>().ok()
        }
        _ => None,
    });
    let Some(reference) = reference else {
        return HashMap::new();
    };
    layers
        .iter()
        .filter_map(|l| l.blob.as_ref())
        .map(|b| (b.descriptor.digest.clone(), reference.clone()))
        .collect()
}

/// When the image was made, without SOURCE_DATE_EPOCH: when its newest layer of this build was
/// (the modification time of that snapshot's diff directory, fixed once committed), else now.
/// So a rebuild that runs nothing gives the same image, as BuildKit's does.
fn created_at(layers: &[kiln_solver::Layer]) -> i64 {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    layers
        .iter()
        .filter(|l| l.blob.is_none())
        .filter_map(|l| {
            std::fs::symlink_metadata(&l.diff)
                .and_then(|m| m.modified())
                .ok()
        })
        .map(secs)
        .max()
        .unwrap_or_else(|| secs(std::time::SystemTime::now()))
}

/// `--label KEY=VALUE` flags.
fn parse_labels(flags: &[String]) -> Result<BTreeMap<String, String>> {
    flags
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--label {l}: expected KEY=VALUE"),
        })
        .collect()
}

/// Flags that are parsed but not implemented yet fail clearly instead of doing nothing.
fn reject_unsupported(args: &BuildArgs) -> Result<()> {
    let unsupported = [
        ("--cache-from", !args.cache_from.is_empty()),
        ("--cache-to", !args.cache_to.is_empty()),
    ];
    for (flag, used) in unsupported {
        if used {
            bail!("{flag} is not supported yet");
        }
    }
    if args.jobs == Some(0) {
        bail!("--jobs must be at least 1");
    }
    Ok(())
}

/// The stages `--no-cache-filter` names, as the solver knows them (lowercased names or
/// `stage-N` labels); a name that is no stage of the Dockerfile is an error.
fn no_cache_stages(
    df: &parser::Dockerfile,
    opts: &BuildOptions,
    filter: &[String],
) -> Result<Vec<String>> {
    if filter.is_empty() {
        return Ok(Vec::new());
    }
    let outline = convert::outline(df, opts).map_err(report)?;
    let known: Vec<&str> = outline.stages.iter().map(|s| s.name.as_str()).collect();
    let mut stages = Vec::new();
    for name in filter.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let lower = name.to_lowercase();
        let label = match lower.parse::<usize>() {
            Ok(i) if i < known.len() => known[i].to_string(),
            _ if known.contains(&lower.as_str()) => lower,
            _ => bail!(
                "--no-cache-filter {name}: no stage of that name in {} (stages: {})",
                df.file.name,
                known.join(", ")
            ),
        };
        stages.push(label);
    }
    Ok(stages)
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the Dockerfile from stdin")?;
    Ok(s)
}

fn read_inputs(args: &BuildArgs) -> Result<Inputs> {
    if args.context == "-" {
        if args.file.as_deref().is_some_and(|f| f != "-") {
            bail!("with PATH `-` the Dockerfile comes from stdin: -f can't name another one");
        }
        let empty = tempfile::tempdir().context("creating an empty build context")?;
        return Ok(Inputs {
            dockerfile: SourceFile::new("Dockerfile", read_stdin()?),
            context: empty.path().to_path_buf(),
            dockerignore: Vec::new(),
            named_locals: Vec::new(),
            _empty_context: Some(empty),
        });
    }
    let context = PathBuf::from(&args.context);
    if !context.is_dir() {
        bail!("build context {}: not a directory", context.display());
    }
    let (dockerfile, df_path) = match args.file.as_deref() {
        Some("-") => (SourceFile::new("Dockerfile", read_stdin()?), None),
        other => {
            let path = match other {
                Some(f) => PathBuf::from(f),
                None => context.join("Dockerfile"),
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
            (
                SourceFile::new(path.display().to_string(), text),
                Some(path),
            )
        }
    };
    // `<name>.dockerignore` beside the Dockerfile wins over the context's `.dockerignore`.
    let beside = df_path.map(|p| {
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".dockerignore");
        p.with_file_name(name)
    });
    let ignore_file = beside
        .filter(|p| p.is_file())
        .unwrap_or_else(|| context.join(".dockerignore"));
    let dockerignore = match std::fs::read_to_string(&ignore_file) {
        Ok(text) => kiln_patterns::read_ignore_file(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ignore_file.display())),
    };
    kiln_patterns::PatternMatcher::new(&dockerignore)
        .map_err(|e| anyhow!("{}: {e}", ignore_file.display()))?;
    Ok(Inputs {
        dockerfile,
        context,
        dockerignore,
        named_locals: Vec::new(),
        _empty_context: None,
    })
}

fn build_options(args: &BuildArgs, inputs: &mut Inputs) -> Result<BuildOptions> {
    let build_args = args
        .build_args
        .iter()
        .map(|a| convert::parse_build_arg(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(report)?;
    let platform = args
        .platform
        .as_deref()
        .map(|p| p.parse::<Platform>())
        .transpose()
        .map_err(|e| anyhow!("--platform: {e}"))?;
    if let Some(p) = &platform {
        if *p != Platform::host() {
            bail!("--platform {p}: building for a platform other than the host's ({}) is not supported yet", Platform::host());
        }
    }
    if let Some(t) = &args.target {
        if t.is_empty() || t.contains(char::is_whitespace) {
            bail!("invalid --target {t:?}: give the name of a stage");
        }
    }
    let target_platform = platform.clone().unwrap_or_else(Platform::host);
    let mut named_contexts = BTreeMap::new();
    for spec in &args.build_contexts {
        let (name, ctx, local) = named_context(spec, &target_platform)?;
        if let Some(dir) = local {
            if let NamedContext::Local { key, .. } = &ctx {
                inputs.named_locals.push((key.clone(), dir));
            }
        }
        // As buildx (a map): a later value for the same name wins.
        named_contexts.insert(name, ctx);
    }
    Ok(BuildOptions {
        target: args.target.clone(),
        build_args,
        platform,
        dockerignore: inputs.dockerignore.clone(),
        named_contexts,
    })
}

/// One `--build-context NAME=VALUE`, as buildx takes it: VALUE is `docker-image://REF`,
/// `oci-layout://PATH[:TAG|@DIGEST]` (TAG defaults to `latest`) or a directory. Returns the
/// normalised name, the context, and the directory behind a local one.
fn named_context(
    spec: &str,
    platform: &Platform,
) -> Result<(String, NamedContext, Option<PathBuf>)> {
    let bad = |why: String| anyhow!("invalid --build-context {spec:?}: {why}");
    let Some((name, value)) = spec.split_once('=') else {
        return Err(bad("expected NAME=VALUE".into()));
    };
    if name.is_empty() || value.is_empty() {
        return Err(bad("expected NAME=VALUE".into()));
    }
    // buildx parses the name as an image reference (lowercase, no spaces).
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !name.ends_with([':', '/', '.', '-', '_']);
    if !valid {
        return Err(bad(format!(
            "invalid context name {name:?}: use a stage or image name (lowercase letters, digits, '.', '_', '-', '/', ':tag')"
        )));
    }
    let key = convert::context_name(name);
    if let Some(reference) = value.strip_prefix("docker-image://") {
        if reference.is_empty() {
            return Err(bad("docker-image:// needs an image reference".into()));
        }
        reference
            .parse::<kiln_registry::Reference>()
            .map_err(|e| bad(format!("{e}")))?;
        return Ok((
            key,
            NamedContext::Image {
                reference: reference.to_string(),
            },
            None,
        ));
    }
    if let Some(rest) = value.strip_prefix("oci-layout://") {
        let (rest, digest) = match rest.split_once('@') {
            Some((p, d)) => (
                p,
                Some(
                    d.parse::<kiln_oci::Digest>()
                        .map_err(|e| bad(format!("invalid digest {d:?}: {e}")))?,
                ),
            ),
            None => (rest, None),
        };
        // The tag follows the last ':' after the last '/' (a path may hold ':' elsewhere).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(bad("oci-layout:// needs the path of an OCI layout".into()));
        }
        if tag == Some("") {
            return Err(bad("empty tag after ':'".into()));
        }
        let reference = match (digest, tag) {
            (Some(d), _) => kiln_solver::source_oci_layout::LayoutRef::Digest(d),
            (None, t) => {
                kiln_solver::source_oci_layout::LayoutRef::Tag(t.unwrap_or("latest").to_string())
            }
        };
        let path = std::path::absolute(path).map_err(|e| bad(e.to_string()))?;
        let image = kiln_solver::source_oci_layout::resolve(&path, &reference, platform)
            .map_err(|e| anyhow!("--build-context {name}: {e}"))?;
        return Ok((
            key,
            NamedContext::OciLayout {
                path: path.display().to_string(),
                digest: image.digest,
                platform: platform.clone(),
                config: Box::new(image.config),
            },
            None,
        ));
    }
    if value.starts_with("target:") {
        return Err(bad("target: contexts only exist in buildx bake".into()));
    }
    if value.contains("://") || value.starts_with("git@") {
        return Err(bad(
            "only directories, docker-image:// and oci-layout:// contexts are supported yet".into(),
        ));
    }
    let dir = PathBuf::from(value);
    if !dir.is_dir() {
        return Err(anyhow!(
            "--build-context {name}: {}: not a directory",
            dir.display()
        ));
    }
    // As BuildKit's dockerui (namedcontext.go, "local"): the directory's own .dockerignore applies.
    let ignore_file = dir.join(".dockerignore");
    let exclude = match std::fs::read_to_string(&ignore_file) {
        Ok(text) => kiln_patterns::read_ignore_file(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", ignore_file.display())),
    };
    kiln_patterns::PatternMatcher::new(&exclude)
        .map_err(|e| anyhow!("{}: {e}", ignore_file.display()))?;
    Ok((
        key.clone(),
        NamedContext::Local {
            key: format!("context:{key}"),
            exclude,
        },
        Some(dir),
    ))
}

/// SOURCE_DATE_EPOCH from `--build-arg` or, failing that, the environment.
fn source_date_epoch(opts: &BuildOptions) -> Result<Option<i64>> {
    let value = opts
        .build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| anyhow!("invalid SOURCE_DATE_EPOCH {v:?}: expected seconds since 1970")),
    }
}

/// Writes through a temp file and a rename, so readers never see half a file.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn print_outline(o: &convert::Outline) {
    println!("TARGET:      {}", o.target);
    if let Some(d) = &o.description {
        println!("DESCRIPTION: {d}");
    }
    println!();
    println!("BUILD ARG    VALUE    DESCRIPTION");
    for a in &o.args {
        println!(
            "{:<12} {:<8} {}",
            a.name,
            a.value.as_deref().unwrap_or("<unset>"),
            a.description.as_deref().unwrap_or("")
        );
    }
    println!();
    println!("STAGE        BASE                 LINE  NEEDED");
    for s in &o.stages {
        println!(
            "{:<12} {:<20} {:<5} {}",
            s.name,
            s.base,
            s.line,
            if s.needed { "yes" } else { "no" }
        );
    }
}

fn print_graph(plan: &convert::BuildPlan, format: GraphFormat) -> Result<()> {
    match format {
        GraphFormat::Json => {
            let value = serde_json::json!({ "target": plan.target, "nodes": plan.graph.nodes });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        GraphFormat::Dot => {
            println!("digraph kiln {{");
            for (id, node) in plan.graph.nodes.iter().enumerate() {
                println!(
                    "  n{id} [label={}];",
                    serde_json::to_string(&node.meta.name)?
                );
                for input in plan.graph.inputs(id) {
                    println!("  n{input} -> n{id};");
                }
            }
            println!("}}");
        }
    }
    Ok(())
}

/// A frontend error as a report the CLI renders with the line and a caret.
fn report(e: FrontendError) -> anyhow::Error {
    anyhow::Error::new(Rendered(e))
}

/// A failed solve: every failed step but the last is printed here, each pointed at its
/// Dockerfile line; the last is returned for `main` to print.
fn solve_error(file: &Arc<SourceFile>, e: SolveError) -> anyhow::Error {
    if !e.failures.is_empty() && !e.cancelled.is_empty() {
        eprintln!(
            "cancelled because of the failure: {}",
            e.cancelled.join(", ")
        );
    }
    let mut failures = e.failures.into_iter().map(|f| step_error(file, f));
    let Some(mut last) = failures.next() else {
        return anyhow!("the build was cancelled");
    };
    for next in failures {
        crate::render_error(std::mem::replace(&mut last, next));
    }
    last
}

/// A failed step pointed at its Dockerfile line.
fn step_error(file: &Arc<SourceFile>, e: StepError) -> anyhow::Error {
    match &e.location {
        Some(loc) if loc.file == file.name && loc.line > 0 => {
            let start = file.line_start(loc.line);
            let span = Span::new(start, start + file.line_text(loc.line).len());
            report(
                FrontendError::at(file, span, e.message.clone())
                    .with_help(format!("in step {}", e.op_name)),
            )
        }
        _ => anyhow!("{} (in step {})", e.message, e.op_name),
    }
}

/// A frontend error carried through anyhow to `main`, which renders it with miette.
#[derive(Debug)]
pub struct Rendered(pub FrontendError);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Rendered {}
