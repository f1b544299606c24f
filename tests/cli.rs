//! `vigil query` against a running server.

use std::path::Path;
use std::process::Command;

use crate::server::{Server, free_port};

fn vigil_query(url: &str, data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("query")
        .arg("--server")
        .arg(url)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`vigil_query`] on a blocking thread, out of the test's runtime.
async fn query(url: &str, data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let (url, data_dir) = (url.to_string(), data_dir.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        vigil_query(&url, &data_dir, &args)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_query_prints_a_table_csv_json_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &[]).await;
    let resp = server
        .client()
        .post(format!("{}/api/v1/write?precision=s", server.url))
        .body("cpu,host=web-1 usage=12.5 1763800000\ncpu,host=web-2 usage=80.25 1763800000\n")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let (url, data_dir) = (server.url.as_str(), dir.path());
    let sql = "SELECT host, usage FROM cpu ORDER BY host";
    let (ok, out, err) = query(url, data_dir, &[sql]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "+-------+-------+\n\
         | host  | usage |\n\
         +-------+-------+\n\
         | web-1 | 12.5  |\n\
         | web-2 | 80.25 |\n\
         +-------+-------+\n"
    );
    assert!(err.starts_with("(2 rows, "), "{err}");
    let (ok, out, _) = query(url, data_dir, &["--format", "csv", sql]).await;
    assert!(ok);
    assert_eq!(out, "host,usage\nweb-1,12.5\nweb-2,80.25\n");
    let (ok, out, _) = query(url, data_dir, &["--format", "json", sql]).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["usage"], 80.25);
    let (ok, _, err) = query(url, data_dir, &["SELECT * FROM nope"]).await;
    assert!(!ok);
    assert!(err.contains("nope") && err.contains("HTTP 400"), "{err}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_with_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port(), &["--http-tls"]).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let client = server.client();
    let resp = client
        .post(format!("{}/api/v1/write?precision=s", server.url))
        .body("cpu,host=web-1 usage=12.5 1763800000\n")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // The audit trail still records the client's address through the TLS listener.
    let resp = client
        .post(format!("{}/api/v1/tickets", server.url))
        .json(&serde_json::json!({ "title": "disk full on web-1" }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let audit = server.get_json("/api/v1/audit?action=TICKET_CREATED").await;
    assert_eq!(audit["items"][0]["ip_address"], "127.0.0.1", "{audit}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = server.url.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/health")).await.is_err(),
        "plain HTTP answered on the HTTPS port"
    );

    // `vigil query` trusts the data directory's certificate by default...
    let (url, data_dir) = (server.url.as_str(), dir.path());
    let csv = ["--format", "csv", "SELECT host, usage FROM cpu"];
    let (ok, out, err) = query(url, data_dir, &csv).await;
    assert!(ok, "{err}");
    assert_eq!(out, "host,usage\nweb-1,12.5\n");
    // ...and only the certificate it is told to trust.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_pem = data_dir.join("other.crt");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    let other_pem = other_pem.to_str().unwrap();
    let (ok, _, err) = query(url, data_dir, &["--ca", other_pem, "SELECT 1"]).await;
    assert!(!ok);
    assert!(err.contains("certificate"), "{err}");
    let (ok, _, err) = query(url, data_dir, &["--ca", "/nonexistent/ca.pem", "SELECT 1"]).await;
    assert!(!ok);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let not_pem = data_dir.join("admin.token");
    let (ok, _, err) = query(
        url,
        data_dir,
        &["--ca", not_pem.to_str().unwrap(), "SELECT 1"],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no PEM certificate"), "{err}");
    server.terminate();
}
