//! `vigil token`, `vigil user`, `vigil audit`: manage the side store directly (SQLite in
//! the data directory, or PostgreSQL with `--relational-url`), beside a running server
//! or without one. What they do is audited with the actor `cli:<os user>`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use comfy_table::Table;
use vigil_relational::{Db, Principal, Role};

/// Where the side store is.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// Data directory whose `vigil.db` to use.
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "./vigil-data")]
    data_dir: PathBuf,
    /// PostgreSQL side store instead (`postgres://…`).
    #[arg(long, env = "VIGIL_RELATIONAL_URL")]
    relational_url: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        /// admin, analyst, viewer, auditor or agent.
        #[arg(long)]
        role: String,
        /// A name to recognise it by [default: "ROLE token"].
        #[arg(long)]
        name: Option<String>,
        /// Expires after this long, e.g. `90d` [default: never].
        #[arg(long)]
        expires_in: Option<humantime::Duration>,
        /// The user it acts for (id) [default: a service user of its own].
        #[arg(long)]
        user: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user; the password is read from stdin (prompted on a terminal).
    Add {
        #[arg(long)]
        email: String,
        /// Roles, comma-separated: admin, analyst, viewer, auditor, agent.
        #[arg(long, value_delimiter = ',', required = true)]
        role: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the audit log's hash chain; exits 1 if a row was edited, deleted or reordered.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn actor() -> Principal {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Principal {
        actor: format!("cli:{user}"),
        ..Principal::system()
    }
}

fn with_store<T>(
    store: &StoreArgs,
    f: impl AsyncFnOnce(&Db) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if store.relational_url.is_none() && !store.data_dir.exists() {
            bail!(
                "data directory {} does not exist; pass --data-dir (or --relational-url)",
                store.data_dir.display()
            );
        }
        let db = Db::open(&store.data_dir, store.relational_url.as_deref())
            .await
            .context("opening the side store")?;
        let out = f(&db).await;
        db.close().await;
        out
    })
}

pub(crate) fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            role,
            name,
            expires_in,
            user,
            store,
        } => {
            let role: Role = role.parse()?;
            let expires_at = expires_in
                .map(|d| chrono::Duration::from_std(*d).map(|d| chrono::Utc::now() + d))
                .transpose()
                .context("--expires-in is too long")?;
            let name = name.unwrap_or_else(|| format!("{role} token"));
            let (token, secret) = with_store(&store, async |db| {
                Ok(db
                    .create_token(&actor(), &name, role, user, expires_at, None)
                    .await?)
            })?;
            let mut table = Table::new();
            table.set_header(["id", "name", "role", "user", "expires"]);
            table.add_row([
                token.id.to_string(),
                token.name,
                token.role.to_string(),
                token.user_id.map(|u| u.to_string()).unwrap_or_default(),
                token
                    .expires_at
                    .map(|e| e.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
            ]);
            eprintln!("{table}");
            eprintln!("The secret is shown once; keep it:");
            println!("{secret}");
            Ok(())
        }
        TokenCommand::Revoke { id, store } => {
            with_store(&store, async |db| Ok(db.revoke_token(&actor(), id).await?))?;
            eprintln!(
                "token {id} revoked (a running server notices within {} s)",
                vigil_api::auth::TOKEN_CACHE_TTL.as_secs()
            );
            Ok(())
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password (at least 8 characters; shown as typed): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub(crate) fn user(cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add {
        email,
        role,
        name,
        store,
    } = cmd;
    let roles = role
        .iter()
        .map(|r| r.trim().parse::<Role>())
        .collect::<Result<Vec<_>, _>>()?;
    let password = read_password()?;
    let user = with_store(&store, async |db| {
        Ok(db
            .create_user(&actor(), &email, &password, name.as_deref(), &roles)
            .await?)
    })?;
    let mut table = Table::new();
    table.set_header(["id", "email", "roles"]);
    table.add_row([
        user.id.to_string(),
        user.email,
        user.roles
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ]);
    println!("{table}");
    Ok(())
}

pub(crate) fn audit(cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify { store } = cmd;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "checking the audit chain {bar:40} {pos}/{len} rows ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = with_store(&store, async |db| {
        Ok(db
            .verify_audit_with(|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await?)
    })?;
    bar.finish_and_clear();
    let mut table = Table::new();
    table.set_header(["rows", "chain", "first bad row", "problem", "head hash"]);
    table.add_row([
        report.rows.to_string(),
        if report.ok { "intact" } else { "BROKEN" }.to_string(),
        report
            .first_bad_id
            .map(|i| i.to_string())
            .unwrap_or_default(),
        report.problem.clone().unwrap_or_default(),
        report.head_hash.clone(),
    ]);
    println!("{table}");
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
