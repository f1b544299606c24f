//! End-to-end tests of the `vigil` binary.

mod crash;
mod server;
