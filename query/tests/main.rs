//! Integration tests of `vigil-query`: the SQL suite in `tests/slt/*.slt`, and tests of
//! the engine's behaviour under queries (limits, file lifetime, compaction).

mod cache;
mod common;
mod lifecycle;
mod limits;
mod newest_first;
mod plan;
mod slt;
