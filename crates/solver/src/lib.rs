//! kiln's solver: the build graph ([`Op`]), cache keys, the scheduler that runs the graph in
//! parallel, sources (images, local directories, HTTP), file operations and the executors that
//! run processes. It knows nothing of Dockerfile syntax nor of output formats.

pub mod cachekey;
pub mod cachemount;
pub mod contenthash;
pub mod executor;
pub mod explain;
pub mod fileop;
pub mod op;
mod scheduler;
pub mod solve;
mod source_http;
pub mod source_oci_layout;

pub use op::*;
pub use solve::{
    default_jobs, human_bytes, Event, Layer, LayerBlob, Secrets, SolveError, SolveRequest, Solved,
    Solver, StepError,
};
