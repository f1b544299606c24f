//! Auth on every route (role × route matrix), and the side store routes end to end.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use vigil_api::HttpConfig;
use vigil_api::routes::ROUTES;
use vigil_relational::{AuditRow, Db, ListParams, Page, Principal, Role};

use super::{Backend, secured_on, send, test_engine};

struct Secured {
    app: Router,
    db: Db,
    admin: String,
    /// Last: fields drop in order, and the engine's last flush writes into this directory.
    _dir: tempfile::TempDir,
}

async fn secured(backend: Backend) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let engine = test_engine(dir.path());
    let (app, db, admin) = secured_on(
        &engine,
        HttpConfig::default(),
        vigil_query::QueryConfig::default(),
        backend,
    )
    .await;
    Secured {
        _dir: dir,
        app,
        db,
        admin,
    }
}

impl Secured {
    async fn token(&self, role: Role) -> String {
        let (_, secret) = self
            .db
            .create_token(
                &Principal::system(),
                &format!("{role} token"),
                role,
                None,
                None,
                None,
            )
            .await
            .unwrap();
        secret
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let (status, _, text) = send(&self.app, req).await;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn denied_rows(&self) -> Vec<AuditRow> {
        let page: Page<AuditRow> = self
            .db
            .list(
                &vigil_relational::list::AUDIT,
                &ListParams {
                    limit: Some(1000),
                    ..ListParams::default()
                }
                .filter("outcome", "denied"),
                None,
            )
            .await
            .unwrap();
        page.items
    }
}

fn concrete(path: &str) -> String {
    path.replace("{event_id}", "e-1").replace("{id}", "1")
}

/// Every route × every role: the route's access class decides, refused mutations are
/// audited, and no token at all is 401 everywhere.
async fn every_route_checks_the_role_of_its_token(backend: Backend) {
    let s = secured(backend).await;
    let mut denied_mutations = 0;
    for role in Role::ALL {
        let token = s.token(role).await;
        for r in ROUTES {
            let method = Method::from_bytes(r.method.as_bytes()).unwrap();
            let uri = concrete(r.path);
            let (status, body) = s.call(Some(&token), method.clone(), &uri, None).await;
            if r.access.allows(role) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role} {} {}: {status} {body}",
                    r.method,
                    r.path
                );
                // The route exists (an unknown route is 404 without a JSON body).
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED
                        && !(status == StatusCode::NOT_FOUND && body.get("code").is_none()),
                    "{} {} is in the route table but not served: {status}",
                    r.method,
                    r.path
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} {} {}: {body}",
                    r.method,
                    r.path
                );
                assert!(
                    body["message"].as_str().unwrap().contains(role.as_str()),
                    "{body}"
                );
                if method != Method::GET {
                    denied_mutations += 1;
                }
            }
        }
    }
    for r in ROUTES {
        let method = Method::from_bytes(r.method.as_bytes()).unwrap();
        let (status, _) = s.call(None, method.clone(), &concrete(r.path), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
        let (status, _) = s
            .call(Some("vgl_not-a-token"), method, &concrete(r.path), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
    }
    let rows = s.denied_rows().await;
    assert_eq!(rows.len(), denied_mutations);
    assert!(denied_mutations > 50, "{denied_mutations}");
    assert!(
        rows.iter()
            .all(|r| r.outcome == "denied" && r.actor.starts_with("token:"))
    );
    assert!(s.db.verify_audit().await.unwrap().ok);
}

async fn influx_clients_authenticate_their_way(backend: Backend) {
    let s = secured(backend).await;
    let agent = s.token(Role::Agent).await;
    let post = |req: axum::http::request::Builder| {
        let app = s.app.clone();
        async move {
            let (status, _, body) = send(&app, req.body(Body::from("cpu u=1 1")).unwrap()).await;
            (status, body)
        }
    };
    let b = Request::post("/api/v2/write?org=o&bucket=b")
        .header(header::AUTHORIZATION, format!("Token {agent}"));
    assert_eq!(post(b).await.0, StatusCode::NO_CONTENT);
    let b = Request::post(format!("/write?db=x&u=agent&p={agent}"));
    assert_eq!(post(b).await.0, StatusCode::NO_CONTENT);
    let b = Request::post("/write?db=x&u=agent&p=wrong");
    assert_eq!(post(b).await.0, StatusCode::UNAUTHORIZED);
    // An agent may write but not read.
    let (status, body) = s
        .call(
            Some(&agent),
            Method::GET,
            "/api/v1/query?sql=SELECT%201",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

async fn revoked_and_expired_tokens_stop_working(backend: Backend) {
    let s = secured(backend).await;
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    let id = body["token"]["id"].as_i64().unwrap();
    let (status, _) = s
        .call(Some(&secret), Method::GET, "/api/v1/tickets", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = s
        .call(Some(&s.admin), Method::GET, "/api/v1/tokens", None)
        .await;
    let ci = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert!(ci["revoked_at"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&secret), "a secret is listed");
    let (status, _) = s
        .call(Some(&secret), Method::GET, "/api/v1/tickets", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "short", "role": "viewer", "expires_at": soon.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let short = body["secret"].as_str().unwrap().to_string();
    let (status, _) = s
        .call(Some(&short), Method::GET, "/api/v1/tickets", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (status, _) = s
        .call(Some(&short), Method::GET, "/api/v1/tickets", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Deactivating a user ends their tokens at once; reactivating restores them.
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "cy@example.com", "password": "long password", "roles": ["viewer"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = body["id"].as_i64().unwrap();
    let (_, body) = s
        .call(
            Some(&s.admin),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "cy", "role": "viewer", "user_id": user})),
        )
        .await;
    let cy = body["secret"].as_str().unwrap().to_string();
    let s = &s;
    let get = |t: String| async move {
        s.call(Some(&t), Method::GET, "/api/v1/tickets", None)
            .await
            .0
    };
    assert_eq!(get(cy.clone()).await, StatusCode::OK);
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            &format!("/api/v1/users/{user}"),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(
        (status, &body["is_active"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    assert_eq!(get(cy.clone()).await, StatusCode::UNAUTHORIZED);
    let (status, listed) = s
        .call(Some(&s.admin), Method::GET, "/api/v1/users", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let listed_cy = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == user)
        .unwrap();
    assert_eq!(listed_cy["is_active"], json!(false), "{listed}");
    assert!(
        !listed.to_string().contains("argon2"),
        "a password hash is listed"
    );
    s.call(
        Some(&s.admin),
        Method::PATCH,
        &format!("/api/v1/users/{user}"),
        Some(json!({"is_active": true})),
    )
    .await;
    assert_eq!(get(cy.clone()).await, StatusCode::OK);
    let (status, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/999999",
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            &format!("/api/v1/users/{user}"),
            Some(json!({"is_active": "no"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

async fn tickets_comments_and_alerts_through_the_api(backend: Backend) {
    let s = secured(backend).await;
    let analyst = s.token(Role::Analyst).await;
    let viewer = s.token(Role::Viewer).await;
    let auditor = s.token(Role::Auditor).await;
    let a = Some(analyst.as_str());

    // Bad input names the field.
    let (status, body) = s
        .call(
            a,
            Method::POST,
            "/api/v1/tickets",
            Some(json!({"title": "x", "priority": "urgent"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("priority"),
        "{body}"
    );
    let (status, body) = s
        .call(
            a,
            Method::POST,
            "/api/v1/tickets",
            Some(json!({"titel": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("titel"),
        "{body}"
    );

    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, t) = s
            .call(
                a,
                Method::POST,
                "/api/v1/tickets",
                Some(json!({"title": format!("t{i}"), "priority": "high"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{t}");
        ids.push(t["id"].as_i64().unwrap());
    }
    // Pages of two, newest first, via next_cursor.
    let mut seen = Vec::new();
    let mut uri = "/api/v1/tickets?limit=2&priority=high".to_string();
    loop {
        let (status, page) = s.call(a, Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/tickets?limit=2&priority=high&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>());
    let (status, body) = s
        .call(a, Method::GET, "/api/v1/tickets?colour=red", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Lifecycle through PATCH; a bad transition is 422, a missing ticket 404.
    let t = ids[0];
    let (status, body) = s
        .call(
            a,
            Method::PATCH,
            &format!("/api/v1/tickets/{t}"),
            Some(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["resolved_at"].is_string(), "{body}");
    let (status, body) = s
        .call(
            a,
            Method::PATCH,
            "/api/v1/tickets/999",
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Comments: the first public one sets first_responded_at; internal ones are hidden from
    // viewers, and from auditors unless marked auditor-visible.
    let c = format!("/api/v1/tickets/{t}/comments");
    for (content, internal, auditor_visible) in [
        ("public", false, false),
        ("internal", true, false),
        ("for audit", true, true),
    ] {
        let (status, body) = s
            .call(a, Method::POST, &c, Some(json!({"content": content, "internal": internal, "auditor_visible": auditor_visible})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, ticket) = s
        .call(a, Method::GET, &format!("/api/v1/tickets/{t}"), None)
        .await;
    assert!(ticket["first_responded_at"].is_string(), "{ticket}");
    let contents = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["content"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        contents(s.call(a, Method::GET, &c, None).await.1),
        ["public", "internal", "for audit"]
    );
    assert_eq!(
        contents(s.call(Some(&viewer), Method::GET, &c, None).await.1),
        ["public"]
    );
    assert_eq!(
        contents(s.call(Some(&auditor), Method::GET, &c, None).await.1),
        ["public", "for audit"]
    );
    let (_, list) = s.call(a, Method::GET, &c, None).await;
    let first = list["items"][0]["id"].as_i64().unwrap();
    let (status, _) = s
        .call(
            a,
            Method::PATCH,
            &format!("/api/v1/comments/{first}"),
            Some(json!({"content": "edited"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, history) = s
        .call(
            a,
            Method::GET,
            &format!("/api/v1/comments/{first}/history"),
            None,
        )
        .await;
    assert_eq!(history["items"][0]["content"], "public", "{history}");

    // An alert's ticket is created once.
    let (status, alert) = s
        .call(
            a,
            Method::POST,
            "/api/v1/alerts",
            Some(json!({"alert_type": "cpu", "severity": "CRITICAL", "message": "CPU 97%"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alert}");
    let id = alert["id"].as_i64().unwrap();
    let (status, first) = s
        .call(
            a,
            Method::POST,
            &format!("/api/v1/alerts/{id}/ticket"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["priority"], "critical");
    let (status, again) = s
        .call(
            a,
            Method::POST,
            &format!("/api/v1/alerts/{id}/ticket"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(first["id"], again["id"]);
    let (_, firing) = s
        .call(a, Method::GET, "/api/v1/alerts?status=firing", None)
        .await;
    assert_eq!(firing["items"].as_array().unwrap().len(), 1);
    let (status, acked) = s
        .call(
            a,
            Method::POST,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(
        (status, acked["status"].as_str()),
        (StatusCode::OK, Some("acknowledged"))
    );
    let (status, _) = s
        .call(
            a,
            Method::POST,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The audit log: auditors see it with e-mails redacted; the chain verifies.
    let (status, body) = s
        .call(Some(&s.admin), Method::POST, "/api/v1/users", Some(json!({"email": "eve@example.com", "password": "long password", "roles": ["viewer"]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, page) = s
        .call(
            Some(&auditor),
            Method::GET,
            "/api/v1/audit?action=USER_CREATED",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["items"][0]["metadata"]["email"], "[redacted]",
        "{page}"
    );
    let (_, page) = s
        .call(
            Some(&s.admin),
            Method::GET,
            "/api/v1/audit?action=USER_CREATED",
            None,
        )
        .await;
    assert_eq!(
        page["items"][0]["metadata"]["email"], "eve@example.com",
        "{page}"
    );
    let (status, report) = s
        .call(Some(&auditor), Method::GET, "/api/v1/audit/verify", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true);
}

async fn cases_systems_and_links_through_the_api(backend: Backend) {
    let s = secured(backend).await;
    let analyst = s.token(Role::Analyst).await;
    let agent = s.token(Role::Agent).await;
    let a = Some(analyst.as_str());
    let (status, case) = s
        .call(
            a,
            Method::POST,
            "/api/v1/cases",
            Some(json!({"title": "Brute force on web-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    let id = case["id"].as_i64().unwrap();
    let path = format!("/api/v1/cases/{id}");
    let (status, body) = s
        .call(
            a,
            Method::PATCH,
            &path,
            Some(json!({"status": "INVESTIGATING"})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("INVESTIGATING")),
        "{body}"
    );
    let (status, body) = s
        .call(a, Method::PATCH, &path, Some(json!({"status": "CLOSED"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let events = format!("{path}/events");
    let (status, _) = s
        .call(a, Method::POST, &events, Some(json!({"event_id": "ev-1"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = s
        .call(a, Method::POST, &events, Some(json!({"event_id": "ev-1"})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, linked) = s.call(a, Method::GET, &events, None).await;
    assert_eq!(linked["items"], json!(["ev-1"]));
    let (status, _) = s
        .call(a, Method::DELETE, &format!("{events}/ev-1"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .call(
            a,
            Method::POST,
            &format!("{path}/notes"),
            Some(json!({"content": "sshd from 10.0.0.9"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, notes) = s.call(a, Method::GET, &format!("{path}/notes"), None).await;
    assert_eq!(
        notes["items"][0]["content"], "sshd from 10.0.0.9",
        "{notes}"
    );
    let (status, body) = s
        .call(
            a,
            Method::PATCH,
            &path,
            Some(json!({"title": "Brute force on web-1 and web-2", "priority": "high"})),
        )
        .await;
    assert_eq!(
        (status, body["priority"].as_str()),
        (StatusCode::OK, Some("high")),
        "{body}"
    );
    assert_eq!(body["status"], "INVESTIGATING");
    let (status, tagged) = s
        .call(
            a,
            Method::POST,
            &format!("{path}/tags"),
            Some(json!({"tag": "ssh"})),
        )
        .await;
    assert_eq!(
        (status, tagged["tags"].clone()),
        (StatusCode::OK, json!(["ssh"]))
    );
    let (_, cases) = s
        .call(a, Method::GET, "/api/v1/cases?status=INVESTIGATING", None)
        .await;
    assert_eq!(cases["items"][0]["tags"], json!(["ssh"]), "{cases}");

    // An agent reports its machine; analysts label it; deactivated systems leave the list.
    let (status, sys) = s
        .call(
            Some(&agent),
            Method::POST,
            "/api/v1/systems",
            Some(json!({"hostname": "web-1", "cpu_cores": 8})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sys}");
    let sid = sys["id"].as_i64().unwrap();
    let (status, sys) = s
        .call(
            a,
            Method::PATCH,
            &format!("/api/v1/systems/{sid}"),
            Some(json!({"user_label": "front", "is_active": false})),
        )
        .await;
    assert_eq!(
        (status, sys["user_label"].as_str()),
        (StatusCode::OK, Some("front")),
        "{sys}"
    );
    let (_, list) = s.call(a, Method::GET, "/api/v1/systems", None).await;
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    let (_, list) = s
        .call(a, Method::GET, "/api/v1/systems?is_active=any", None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (status, set) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            &format!("/api/v1/systems/{sid}/alert-settings"),
            Some(json!({"cpu_threshold": 95.0, "memory_threshold": 90.0, "disk_threshold": 80.0})),
        )
        .await;
    assert_eq!(
        (status, set["cpu_threshold"].as_f64()),
        (StatusCode::OK, Some(95.0)),
        "{set}"
    );
    let (status, body) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            "/api/v1/alert-settings",
            Some(json!({"cpu_threshold": 150.0, "memory_threshold": 90.0, "disk_threshold": 80.0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, link) = s
        .call(a, Method::POST, "/api/v1/links", Some(json!({"source_type": "case", "source_id": id.to_string(), "linkable_type": "system", "linkable_id": sid.to_string()})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let (_, links) = s
        .call(
            a,
            Method::GET,
            &format!("/api/v1/links?source_type=case&source_id={id}"),
            None,
        )
        .await;
    assert_eq!(links["items"].as_array().unwrap().len(), 1, "{links}");

    let (status, doc) = s
        .call(Some(&agent), Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for r in ROUTES {
        assert!(
            doc["paths"][r.path][r.method.to_lowercase()].is_object(),
            "{} {}",
            r.method,
            r.path
        );
    }
}

/// Runs an API suite on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($suite:ident),*) => {
        $(mod $suite {
            #[tokio::test]
            async fn sqlite() {
                super::$suite(super::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$suite(super::Backend::Postgres).await;
            }
        })*
    };
}

on_both!(
    every_route_checks_the_role_of_its_token,
    influx_clients_authenticate_their_way,
    revoked_and_expired_tokens_stop_working,
    tickets_comments_and_alerts_through_the_api,
    cases_systems_and_links_through_the_api
);
