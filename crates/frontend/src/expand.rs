//! Word expansion with Docker's rules (being written).
