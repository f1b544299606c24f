//! `vigil query`: runs SQL on a running server and prints the result.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;

/// Flags of `vigil query`.
#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// The SQL to run; `-` reads it from stdin.
    pub(crate) sql: String,
    /// Server address.
    #[arg(long, env = "VIGIL_SERVER", default_value = "http://127.0.0.1:7070")]
    pub(crate) server: String,
    /// Output: `table` (readable), `csv` or `json` (an array of row objects).
    #[arg(long, default_value = "table")]
    pub(crate) format: OutputFormat,
    /// API token [default: the admin token of --data-dir].
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Data directory of a server on this machine, whose `admin.token` to use (and, for
    /// an `https://` server, whose certificate to trust unless --ca is given).
    #[arg(long, env = "VIGIL_DATA_DIR", default_value = "./vigil-data")]
    pub(crate) data_dir: std::path::PathBuf,
    /// Trust an `https://` server whose certificate is in this PEM file (or was issued by
    /// a CA in it) [default: DATA_DIR/tls/server.crt].
    #[arg(long, env = "VIGIL_CA")]
    pub(crate) ca: Option<std::path::PathBuf>,
}

/// An HTTP client for `server`: for `https://`, trusting --ca or the data directory's
/// certificate (and nothing else).
fn client(args: &QueryArgs) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    if !args.server.starts_with("https://") {
        return builder.build().context("creating the HTTP client");
    }
    let ca = args
        .ca
        .clone()
        .unwrap_or_else(|| vigil_api::quic::self_signed_cert_path(&args.data_dir));
    let pem = std::fs::read(&ca).with_context(|| {
        format!(
            "cannot read the certificate to trust for {} ({}); pass --ca, or --data-dir of \
             the server",
            args.server,
            ca.display()
        )
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .with_context(|| format!("{}: no PEM certificate in the file", ca.display()))?;
    let mut builder = builder.tls_built_in_root_certs(false);
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("creating the HTTPS client")
}

/// The token of `--token`, else the data directory's admin token.
fn token(args: &QueryArgs) -> anyhow::Result<String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    let path = vigil_api::auth::admin_token_path(&args.data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) => bail!(
            "no token: pass --token (or VIGIL_TOKEN), or --data-dir of the server to use its \
             admin token ({}: {e})",
            path.display()
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub(crate) fn run(args: QueryArgs) -> anyhow::Result<()> {
    let sql = if args.sql == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading SQL from stdin")?
    } else {
        args.sql.clone()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let token = token(&args)?;
    let started = Instant::now();
    let client = client(&args)?;
    let batches = runtime.block_on(fetch(&client, &args.server, &token, &sql))?;
    let elapsed = started.elapsed();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut out = std::io::stdout().lock();
    match args.format {
        OutputFormat::Table => {
            if !batches.is_empty() && batches[0].num_columns() > 0 {
                let table = arrow::util::pretty::pretty_format_batches(&batches)
                    .context("formatting the result")?;
                writeln!(out, "{table}")?;
            }
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &batches {
                w.write(b).context("writing CSV")?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).context("writing JSON")?;
            w.finish().context("writing JSON")?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    eprintln!(
        "({rows} row{}, {:.3} s)",
        if rows == 1 { "" } else { "s" },
        elapsed.as_secs_f64()
    );
    Ok(())
}

async fn fetch(
    client: &reqwest::Client,
    server: &str,
    token: &str,
    sql: &str,
) -> anyhow::Result<Vec<RecordBatch>> {
    let url = format!("{}/api/v1/query", server.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "sql": sql, "format": "arrow" }))
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{message} (HTTP {})", status.as_u16());
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("decoding the answer")?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .context("decoding the answer (the query may have failed midway)")
}
