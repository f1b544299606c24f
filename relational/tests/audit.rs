//! The audit chain: appends, verification, and detection of edited, deleted and
//! reordered rows.

use serde_json::json;
use vigil_relational::{AuditEntry, Db, Outcome, Principal, Role, dispatch};

use crate::on_both;

fn entry(n: i64) -> AuditEntry {
    AuditEntry {
        actor: format!("user:{}", n % 3),
        action: "CASE_UPDATED".into(),
        target_type: "case".into(),
        target_id: Some(n.to_string()),
        outcome: if n % 5 == 0 {
            Outcome::Denied
        } else {
            Outcome::Allowed
        },
        metadata: json!({"status": {"from": "OPEN", "to": "INVESTIGATING"}, "n": n}),
        ip_address: Some("127.0.0.1".into()),
        user_agent: None,
    }
}

/// Runs raw SQL as someone with direct database access would (triggers dropped first).
async fn tamper(db: &Db, sql: &'static str) {
    let drop_triggers = match db {
        Db::Sqlite(_) => vec![
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        Db::Postgres(_) => vec![
            "DROP TRIGGER audit_log_no_update ON audit_log",
            "DROP TRIGGER audit_log_no_delete ON audit_log",
        ],
    };
    dispatch!(db, pool => {
        for s in drop_triggers {
            let _ = sqlx::query(s).execute(pool.ex()).await;
        }
        sqlx::query(sql).execute(pool.ex()).await.unwrap();
    });
}

async fn chain_verifies_and_refuses_changes(db: Db) {
    for n in 1..=20 {
        let row = db.audit(&entry(n)).await.unwrap();
        assert_eq!(row.id, n);
    }
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.rows, 20);
    let rows = db.audit_rows(Some(18), 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [19, 20]);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    // The triggers refuse updates and deletes.
    dispatch!(&db, pool => {
        assert!(sqlx::query("UPDATE audit_log SET actor = 'x' WHERE id = 3").execute(pool.ex()).await.is_err());
        assert!(sqlx::query("DELETE FROM audit_log WHERE id = 3").execute(pool.ex()).await.is_err());
    });
}
on_both!(chain_verifies, chain_verifies_and_refuses_changes);

async fn edited_row_is_detected(db: Db) {
    for n in 1..=5 {
        db.audit(&entry(n)).await.unwrap();
    }
    tamper(
        &db,
        "UPDATE audit_log SET actor = 'someone-else' WHERE id = 3",
    )
    .await;
    let report = db.verify_audit().await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_id, Some(3));
    assert!(report.problem.unwrap().contains("edited"));
}
on_both!(edit_detected, edited_row_is_detected);

async fn deleted_rows_are_detected(db: Db) {
    for n in 1..=5 {
        db.audit(&entry(n)).await.unwrap();
    }
    tamper(&db, "DELETE FROM audit_log WHERE id = 2").await;
    let report = db.verify_audit().await.unwrap();
    assert_eq!(report.first_bad_id, Some(3), "{report:?}");
    assert!(report.problem.unwrap().contains("deleted"));
}
on_both!(delete_detected, deleted_rows_are_detected);

async fn deleted_newest_rows_are_detected(db: Db) {
    for n in 1..=5 {
        db.audit(&entry(n)).await.unwrap();
    }
    tamper(&db, "DELETE FROM audit_log WHERE id >= 4").await;
    let report = db.verify_audit().await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(report.problem.unwrap().contains("head names row 5"));
}
on_both!(truncation_detected, deleted_newest_rows_are_detected);

async fn reordered_rows_are_detected(db: Db) {
    for n in 1..=5 {
        db.audit(&entry(n)).await.unwrap();
    }
    // Swap the contents of rows 2 and 3 (ids stay in order).
    tamper(&db, "UPDATE audit_log SET id = 100 WHERE id = 2").await;
    tamper(&db, "UPDATE audit_log SET id = 2 WHERE id = 3").await;
    tamper(&db, "UPDATE audit_log SET id = 3 WHERE id = 100").await;
    let report = db.verify_audit().await.unwrap();
    assert_eq!(report.first_bad_id, Some(2), "{report:?}");
}
on_both!(reorder_detected, reordered_rows_are_detected);

async fn concurrent_appends_keep_one_chain(db: Db) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10 {
                db.audit(&entry(t * 100 + n)).await.unwrap();
            }
        }));
    }
    // Verifying while they write sees one consistent snapshot each time.
    let verifier = {
        let db = db.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let report = db.verify_audit().await.unwrap();
                assert!(report.ok, "during writes: {report:?}");
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    verifier.await.unwrap();
    let mut seen = Vec::new();
    let report = db
        .verify_audit_with(|done, total| seen.push((done, total)))
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.rows, 80);
    assert_eq!(seen.last(), Some(&(80, 80)), "progress ends at the total");
}
on_both!(concurrent_appends, concurrent_appends_keep_one_chain);

/// Two writers on one SQLite file (a server and `vigil token create`): each notices the
/// other's rows, so the chain stays one chain.
#[tokio::test]
async fn two_processes_on_one_sqlite_file_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = Db::open_sqlite(dir.path()).await.unwrap();
    let b = Db::open_sqlite(dir.path()).await.unwrap();
    for i in 0..5 {
        let (db, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        db.create_token(
            &Principal::system(),
            &format!("t{i}"),
            Role::Viewer,
            None,
            None,
            None,
        )
        .await
        .unwrap();
        other
            .create_token(
                &Principal::system(),
                &format!("u{i}"),
                Role::Viewer,
                None,
                None,
                None,
            )
            .await
            .unwrap();
    }
    // A mutation that fails leaves no transaction open behind it (which would hold the
    // database's write lock): the other process writes at once, not after its 10 s busy
    // timeout.
    let dup = a
        .create_token(
            &Principal::system(),
            "t0",
            Role::Viewer,
            None,
            None,
            Some("x".repeat(8)),
        )
        .await;
    assert!(dup.is_ok());
    let again = a
        .create_token(
            &Principal::system(),
            "t0",
            Role::Viewer,
            None,
            None,
            Some("x".repeat(8)),
        )
        .await;
    assert!(
        matches!(again, Err(vigil_relational::Error::Conflict { .. })),
        "{again:?}"
    );
    let quick = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        b.create_token(
            &Principal::system(),
            "after",
            Role::Viewer,
            None,
            None,
            None,
        ),
    )
    .await;
    assert!(matches!(quick, Ok(Ok(_))), "{quick:?}");
    let report = a.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.rows, 12);
}
