//! The command line, declared with clap: one struct per subcommand, flags named as buildx
//! names them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// kiln: a Dockerfile build engine.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// State directory: cache, snapshots, content store (default /var/lib/kiln as root).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// Remove the build cache (step results, cache mounts, blobs no local image needs); local
    /// images stay.
    Prune(PruneArgs),
    /// List the images of kiln's local image store.
    Images(ImagesArgs),
    /// Remove images from the local image store.
    Rmi(RmiArgs),
    /// Push an image of the local image store to its registry.
    Push(PushArgs),
    /// Write an image of the local image store to an archive.
    Save(SaveArgs),
}

/// `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print only the image digests.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full digests.
    #[arg(long)]
    pub no_trunc: bool,
}

/// `kiln rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Image names.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `kiln push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image name in the local store; also where it is pushed, unless DEST is given.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Push to this reference instead.
    #[arg(value_name = "DEST")]
    pub dest: Option<String>,
    /// Registry reached over plain HTTP (`host[:port]`); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `kiln save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Image name in the local store.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Archive to write (`-` for stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format: a docker-archive (`docker load`) or an OCI layout tar.
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    Docker,
    Oci,
}

/// `kiln prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {}

/// `kiln build`, with buildx's flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context directory, or `-` to read a Dockerfile from stdin with no context.
    #[arg(value_name = "PATH")]
    pub context: String,

    /// Name of the Dockerfile (default: PATH/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,

    /// Name and optionally a tag (`name:tag`) for the image.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Stage to build.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,

    /// Additional build context (`NAME=PATH|oci-layout://…|docker-image://…`).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Secret to expose to the build (`id=ID,src=PATH` or `id=ID,env=VAR`).
    #[arg(long, value_name = "SPEC")]
    pub secret: Vec<String>,

    /// SSH agent socket to expose to the build (`default` for $SSH_AUTH_SOCK, or `ID=SOCKET`).
    #[arg(long, value_name = "default|ID=SOCKET")]
    pub ssh: Vec<String>,

    /// Output destination (`type=oci,dest=PATH[,tar=false]`, …).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Shorthand for `--output type=image,push=true` (named by `-t`).
    #[arg(long)]
    pub push: bool,

    /// Shorthand for `--output type=docker`: load the image into docker or podman.
    #[arg(long)]
    pub load: bool,

    /// Image config label (`KEY=VALUE`).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Image annotation (`[TYPE:]KEY=VALUE`, TYPE manifest or manifest-descriptor).
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,

    /// External cache sources.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Cache export destinations.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Do not use the cache when building.
    #[arg(long)]
    pub no_cache: bool,

    /// Do not use the cache for the steps of these stages (names, case-insensitive).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Type of progress output.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    /// Target platform (`linux/amd64`, …).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build result metadata (JSON) to this file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// How many steps may run at once.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// What to do instead of building: `build` (the default) or `outline`.
    #[arg(long, value_name = "METHOD", default_value = "build")]
    pub call: String,

    /// What runs RUN steps: the builtin namespace executor, runc or crun.
    #[arg(long, env = "KILN_RUNTIME", default_value = "builtin", value_parser = ["builtin", "runc", "crun"])]
    pub runtime: String,

    /// Registry reached over plain HTTP (`host[:port]`); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,

    /// Print the build graph the frontend made (json or dot) instead of building.
    #[arg(long = "print-graph", value_enum, value_name = "FORMAT")]
    pub print_graph: Option<GraphFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Tty,
    Plain,
    Rawjson,
    Quiet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Json,
    Dot,
}
