//! kiln's solver: the build graph ([`Op`]), cache keys, the scheduler that runs the graph in
//! parallel, sources (images, local directories, HTTP), file operations and the executors that
//! run processes. It knows nothing of Dockerfile syntax nor of output formats.

pub mod op;

pub use op::*;
