//! The side store end to end: acknowledged mutations survive kill -9, the audit chain stays
//! whole, and the admin CLI works on the data directory.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};

use crate::server::{Server, client_with_token, free_port};

const CYCLES: usize = 3;
const WRITERS: usize = 3;

/// Creates tickets and comments until stopped; records what was acknowledged.
async fn writer(url: String, token: String, acked: Arc<Mutex<Vec<i64>>>, stop: Arc<AtomicBool>) {
    let client = client_with_token(&token, Some(Duration::from_secs(5)));
    while !stop.load(Ordering::Relaxed) {
        let r = client
            .post(format!("{url}/api/v1/tickets"))
            .json(&json!({"title": "crash test", "priority": "high"}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 201 => {
                let t: Value = r.json().await.unwrap_or(Value::Null);
                if let Some(id) = t["id"].as_i64() {
                    acked.lock().unwrap().push(id);
                }
            }
            Ok(r) => panic!("unexpected status {}", r.status()),
            // Killed mid-request: not acknowledged.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_ticket_and_keeps_the_audit_chain() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = rand::rng();
    for _ in 0..CYCLES {
        let server = Server::start(dir.path(), port, &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|_| {
                tokio::spawn(writer(
                    server.url.clone(),
                    server.token.clone(),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }
    let server = Server::start(dir.path(), port, &[]).await;
    let client = server.client();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10,
        "only {} tickets acknowledged",
        acked.len()
    );
    for id in &acked {
        let r = client
            .get(format!("{}/api/v1/tickets/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged ticket {id} is missing");
    }
    // Every TICKET_CREATED row, page by page (a page holds at most 1,000).
    let mut audited = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{}/api/v1/audit?action=TICKET_CREATED&limit=1000",
            server.url
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        audited += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(
        audited >= acked.len(),
        "{audited} audit rows for {} tickets",
        acked.len()
    );
    let report = server.get_json("/api/v1/audit/verify").await;
    assert_eq!(report["ok"], true, "{report}");
    server.terminate();

    // The CLI on the same data directory (server stopped).
    let vigil = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, secret, err) = vigil(&["token", "create", "--role", "viewer"], "");
    assert!(ok, "{err}");
    let secret = secret.trim().to_string();
    assert!(secret.starts_with("vgl_"), "{secret}");
    let (ok, out, err) = vigil(
        &[
            "user",
            "add",
            "--email",
            "ana@example.com",
            "--role",
            "analyst",
        ],
        "a long password\n",
    );
    assert!(ok && out.contains("ana@example.com"), "{out}{err}");
    let (ok, _, err) = vigil(
        &["user", "add", "--email", "bad", "--role", "analyst"],
        "x\n",
    );
    assert!(!ok && err.contains("email"), "{err}");
    let (ok, out, err) = vigil(&["audit", "verify"], "");
    assert!(ok && out.contains("intact"), "{out}{err}");

    // The new viewer token reads but may not write.
    let server = Server::start(dir.path(), port, &[]).await;
    let viewer = client_with_token(&secret, None);
    let r = viewer
        .get(format!("{}/api/v1/tickets?limit=1", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = viewer
        .post(format!("{}/api/v1/write", server.url))
        .body("m f=1 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    server.terminate();
}
