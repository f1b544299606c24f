//! `GET /api/v1/recurrence` and `GET /api/v1/trends`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use vigil_api::HttpConfig;

use crate::{fixture, post, send};

/// The fixture's clock: 2023-11-14T22:13:20Z.
const NOW_S: i64 = 1_700_000_000;

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn recurrence_lists_what_keeps_happening() {
    let f = fixture(HttpConfig::default()).await;
    let mut body = String::new();
    for (i, minutes_ago) in [90, 50, 40, 30, 20].iter().enumerate() {
        body.push_str(&format!(
            "{{\"time\":{},\"service\":\"api\",\"message\":\"timeout after {}ms\"}}\n",
            NOW_S - minutes_ago * 60,
            100 + i
        ));
    }
    body.push_str(&format!(
        "{{\"time\":{},\"message\":\"disk full\"}}\n",
        NOW_S - 10
    ));
    body.push_str(&format!(
        "{{\"time\":{},\"message\":\"disk full\"}}\n",
        NOW_S - 10
    ));
    let (status, _, answer) = send(&f.app, post("/api/v1/events", body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, r#"{"accepted":6,"duplicates":1}"#);

    let (status, _, answer) = send(&f.app, get("/api/v1/recurrence?since=1h&bucket=30m")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let rows = v["fingerprints"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{answer}");
    assert_eq!(rows[0]["template"], "timeout after <*>");
    assert_eq!(rows[0]["count"], 4);
    assert_eq!(rows[0]["previous_count"], 1);
    assert_eq!(rows[0]["status"], "escalating");
    // Windows are whole minutes ending with the current one (22:14): 30 minutes ago
    // (21:43:20) is in the first half hour, 21:14–21:44.
    assert_eq!(rows[0]["buckets"], serde_json::json!([3, 1]));
    assert_eq!(rows[0]["services"], serde_json::json!(["api"]));
    assert_eq!(rows[0]["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(rows[1]["status"], "new");
    assert_eq!(v["bucket_seconds"], 1800);

    let (_, _, answer) = send(
        &f.app,
        get("/api/v1/recurrence?since=1h&status=new&limit=5"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["fingerprints"].as_array().unwrap().len(), 1);

    for bad in [
        "/api/v1/recurrence?since=soon",
        "/api/v1/recurrence?since=1h&bucket=2h",
        "/api/v1/recurrence?status=loud",
    ] {
        let (status, _, answer) = send(&f.app, get(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
    }
}

#[tokio::test]
async fn trends_give_min_avg_max_count_per_bucket() {
    let f = fixture(HttpConfig::default()).await;
    let lines = [
        (120, "a", 10.0),
        (110, "a", 20.0),
        (100, "b", 5.0),
        (30, "a", 1.0),
        (7200, "a", 99.0), // outside the hour
    ]
    .iter()
    .map(|(ago, host, v)| format!("cpu,hostname={host} usage_user={v} {}", NOW_S - ago))
    .collect::<Vec<_>>()
    .join("\n");
    let (status, _, answer) = send(&f.app, post("/api/v1/write?precision=s", lines)).await;
    assert!(status.is_success(), "{answer}");
    let _ = &f.engine;

    let uri = "/api/v1/trends?table=cpu&field=usage_user&bucket=1m&since=1h&by=hostname";
    let (status, _, answer) = send(&f.app, get(uri)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&answer).unwrap();
    // 22:11:20 and 22:11:30 fall in the 22:11 bucket, 22:11:40 too (host b), 22:12:50 in 22:12.
    assert_eq!(rows.len(), 3, "{answer}");
    assert_eq!(rows[0]["hostname"], "a");
    assert_eq!(rows[0]["min"], 10.0);
    assert_eq!(rows[0]["max"], 20.0);
    assert_eq!(rows[0]["avg"], 15.0);
    assert_eq!(rows[0]["count"], 2);
    assert_eq!(rows[1]["hostname"], "b");
    assert_eq!(rows[2]["count"], 1);

    let (status, _, answer) = send(&f.app, get("/api/v1/trends?table=cpu&field=usage_user")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&answer).unwrap();
    assert_eq!(rows.len(), 2, "without 'by', one row per bucket: {answer}");

    for (uri, want) in [
        ("/api/v1/trends?table=nope&field=x", StatusCode::NOT_FOUND),
        (
            "/api/v1/trends?table=cpu&field=hostname",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/trends?table=cpu&field=nope",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/trends?table=cpu&field=usage_user&by=usage_user",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/trends?table=cpu&field=usage_user&bucket=1500ms",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/trends?field=usage_user", StatusCode::BAD_REQUEST),
    ] {
        let (status, _, answer) = send(&f.app, get(uri)).await;
        assert_eq!(status, want, "{uri}: {answer}");
        assert!(answer.contains("message"), "{uri}: {answer}");
    }
}
