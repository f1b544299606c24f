//! `vigil`: the Vigil server and its command-line tools.

mod admin_cmd;
mod config;
mod query_cmd;
mod serve;
mod ship;

use clap::{Parser, Subcommand};

/// mimalloc: faster than glibc malloc for the many short-lived buffers of decoding and
/// flushing, and it hands freed memory back to the OS sooner. Built without its transparent
/// huge page advice (`no_thp`): the kernel zeroes a whole 2 MiB page on the first touch of
/// any byte in it, which took 7–11 % of a fresh server's CPU while loading and left its
/// resident memory 5–10 % higher, for no measurable gain in rows/s (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "High-throughput time-series ingest and analytics engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (HTTP and QUIC ingest, SQL) on a data directory.
    Serve(Box<config::ServeArgs>),
    /// Run SQL on a running server and print the result.
    Query(query_cmd::QueryArgs),
    /// Ship log lines, events or line protocol to a server over QUIC (the agent).
    Ship(Box<ship::ShipArgs>),
    /// Create or revoke API tokens.
    #[command(subcommand)]
    Token(admin_cmd::TokenCommand),
    /// Add users.
    #[command(subcommand)]
    User(admin_cmd::UserCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(admin_cmd::AuditCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Query(args) => query_cmd::run(args),
        Command::Ship(args) => ship::run(*args),
        Command::Token(cmd) => admin_cmd::token(cmd),
        Command::User(cmd) => admin_cmd::user(cmd),
        Command::Audit(cmd) => admin_cmd::audit(cmd),
    }
}
