//! Router tests through `tower::ServiceExt::oneshot`: no sockets.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil_api::auth::Authenticator;
use vigil_api::{AppState, HttpConfig, router};
use vigil_engine::{Engine, EngineConfig, MockTimeProvider};
use vigil_relational::{Db, Principal, Role};

mod analytics;
mod query;
mod quic;
mod store;
mod tls;

/// The router over `engine`, with a query engine of default limits; requests without
/// a token are sent with an admin token.
async fn app_for(engine: &Arc<Engine>, http: HttpConfig) -> Router {
    app_with(engine, http, vigil_query::QueryConfig::default()).await
}

async fn app_with(
    engine: &Arc<Engine>,
    http: HttpConfig,
    query: vigil_query::QueryConfig,
) -> Router {
    let (app, _, admin) = secured_with(engine, http, query).await;
    app.layer(axum::middleware::map_request(
        move |mut req: Request<Body>| {
            let admin = admin.clone();
            async move {
                if !req.headers().contains_key(header::AUTHORIZATION) {
                    let value = format!("Bearer {admin}").parse().unwrap();
                    req.headers_mut().insert(header::AUTHORIZATION, value);
                }
                req
            }
        },
    ))
}

/// The side store backends the API is tested on.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    /// A new database on the server of `DATABASE_URL` (`scripts/test` sets it).
    Postgres,
}

/// A new, empty database on the PostgreSQL server of `DATABASE_URL`.
async fn fresh_postgres() -> Db {
    use sqlx::{Connection, Executor};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: run the tests with scripts/test (or scripts/with-postgres)");
    let name = format!(
        "vigil_api_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    if name.ends_with("_0") {
        // Databases left by earlier runs (other processes) on a long-lived server.
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname LIKE 'vigil\\_api\\_%' AND datname NOT LIKE $1",
        )
        .bind(format!("vigil\\_api\\_{}\\_%", std::process::id()))
        .fetch_all(&mut admin)
        .await
        .unwrap_or_default();
        for db in old {
            let _ = admin
                .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                .await;
        }
    }
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url.as_str(), String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Db::open_postgres(&format!("{base}/{name}{query}"))
        .await
        .unwrap()
}

/// The router as served (every request needs a token), its side store (SQLite in the
/// engine's data directory) and an admin token.
async fn secured_with(
    engine: &Arc<Engine>,
    http: HttpConfig,
    query: vigil_query::QueryConfig,
) -> (Router, Db, String) {
    secured_on(engine, http, query, Backend::Sqlite).await
}

/// [`secured_with`] on a given backend.
async fn secured_on(
    engine: &Arc<Engine>,
    http: HttpConfig,
    query: vigil_query::QueryConfig,
    backend: Backend,
) -> (Router, Db, String) {
    let query = Arc::new(vigil_query::QueryEngine::new(Arc::clone(engine), query).unwrap());
    let db = match backend {
        Backend::Sqlite => Db::open_sqlite(engine.data_dir()).await.unwrap(),
        Backend::Postgres => fresh_postgres().await,
    };
    let (_, admin) = db
        .create_token(
            &Principal::system(),
            "test admin",
            Role::Admin,
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let auth = Arc::new(Authenticator::new(db.clone()));
    (
        router(AppState::new(Arc::clone(engine), query, auth, http)),
        db,
        admin,
    )
}

struct Fixture {
    app: Router,
    engine: Arc<Engine>,
    /// Last: fields drop in order, and the engine's last flush writes into this directory.
    _dir: tempfile::TempDir,
}

/// An engine on `dir` without a background flusher, its clock at 2023-11-14.
fn test_engine(dir: &std::path::Path) -> Arc<Engine> {
    let config = EngineConfig {
        data_dir: dir.to_path_buf(),
        background_flush: false,
        ..EngineConfig::default()
    };
    Arc::new(
        Engine::open(
            config,
            Arc::new(MockTimeProvider::new(1_700_000_000_000_000_000)),
        )
        .unwrap(),
    )
}

async fn fixture(http: HttpConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let engine = test_engine(dir.path());
    let app = app_for(&engine, http).await;
    Fixture {
        _dir: dir,
        app,
        engine,
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).body(body.into()).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn native_write_answers_row_count() {
    let f = fixture(HttpConfig::default()).await;
    let (status, _, body) = send(
        &f.app,
        post(
            "/api/v1/write?precision=s",
            "cpu,host=a u=1 1700000000\ncpu u=2 1700000001",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"rows":2}"#);
    assert_eq!(f.engine.stats().buffered_rows, 2);
}

#[tokio::test]
async fn influx_routes_take_their_parameters_and_gzip() {
    let f = fixture(HttpConfig::default()).await;
    let req = Request::post("/write?db=telegraf&rp=autogen&precision=ms&u=user&p=secret")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(b"mem,host=a used=1i 1700000000000\n")))
        .unwrap();
    let (status, _, body) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = send(
        &f.app,
        post(
            "/api/v2/write?org=o&bucket=b&precision=ns",
            "mem,host=b used=2i",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(f.engine.stats().buffered_rows, 2);
}

#[tokio::test]
async fn bad_lines_get_400_with_line_numbers_and_nothing_is_stored() {
    let f = fixture(HttpConfig::default()).await;
    let (status, _, body) = send(
        &f.app,
        post("/api/v1/write", "cpu u=1\ncpu u=\ncpu u=2\ncpu,x u=3"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["line"], 2);
    assert_eq!(json["errors"][1]["line"], 4);
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("2 invalid lines"),
        "{body}"
    );
    assert_eq!(f.engine.stats().buffered_rows, 0);
}

/// A request whose body arrives as frames of `size` bytes.
fn post_in_frames(uri: &str, body: &str, size: usize) -> Request<Body> {
    let frames: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(size)
        .map(|c| Ok(c.to_vec()))
        .collect();
    Request::post(uri)
        .body(Body::from_stream(futures_util::stream::iter(frames)))
        .unwrap()
}

#[tokio::test]
async fn a_body_in_many_frames_decodes_as_one() {
    let f = fixture(HttpConfig::default()).await;
    let lines: Vec<String> = (0..400)
        .map(|i| format!("cpu,host=h{} usage={i}i {}", i % 7, 1_700_000_000 + i))
        .collect();
    let body = lines.join("\n");
    // Frames large enough to be decoded where they lie, and frames of one byte (joined).
    for size in [4_999, 1] {
        let (status, _, answer) = send(
            &f.app,
            post_in_frames("/api/v1/write?precision=s", &body, size),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "frames of {size}: {answer}");
        assert_eq!(answer, r#"{"rows":400}"#);
        let bad = format!("{body}\ncpu usage=\n{}", lines[1]);
        let (status, _, answer) = send(&f.app, post_in_frames("/api/v1/write", &bad, size)).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "frames of {size}: {answer}"
        );
        let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(json["line"], 401, "frames of {size}: {answer}");
    }
    assert_eq!(f.engine.stats().buffered_rows, 800);
}

#[tokio::test]
async fn type_conflicts_and_bad_parameters_are_400() {
    let f = fixture(HttpConfig::default()).await;
    send(&f.app, post("/api/v1/write", "cpu u=1")).await;
    let (status, _, body) = send(&f.app, post("/api/v1/write", "cpu u=\"text\"")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("table 'cpu', column 'u': float field in the table, string field in line 1"),
        "{body}"
    );
    let (status, _, body) = send(
        &f.app,
        post("/api/v1/write?precision=fortnights", "cpu u=1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid precision 'fortnights'"), "{body}");
    let (status, _, body) = send(
        &f.app,
        post("/api/v1/write", vec![b'c', 0xff, b' ', b'f', b'=', b'1']),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("UTF-8"), "{body}");
}

#[tokio::test]
async fn oversized_bodies_get_413_before_and_after_decompression() {
    let f = fixture(HttpConfig {
        max_body_bytes: 1000,
        ..HttpConfig::default()
    })
    .await;
    let big = "cpu u=1\n".repeat(200);
    let compressed = gzip(big.as_bytes());
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, _, body) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // No Content-Length: the limit applies while reading.
    let stream = Body::from_stream(futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(big.clone())
    }));
    let (status, _, _) = send(&f.app, post("/api/v1/write", stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A small gzip body that inflates past the limit.
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(compressed))
        .unwrap();
    let (status, _, _) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.engine.stats().buffered_rows, 0);
}

#[tokio::test]
async fn unknown_content_encoding_is_415() {
    let f = fixture(HttpConfig::default()).await;
    let req = Request::post("/api/v1/write")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("cpu u=1"))
        .unwrap();
    let (status, _, _) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn full_buffer_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        background_flush: false,
        flush_bytes: 1,
        max_buffer_bytes: 1,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::open(config, Arc::new(MockTimeProvider::new(0))).unwrap());
    let app = app_for(&engine, HttpConfig::default()).await;
    let (status, _, _) = send(&app, post("/api/v1/write", "m f=1 1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = send(&app, post("/api/v1/write", "m f=2 2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    engine.flush().unwrap();
    let (status, _, _) = send(&app, post("/api/v1/write", "m f=3 3")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn events_answer_counts_and_errors() {
    let f = fixture(HttpConfig::default()).await;
    let (status, _, body) = send(
        &f.app,
        post(
            "/api/v1/events",
            "{\"message\":\"a\"}\n{\"message\":\"b\",\"severity\":\"warn\"}\n",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"accepted":2,"duplicates":0}"#);
    let (status, _, body) = send(
        &f.app,
        post("/api/v1/events", "{\"message\":\"a\"}\n{\"oops\":1}\n"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("missing 'message'") && body.contains("\"line\":2"),
        "{body}"
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let f = fixture(HttpConfig::default()).await;
    send(&f.app, post("/api/v1/write", "cpu u=1")).await;
    let (status, _, body) =
        send(&f.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"status\":\"pass\""), "{body}");
    let (status, headers, body) = send(
        &f.app,
        Request::get("/metrics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.contains("vigil_rows_written_total 1"), "{body}");
    // The write's decode slot is given back before it is acknowledged.
    assert!(body.contains("vigil_decode_slots_busy 0"), "{body}");
    assert!(
        body.contains("vigil_http_writes_total{outcome=\"ok\"} 1"),
        "{body}"
    );
}

/// WAL storage whose fsyncs start failing on request.
#[derive(Clone)]
struct FailingSync {
    inner: vigil_wal::FsStorage,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

struct FailingFile {
    inner: Box<dyn vigil_wal::SegmentFile>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl vigil_wal::SegmentFile for FailingFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("injected EIO on fsync"));
        }
        self.inner.sync()
    }
}

impl vigil_wal::Storage for FailingSync {
    fn list(&self) -> vigil_wal::Result<Vec<String>> {
        self.inner.list()
    }
    fn read(&self, name: &str) -> vigil_wal::Result<Box<dyn AsRef<[u8]> + Send>> {
        self.inner.read(name)
    }
    fn create(&self, name: &str) -> vigil_wal::Result<Box<dyn vigil_wal::SegmentFile>> {
        Ok(Box::new(FailingFile {
            inner: self.inner.create(name)?,
            fail: Arc::clone(&self.fail),
        }))
    }
    fn truncate(&self, name: &str, len: u64) -> vigil_wal::Result<()> {
        self.inner.truncate(name, len)
    }
    fn remove(&self, name: &str) -> vigil_wal::Result<()> {
        self.inner.remove(name)
    }
    fn sync_dir(&self) -> vigil_wal::Result<()> {
        self.inner.sync_dir()
    }
}

#[tokio::test]
async fn a_failed_fsync_stops_acknowledgements_and_turns_health_red() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storage = FailingSync {
        inner: vigil_wal::FsStorage::open(dir.path().join("wal")).unwrap(),
        fail: Arc::clone(&fail),
    };
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        background_flush: false,
        ..EngineConfig::default()
    };
    let engine = Arc::new(
        Engine::open_with_wal_storage(
            config,
            Arc::new(MockTimeProvider::new(0)),
            Arc::new(storage),
        )
        .unwrap(),
    );
    let app = app_for(&engine, HttpConfig::default()).await;
    let (status, _, _) = send(&app, post("/api/v1/write", "m f=1 1")).await;
    assert_eq!(status, StatusCode::OK);
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _, body) = send(&app, post("/api/v1/write", "m f=2 2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("write-ahead log failed"), "{body}");
    // No retry once fsync works again: the log stays poisoned until a restart.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, _, _) = send(&app, post("/api/v1/write", "m f=3 3")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = send(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("\"status\":\"fail\"") && body.contains("injected EIO"),
        "{body}"
    );
    let (_, _, metrics) = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.contains("vigil_wal_poisoned 1"), "{metrics}");
}
