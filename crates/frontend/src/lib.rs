//! kiln's Dockerfile frontend: reads a Dockerfile and its `.dockerignore`, parses them into a
//! tree with positions, builds typed instructions, expands words with Docker's rules, resolves
//! stages and ARG/ENV scopes, and converts the stages the target needs into a build graph
//! (`kiln_solver::Graph`) plus the image config the target will carry.
//!
//! It reads only its inputs: it never touches the build's file system and knows nothing of how
//! steps run; base images are resolved through the [`ImageResolver`] the caller passes in.

pub mod convert;
pub mod diagnostic;
pub mod expand;
pub mod instructions;
pub mod parser;

pub use convert::{plan, BuildOptions, BuildPlan, ImageResolver, ResolvedImage};
pub use diagnostic::{Error, SourceFile, Span, Warning};
