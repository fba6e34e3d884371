//! Path patterns as Docker matches them (being written).
