//! Settings of `vigil serve`: flags, each with a `VIGIL_*` environment variable, over an
//! optional TOML file, over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use serde::Deserialize;
use vigil_api::HttpConfig;
use vigil_api::quic::QuicConfig;
use vigil_engine::{EngineConfig, EventsConfig};
use vigil_query::{LifecycleConfig, QueryConfig, Retention};
use vigil_wal::{Durability, RecoveryMode, WalConfig};

/// Flags of `vigil serve`. Unset flags fall back to the config file, then the defaults.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file; its keys are the flag names with `_` for `-`.
    #[arg(long, env = "VIGIL_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory [default: ./vigil-data].
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7070].
    #[arg(long, env = "VIGIL_HTTP_ADDR")]
    pub(crate) http_addr: Option<SocketAddr>,
    /// Serve the HTTP API over TLS (HTTPS, TLS 1.3) with the QUIC certificate
    /// (--quic-cert, or the self-signed one in DATA_DIR/tls/).
    #[arg(long, env = "VIGIL_HTTP_TLS")]
    pub(crate) http_tls: bool,
    /// QUIC ingest listen address (UDP) [default: 127.0.0.1:7071].
    #[arg(long, env = "VIGIL_QUIC_ADDR")]
    pub(crate) quic_addr: Option<SocketAddr>,
    /// TLS certificate chain (PEM) of QUIC and, with --http-tls, of HTTPS [default: a
    /// self-signed one created in DATA_DIR/tls/].
    #[arg(long, env = "VIGIL_QUIC_CERT", requires = "quic_key")]
    pub(crate) quic_cert: Option<PathBuf>,
    /// Private key (PEM) of --quic-cert.
    #[arg(long, env = "VIGIL_QUIC_KEY", requires = "quic_cert")]
    pub(crate) quic_key: Option<PathBuf>,
    /// Require QUIC clients to present a certificate signed by this CA (PEM).
    #[arg(long, env = "VIGIL_QUIC_CLIENT_CA")]
    pub(crate) quic_client_ca: Option<PathBuf>,
    /// A token agents may write with, besides DATA_DIR/admin.token. Repeatable.
    #[arg(long = "token", env = "VIGIL_TOKENS", value_delimiter = ',')]
    pub(crate) tokens: Vec<String>,
    /// Largest write request body, after gzip decompression [default: 64MiB].
    #[arg(long, env = "VIGIL_MAX_BODY_SIZE")]
    pub(crate) max_body_size: Option<ByteSize>,
    /// WAL durability: `fsync` (acknowledge after fsync) or `none` (benchmarks only:
    /// acknowledged writes can be lost) [default: fsync].
    #[arg(long, env = "VIGIL_WAL_DURABILITY")]
    pub(crate) wal_durability: Option<String>,
    /// WAL recovery: `strict` (stop on corruption) or `skip-corrupt` (skip it, losing the
    /// records in it) [default: strict].
    #[arg(long, env = "VIGIL_WAL_RECOVERY")]
    pub(crate) wal_recovery: Option<String>,
    /// WAL segment size [default: 64MiB].
    #[arg(long, env = "VIGIL_WAL_SEGMENT_SIZE")]
    pub(crate) wal_segment_size: Option<ByteSize>,
    /// Flush the write buffer to Parquet at this size [default: 64MiB].
    #[arg(long, env = "VIGIL_FLUSH_SIZE")]
    pub(crate) flush_size: Option<ByteSize>,
    /// Flush the write buffer when its oldest row is this old [default: 5m].
    #[arg(long, env = "VIGIL_FLUSH_AGE")]
    pub(crate) flush_age: Option<humantime::Duration>,
    /// Refuse writes with 503 while this much data waits for a flush [default: 256MiB].
    #[arg(long, env = "VIGIL_MAX_BUFFER_SIZE")]
    pub(crate) max_buffer_size: Option<ByteSize>,
    /// Writes decoded at once; more wait their turn in arrival order [default: the number
    /// of cores].
    #[arg(long, env = "VIGIL_DECODERS")]
    pub(crate) decoders: Option<usize>,
    /// Memory all running queries may use together; past it a query spills or fails
    /// with "resources exhausted" [default: 512MiB].
    #[arg(long, env = "VIGIL_QUERY_MEMORY")]
    pub(crate) query_memory: Option<ByteSize>,
    /// Cancel a query running longer than this [default: 60s].
    #[arg(long, env = "VIGIL_QUERY_TIMEOUT")]
    pub(crate) query_timeout: Option<humantime::Duration>,
    /// Fail a query whose result has more rows than this [default: 1000000].
    #[arg(long, env = "VIGIL_QUERY_MAX_ROWS")]
    pub(crate) query_max_rows: Option<usize>,
    /// Run a query whose scans read fewer rows than this in one partition (thread); 0 runs
    /// every query on all cores [default: 524288].
    #[arg(long, env = "VIGIL_QUERY_PARALLEL_ROWS")]
    pub(crate) query_parallel_rows: Option<u64>,
    /// Drop partitions (days) older than this, e.g. `30d` [default: keep forever].
    #[arg(long, env = "VIGIL_RETENTION")]
    pub(crate) retention: Option<humantime::Duration>,
    /// Retention of one table, overriding --retention: `TABLE=30d`, or `TABLE=forever`.
    /// Repeatable.
    #[arg(
        long = "retention-table",
        env = "VIGIL_RETENTION_TABLE",
        value_delimiter = ','
    )]
    pub(crate) retention_table: Vec<String>,
    /// Width of the time slices new metric tables sort by first (each its own Parquet
    /// row groups, sorted by series then time within): a query over the last minutes reads
    /// one slice; wider slices compress better. `0s` sorts by series then time alone.
    /// Fixed per table at its first flush [default: 1h].
    #[arg(long, env = "VIGIL_TIME_SLICE")]
    pub(crate) time_slice: Option<humantime::Duration>,
    /// How often compaction and retention look for work [default: 60s].
    #[arg(long, env = "VIGIL_LIFECYCLE_INTERVAL")]
    pub(crate) lifecycle_interval: Option<humantime::Duration>,
    /// Compact today's partition once it has this many files (earlier days: from two)
    /// [default: 8].
    #[arg(long, env = "VIGIL_COMPACTION_MAX_FILES")]
    pub(crate) compaction_max_files: Option<usize>,
    /// Most series per table kept in the last-value cache, which answers
    /// `DISTINCT ON (tags) ... ORDER BY tags, time DESC`; 0 turns it off [default: 250000].
    #[arg(long, env = "VIGIL_LAST_VALUE_SERIES")]
    pub(crate) last_value_series: Option<usize>,
    /// Group event messages into templates and fingerprints (`false`: template = message,
    /// fingerprint = its hash) [default: true].
    #[arg(long, env = "VIGIL_GROUPING")]
    pub(crate) grouping: Option<bool>,
    /// An event equal to one stored this recently (same `event_id`, or same content) is
    /// not stored again; `0s` turns deduplication off [default: 15m].
    #[arg(long, env = "VIGIL_DEDUP_WINDOW")]
    pub(crate) dedup_window: Option<humantime::Duration>,
    /// Most dedup keys kept in memory, oldest forgotten first (about 64 bytes each)
    /// [default: 1000000].
    #[arg(long, env = "VIGIL_DEDUP_MAX_KEYS")]
    pub(crate) dedup_max_keys: Option<usize>,
    /// Side store on PostgreSQL (`postgres://user@host/db`) instead of SQLite in
    /// DATA_DIR/vigil.db [default: SQLite].
    #[arg(long, env = "VIGIL_RELATIONAL_URL")]
    pub(crate) relational_url: Option<String>,
    /// Log filter, e.g. `info` or `vigil_engine=debug` [default: info].
    #[arg(long, env = "VIGIL_LOG")]
    pub(crate) log: Option<String>,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    http_addr: Option<SocketAddr>,
    http_tls: Option<bool>,
    quic_addr: Option<SocketAddr>,
    quic_cert: Option<PathBuf>,
    quic_key: Option<PathBuf>,
    quic_client_ca: Option<PathBuf>,
    #[serde(default)]
    tokens: Vec<String>,
    max_body_size: Option<ByteSize>,
    wal_durability: Option<String>,
    wal_recovery: Option<String>,
    wal_segment_size: Option<ByteSize>,
    flush_size: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    flush_age: Option<Duration>,
    max_buffer_size: Option<ByteSize>,
    decoders: Option<usize>,
    query_memory: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    query_timeout: Option<Duration>,
    query_max_rows: Option<usize>,
    query_parallel_rows: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    /// Table → `30d` or `forever`.
    #[serde(default)]
    retention_tables: std::collections::HashMap<String, String>,
    #[serde(default, with = "humantime_serde")]
    time_slice: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    lifecycle_interval: Option<Duration>,
    compaction_max_files: Option<usize>,
    last_value_series: Option<usize>,
    grouping: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    dedup_window: Option<Duration>,
    dedup_max_keys: Option<usize>,
    relational_url: Option<String>,
    log: Option<String>,
}

/// Everything `vigil serve` needs, resolved.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) http_addr: SocketAddr,
    /// HTTPS instead of plain HTTP, with the QUIC certificate.
    pub(crate) http_tls: bool,
    pub(crate) quic: QuicConfig,
    /// Tokens configured besides the admin token.
    pub(crate) tokens: Vec<String>,
    pub(crate) engine: EngineConfig,
    pub(crate) http: HttpConfig,
    pub(crate) query: QueryConfig,
    pub(crate) lifecycle: LifecycleConfig,
    /// PostgreSQL URL of the side store; SQLite in the data directory when none.
    pub(crate) relational_url: Option<String>,
    pub(crate) log: String,
}

impl ServeArgs {
    pub(crate) fn resolve(self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let engine_defaults = EngineConfig::default();
        let http_defaults = HttpConfig::default();
        let wal = WalConfig {
            durability: parse_durability(self.wal_durability.or(file.wal_durability).as_deref())?,
            recovery: parse_recovery(self.wal_recovery.or(file.wal_recovery).as_deref())?,
            segment_size: self
                .wal_segment_size
                .or(file.wal_segment_size)
                .map_or(WalConfig::default().segment_size, |b| b.as_u64()),
            ..WalConfig::default()
        };
        let bytes = |flag: Option<ByteSize>, file: Option<ByteSize>, default: usize| {
            flag.or(file).map_or(default, |b| b.as_u64() as usize)
        };
        let engine = EngineConfig {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or(engine_defaults.data_dir),
            wal,
            flush_bytes: bytes(
                self.flush_size,
                file.flush_size,
                engine_defaults.flush_bytes,
            ),
            flush_age: self
                .flush_age
                .map(Into::into)
                .or(file.flush_age)
                .unwrap_or(engine_defaults.flush_age),
            max_buffer_bytes: bytes(
                self.max_buffer_size,
                file.max_buffer_size,
                engine_defaults.max_buffer_bytes,
            ),
            decoders: self
                .decoders
                .or(file.decoders)
                .unwrap_or(engine_defaults.decoders),
            background_flush: true,
            row_group_rows: engine_defaults.row_group_rows,
            time_slice: match self.time_slice.map(Into::into).or(file.time_slice) {
                Some(w) if w.is_zero() => None,
                Some(w) => Some(w),
                None => engine_defaults.time_slice,
            },
            last_value_max_series: self
                .last_value_series
                .or(file.last_value_series)
                .unwrap_or(engine_defaults.last_value_max_series),
            events: EventsConfig {
                grouping: self
                    .grouping
                    .or(file.grouping)
                    .unwrap_or(engine_defaults.events.grouping),
                dedup_window: self
                    .dedup_window
                    .map(Into::into)
                    .or(file.dedup_window)
                    .unwrap_or(engine_defaults.events.dedup_window),
                dedup_max_keys: self
                    .dedup_max_keys
                    .or(file.dedup_max_keys)
                    .unwrap_or(engine_defaults.events.dedup_max_keys),
                ..engine_defaults.events.clone()
            },
        };
        engine.validate().context("invalid configuration")?;
        let http = HttpConfig {
            max_body_bytes: bytes(
                self.max_body_size,
                file.max_body_size,
                http_defaults.max_body_bytes,
            ),
            ..http_defaults
        };
        if http.max_body_bytes == 0 {
            bail!("max-body-size must be positive");
        }
        let qd = QueryConfig::default();
        let query = QueryConfig {
            memory_limit: bytes(self.query_memory, file.query_memory, qd.memory_limit),
            timeout: self
                .query_timeout
                .map(Into::into)
                .or(file.query_timeout)
                .unwrap_or(qd.timeout),
            max_rows: self
                .query_max_rows
                .or(file.query_max_rows)
                .unwrap_or(qd.max_rows),
            parallel_rows: self
                .query_parallel_rows
                .or(file.query_parallel_rows)
                .unwrap_or(qd.parallel_rows),
            ..qd
        };
        if query.max_rows == 0 || query.timeout.is_zero() || query.memory_limit == 0 {
            bail!("query-max-rows, query-timeout and query-memory must be positive");
        }
        let mut retention = Retention {
            default: self.retention.map(Into::into).or(file.retention),
            tables: Default::default(),
        };
        let per_table = file
            .retention_tables
            .into_iter()
            .chain(self.retention_table.iter().map(|spec| {
                let (t, d) = spec.split_once('=').unwrap_or((spec, ""));
                (t.to_string(), d.to_string())
            }));
        for (table, ttl) in per_table {
            let ttl = match ttl.trim() {
                "forever" | "none" => None,
                text => Some(humantime::parse_duration(text).with_context(|| {
                    format!("invalid retention for table '{table}': '{text}' (expected e.g. 30d or forever)")
                })?),
            };
            retention.tables.insert(table, ttl);
        }
        let ld = LifecycleConfig::default();
        let lifecycle = LifecycleConfig {
            interval: self
                .lifecycle_interval
                .map(Into::into)
                .or(file.lifecycle_interval)
                .unwrap_or(ld.interval),
            max_files: self
                .compaction_max_files
                .or(file.compaction_max_files)
                .unwrap_or(ld.max_files),
            retention,
            ..ld
        };
        if lifecycle.interval.is_zero() {
            bail!("lifecycle-interval must be positive");
        }
        let quic = QuicConfig {
            addr: self
                .quic_addr
                .or(file.quic_addr)
                .unwrap_or(QuicConfig::default().addr),
            cert: self.quic_cert.or(file.quic_cert),
            key: self.quic_key.or(file.quic_key),
            client_ca: self.quic_client_ca.or(file.quic_client_ca),
            ..QuicConfig::default()
        };
        if quic.cert.is_some() != quic.key.is_some() {
            bail!("quic-cert and quic-key go together");
        }
        let mut tokens = file.tokens;
        tokens.extend(self.tokens);
        Ok(ServeConfig {
            quic,
            tokens,
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            http_tls: self.http_tls || file.http_tls.unwrap_or(false),
            engine,
            http,
            query,
            lifecycle,
            relational_url: self.relational_url.or(file.relational_url),
            log: self.log.or(file.log).unwrap_or_else(|| "info".into()),
        })
    }
}

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn parse_durability(s: Option<&str>) -> anyhow::Result<Durability> {
    match s {
        None | Some("fsync") => Ok(Durability::Fsync),
        Some("none") => Ok(Durability::None),
        Some(other) => bail!("invalid wal-durability '{other}': expected fsync or none"),
    }
}

fn parse_recovery(s: Option<&str>) -> anyhow::Result<RecoveryMode> {
    match s {
        None | Some("strict") => Ok(RecoveryMode::Strict),
        Some("skip-corrupt") => Ok(RecoveryMode::SkipCorrupt),
        Some(other) => bail!("invalid wal-recovery '{other}': expected strict or skip-corrupt"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:7070");
        assert_eq!(c.engine.data_dir, PathBuf::from("vigil-data"));
        assert_eq!(c.http.max_body_bytes, 64 * 1024 * 1024);
        assert_eq!(c.engine.wal.durability, Durability::Fsync);
        assert_eq!(c.query.parallel_rows, 524_288);
        assert!(!c.http_tls, "plain HTTP on loopback by default");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.toml");
        std::fs::write(
            &path,
            "data_dir = \"/tmp/x\"\nhttp_addr = \"127.0.0.1:9000\"\nhttp_tls = true\nflush_age = \"30s\"\nmax_body_size = \"1MiB\"\nquery_parallel_rows = 0\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            http_addr: Some("127.0.0.1:9999".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.http_addr.port(), 9999);
        assert!(c.http_tls, "http_tls from the file");
        assert_eq!(c.engine.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.engine.flush_age, Duration::from_secs(30));
        assert_eq!(c.http.max_body_bytes, 1024 * 1024);
        assert_eq!(c.query.parallel_rows, 0);
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
        let c = ServeArgs {
            retention: Some("30d".parse().unwrap()),
            retention_table: vec!["cpu=7d".into(), "events=forever".into()],
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let r = &c.lifecycle.retention;
        assert_eq!(r.ttl("mem"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(r.ttl("cpu"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(r.ttl("events"), None);
        let bad = ServeArgs {
            retention_table: vec!["cpu=soon".into()],
            ..ServeArgs::default()
        };
        assert!(format!("{:#}", bad.resolve().unwrap_err()).contains("cpu"));
        let bad = ServeArgs {
            wal_durability: Some("maybe".into()),
            ..ServeArgs::default()
        };
        assert!(bad.resolve().is_err());
    }
}
