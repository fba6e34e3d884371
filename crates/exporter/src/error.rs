//! The exporter's error type.

use kiln_cache::ContentError;
use std::io;
use std::path::PathBuf;

/// Why writing a layer, an image or an output failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("could not write {what}: {source}")]
    Write {
        what: &'static str,
        source: io::Error,
    },
    #[error("could not add {} to the layer: {source}", path.display())]
    Archive { path: PathBuf, source: io::Error },
    #[error("the image history has {history} entries that create a layer, but {layers} layers were given")]
    HistoryMismatch { history: usize, layers: usize },
    #[error("{} exists and is not a directory, so the output directory cannot be written there", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is a directory, so the output file cannot be written there", path.display())]
    IsADirectory { path: PathBuf },
    #[error("the {exporter} exporter needs {needs}, but was given {given}")]
    WrongInput {
        exporter: &'static str,
        needs: &'static str,
        given: &'static str,
    },
}

impl Error {
    /// A closure for `map_err` that names what was being done to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
