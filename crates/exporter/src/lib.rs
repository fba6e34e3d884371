//! kiln's exporter: turns snapshots into layer tars and images, and writes them out (being written).
