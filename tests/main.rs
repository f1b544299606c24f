//! End-to-end tests of the `vigil` binary.

mod cli;
mod crash;
mod quic;
mod server;
mod side_store;
