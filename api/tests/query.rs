//! `/api/v1/query`: formats, errors, limits, streaming and cancellation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vigil_api::HttpConfig;
use vigil_query::QueryConfig;

use super::{app_with, fixture, post, send};

fn query_json(sql: &str, format: &str) -> Request<Body> {
    Request::post("/api/v1/query")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "sql": sql, "format": format }).to_string(),
        ))
        .unwrap()
}

async fn with_rows() -> super::Fixture {
    let f = fixture(HttpConfig::default()).await;
    let (status, _, body) = send(
        &f.app,
        post(
            "/api/v1/write",
            "cpu,host=a usage=1.5,note=\"x\" 1000000000\ncpu,host=b usage=2 2000000000\n",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    f
}

const SQL: &str = "SELECT host, usage, note, time FROM cpu ORDER BY host";

#[tokio::test]
async fn json_is_an_array_of_row_objects() {
    let f = with_rows().await;
    let (status, headers, body) = send(&f.app, query_json(SQL, "json")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"host": "a", "usage": 1.5, "note": "x", "time": "1970-01-01T00:00:01Z"},
            {"host": "b", "usage": 2.0, "note": null, "time": "1970-01-01T00:00:02Z"},
        ])
    );
    // GET with the SQL in the query string, and JSON as the default format.
    let uri = format!(
        "/api/v1/query?sql={}",
        "SELECT%20count(*)%20AS%20n%20FROM%20cpu"
    );
    let (status, _, body) = send(&f.app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"[{"n":2}]"#);
    // An empty result is an empty array.
    let (_, _, body) = send(
        &f.app,
        query_json("SELECT * FROM cpu WHERE host = 'z'", "json"),
    )
    .await;
    assert_eq!(body, "[]");
}

#[tokio::test]
async fn ndjson_csv_and_plain_text_sql() {
    let f = with_rows().await;
    let (status, headers, body) = send(&f.app, query_json(SQL, "ndjson")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    assert_eq!(body.lines().count(), 2);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(body.lines().next().unwrap()).unwrap()["host"],
        "a"
    );
    // SQL as the body, format in the query string.
    let req = Request::post("/api/v1/query?format=csv")
        .body(Body::from(SQL))
        .unwrap();
    let (status, headers, body) = send(&f.app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        body,
        "host,usage,note,time\na,1.5,x,1970-01-01T00:00:01Z\nb,2.0,,1970-01-01T00:00:02Z\n"
    );
    // No rows: still the header.
    let (_, _, body) = send(
        &f.app,
        query_json("SELECT host FROM cpu WHERE host = 'z'", "csv"),
    )
    .await;
    assert_eq!(body, "host\n");
}

#[tokio::test]
async fn arrow_and_parquet_decode_to_the_rows() {
    let f = with_rows().await;
    let resp = f
        .app
        .clone()
        .oneshot(query_json(SQL, "arrow"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let batches: Vec<_> =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let arrow_text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        arrow_text.contains("| a    | 1.5   | x    | 1970-01-01T00:00:01Z |"),
        "{arrow_text}"
    );

    let resp = f
        .app
        .clone()
        .oneshot(query_json(SQL, "parquet"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let parquet_text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert_eq!(parquet_text, arrow_text);
}

#[tokio::test]
async fn errors_carry_the_reason() {
    let f = with_rows().await;
    let (status, _, body) = send(&f.app, query_json("SELECT * FROM nope", "json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "sql_error");
    assert!(v["message"].as_str().unwrap().contains("nope"), "{body}");
    let (status, _, body) = send(&f.app, query_json("SELEC 1", "json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(&f.app, query_json("DROP TABLE cpu", "json")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("read_only"), "{body}");
    let (status, _, body) = send(&f.app, query_json("SELECT 1", "xml")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("unknown format 'xml'"), "{body}");
    let bad = Request::post("/api/v1/query")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"sq\": 1}"))
        .unwrap();
    let (status, _, body) = send(&f.app, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The table is still there and answers.
    let (status, _, _) = send(&f.app, query_json("SELECT count(*) FROM cpu", "json")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn row_cap_and_timeout_answer_clearly() {
    let f = fixture(HttpConfig::default()).await;
    let app = app_with(
        &f.engine,
        HttpConfig::default(),
        QueryConfig {
            max_rows: 5,
            timeout: Duration::from_millis(300),
            ..QueryConfig::default()
        },
    )
    .await;
    let (status, _, body) = send(
        &app,
        query_json("SELECT * FROM generate_series(1, 6)", "json"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("too_many_rows") && body.contains("more than 5 rows"),
        "{body}"
    );
    let (status, _, body) = send(
        &app,
        query_json(
            "SELECT sum(value) FROM generate_series(1, 100000000000)",
            "json",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("timed out"), "{body}");
}

/// A large result comes in many body chunks, and when the client goes away mid-way the
/// query stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_and_a_disconnect_cancels_the_query() {
    let f = fixture(HttpConfig::default()).await;
    let app = app_with(
        &f.engine,
        HttpConfig::default(),
        QueryConfig {
            max_rows: usize::MAX / 2,
            ..QueryConfig::default()
        },
    )
    .await;
    let running = || async {
        let (_, _, m) = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        m.lines()
            .find_map(|l| l.strip_prefix("vigil_queries_running "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let resp = app
        .clone()
        .oneshot(query_json(
            "SELECT value FROM generate_series(1, 100000000000)",
            "ndjson",
        ))
        .await
        .unwrap();
    let status = resp.status();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let text = body.collect().await.unwrap().to_bytes();
        panic!("{status}: {}", String::from_utf8_lossy(&text));
    }
    let mut frames = 0;
    while frames < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        assert!(!frame.data_ref().unwrap().is_empty());
        frames += 1;
    }
    assert_eq!(running().await, 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while running().await != 0 {
        assert!(
            Instant::now() < deadline,
            "query still running after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Arc::clone(&f.engine);
}
