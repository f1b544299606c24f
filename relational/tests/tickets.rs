//! Tickets: numbering, transitions and lifecycle times, SLA targets, idempotent creation
//! from an alert, comments with visibility and edit history, audit rows.

use vigil_relational::{
    Db, Error, NewTicket, Principal, Role, TicketFilter, TicketPatch, dispatch,
};

use crate::on_both;

async fn analyst(db: &Db, email: &str, role: Role) -> Principal {
    let u = db
        .create_user(&Principal::system(), email, "long password", None, &[role])
        .await
        .unwrap();
    Principal {
        actor: format!("user:{}", u.id),
        role,
        user_id: Some(u.id),
        token_id: None,
        ip_address: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
        expires_at: None,
    }
}

fn new(title: &str) -> NewTicket {
    NewTicket {
        title: title.into(),
        description: "details".into(),
        ..NewTicket::default()
    }
}

async fn lifecycle(db: Db) {
    let ana = analyst(&db, "ana@example.com", Role::Analyst).await;
    let (t, created) = db
        .create_ticket(
            &ana,
            &NewTicket {
                priority: Some("high".into()),
                ..new("Disk full on db-1")
            },
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(t.ticket_number, format!("VIG-{:06}", t.id));
    // What creation answers is what was stored (on SQLite it is not read back).
    assert_eq!(db.ticket(t.id).await.unwrap(), t);
    assert_eq!(
        (t.status.as_str(), t.status_category.as_str()),
        ("open", "todo")
    );
    assert_eq!(
        t.response_target.unwrap() - t.created_at,
        chrono::Duration::hours(4)
    );
    assert_eq!(
        t.resolution_target.unwrap() - t.created_at,
        chrono::Duration::hours(24)
    );

    let t = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                status: Some("in_progress".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.status_category, "in_progress");
    let t = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                status: Some("resolved".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(t.resolved_at.is_some() && t.closed_at.is_none());
    let t = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                status: Some("closed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(t.closed_at.is_some());
    assert_eq!(t.status_category, "done");
    let err = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                status: Some("in_progress".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "status",
                ..
            }
        ),
        "{err}"
    );
    let t = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                status: Some("open".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(t.resolved_at.is_none() && t.closed_at.is_none(), "reopened");
    let t = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                priority: Some("critical".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        t.response_target.unwrap() - t.created_at,
        chrono::Duration::hours(1)
    );

    for bad in [
        TicketPatch {
            status: Some("done".into()),
            ..Default::default()
        },
        TicketPatch {
            priority: Some("urgent".into()),
            ..Default::default()
        },
        TicketPatch {
            title: Some(String::new()),
            ..Default::default()
        },
        TicketPatch {
            title: Some("x".repeat(201)),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            db.patch_ticket(&ana, t.id, &bad).await,
            Err(Error::Invalid { .. })
        ));
    }
    let err = db
        .patch_ticket(
            &ana,
            t.id,
            &TicketPatch {
                assignee_id: Some(Some(999)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { .. }),
        "unknown assignee: {err}"
    );
    assert!(matches!(
        db.ticket(12345).await,
        Err(Error::NotFound { .. })
    ));
    // Created, 5 status/priority changes, plus the user: every change audited, chain intact.
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.rows, 1 + 1 + 5);
    let rows = db.audit_rows(None, 100).await.unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last.action, "TICKET_UPDATED");
    assert_eq!(last.metadata["priority"]["to"], "critical");
    assert_eq!(last.ip_address.as_deref(), Some("127.0.0.1"));
}
on_both!(ticket_lifecycle, lifecycle);

async fn from_alert_is_idempotent(db: Db) {
    let ana = analyst(&db, "ana@example.com", Role::Analyst).await;
    let alert_id: i64 = dispatch!(&db, pool => {
        sqlx::query_scalar(
            "INSERT INTO alerts (alert_type, severity, message, created_at, updated_at) \
             VALUES ('CPU', 'CRITICAL', 'cpu 97%', $1, $1) RETURNING id",
        )
        .bind(chrono::Utc::now())
        .fetch_one(pool.ex())
        .await
        .unwrap()
    });
    let ask = NewTicket {
        alert_id: Some(alert_id),
        ..new("CPU on web-1")
    };
    let (a, created_a) = db.create_ticket(&ana, &ask).await.unwrap();
    let (b, created_b) = db.create_ticket(&ana, &ask).await.unwrap();
    assert!(created_a && !created_b);
    assert_eq!(a.id, b.id);
    let err = db
        .create_ticket(
            &ana,
            &NewTicket {
                alert_id: Some(424242),
                ..new("x")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }));
    let page = db
        .tickets(&TicketFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
}
on_both!(ticket_from_alert, from_alert_is_idempotent);

async fn comments_visibility_and_history(db: Db) {
    let ana = analyst(&db, "ana@example.com", Role::Analyst).await;
    let viewer = analyst(&db, "vic@example.com", Role::Viewer).await;
    let auditor = analyst(&db, "aud@example.com", Role::Auditor).await;
    let (t, _) = db.create_ticket(&ana, &new("Login fails")).await.unwrap();
    db.add_comment(&ana, t.id, "internal note", true, false)
        .await
        .unwrap();
    assert!(
        db.ticket(t.id).await.unwrap().first_responded_at.is_none(),
        "internal does not count"
    );
    db.add_comment(&ana, t.id, "for auditors", true, true)
        .await
        .unwrap();
    let public = db
        .add_comment(&ana, t.id, "we are on it", false, false)
        .await
        .unwrap();
    assert!(db.ticket(t.id).await.unwrap().first_responded_at.is_some());
    let seen =
        |cs: Vec<vigil_relational::Comment>| cs.into_iter().map(|c| c.content).collect::<Vec<_>>();
    assert_eq!(
        seen(db.comments(&ana, t.id).await.unwrap()),
        ["internal note", "for auditors", "we are on it"]
    );
    assert_eq!(
        seen(db.comments(&viewer, t.id).await.unwrap()),
        ["we are on it"]
    );
    assert_eq!(
        seen(db.comments(&auditor, t.id).await.unwrap()),
        ["for auditors", "we are on it"]
    );
    db.edit_comment(&ana, public.id, "fixed in 1.2.3")
        .await
        .unwrap();
    let history = db.comment_history(public.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, "we are on it");
    assert!(matches!(
        db.edit_comment(&ana, 999, "x").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        db.add_comment(&ana, t.id, "  ", false, false).await,
        Err(Error::Invalid { .. })
    ));
    assert!(db.verify_audit().await.unwrap().ok);
}
on_both!(ticket_comments, comments_visibility_and_history);

async fn list_filters_and_pages(db: Db) {
    let ana = analyst(&db, "ana@example.com", Role::Analyst).await;
    for i in 0..7 {
        let p = if i % 2 == 0 { "low" } else { "high" };
        db.create_ticket(
            &ana,
            &NewTicket {
                priority: Some(p.into()),
                ..new(&format!("t{i}"))
            },
        )
        .await
        .unwrap();
    }
    let first = db
        .tickets(&TicketFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
        ["t6", "t5", "t4"]
    );
    let next = db
        .tickets(&TicketFilter {
            limit: 3,
            before: Some(first[2].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|t| t.title.as_str()).collect::<Vec<_>>(),
        ["t3", "t2", "t1"]
    );
    let high = db
        .tickets(&TicketFilter {
            priority: Some("high".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(high.len(), 3);
    assert!(matches!(
        db.tickets(&TicketFilter {
            status: Some("nope".into()),
            limit: 1,
            ..Default::default()
        })
        .await,
        Err(Error::Invalid {
            field: "status",
            ..
        })
    ));
}
on_both!(ticket_lists, list_filters_and_pages);

/// Many mutations at once (group-committed together on SQLite), some of which fail: the
/// failures change nothing, every success is kept with its audit row, the chain holds.
async fn concurrent_mutations_share_commits(db: Db) {
    let ana = analyst(&db, "many@example.com", Role::Analyst).await;
    let (t, _) = db.create_ticket(&ana, &new("shared")).await.unwrap();
    let before = db.verify_audit().await.unwrap().rows;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (db, ana) = (db.clone(), ana.clone());
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                // Refers to a system that does not exist: fails inside its savepoint.
                0 => db
                    .create_ticket(
                        &ana,
                        &NewTicket {
                            system_id: Some(999_999),
                            ..new("bad")
                        },
                    )
                    .await
                    .map(|_| ()),
                1 => db
                    .add_comment(&ana, t.id, &format!("c{i}"), false, false)
                    .await
                    .map(|_| ()),
                _ => db
                    .create_ticket(&ana, &new(&format!("t{i}")))
                    .await
                    .map(|_| ()),
            }
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(vigil_relational::Error::Invalid { .. }) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, failed), (30, 10));
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.rows, before + 30);
    let all = db
        .tickets(&TicketFilter {
            limit: 1000,
            ..TicketFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1 + 20);
    assert!(all.iter().all(|t| t.title != "bad"));
    assert_eq!(db.comments(&ana, t.id).await.unwrap().len(), 10);
}
on_both!(concurrent_group, concurrent_mutations_share_commits);

/// Two writers on one SQLite file (a server and a CLI): the ids the group writer hands
/// out follow the other's inserts, so neither collides.
#[tokio::test]
async fn two_processes_on_one_sqlite_file_number_tickets_apart() {
    let dir = tempfile::tempdir().unwrap();
    let a = Db::open_sqlite(dir.path()).await.unwrap();
    let b = Db::open_sqlite(dir.path()).await.unwrap();
    let ana = analyst(&a, "two@example.com", Role::Analyst).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let db = if i % 3 == 0 { &b } else { &a };
        let (t, _) = db
            .create_ticket(&ana, &new(&format!("t{i}")))
            .await
            .unwrap();
        assert_eq!(b.ticket(t.id).await.unwrap(), t);
        ids.push(t.id);
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, ids, "ids are new and increasing");
    assert!(a.verify_audit().await.unwrap().ok);
}
