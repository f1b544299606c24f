//! Cases: transitions, assignment, event links (unique), notes, tags, audit rows.

use vigil_relational::{Db, Error, Principal, Role};

use crate::on_both;

async fn user(db: &Db, email: &str) -> Principal {
    let u = db
        .create_user(
            &Principal::system(),
            email,
            "long password",
            None,
            &[Role::Analyst],
        )
        .await
        .unwrap();
    Principal {
        actor: format!("user:{}", u.id),
        role: Role::Analyst,
        user_id: Some(u.id),
        token_id: None,
        ip_address: None,
        user_agent: None,
        expires_at: None,
    }
}

async fn case_workflow(db: Db) {
    let ana = user(&db, "ana@example.com").await;
    let bob = user(&db, "bob@example.com").await;
    let c = db
        .create_case(&ana, "Brute force on ssh", "many failures", Some("high"))
        .await
        .unwrap();
    assert_eq!(c.status, "OPEN");
    let c = db
        .set_case_status(&ana, c.id, "INVESTIGATING")
        .await
        .unwrap();
    assert_eq!(c.status, "INVESTIGATING");
    let c = db.set_case_status(&ana, c.id, "RESOLVED").await.unwrap();
    assert!(c.resolved_at.is_some());
    let err = db
        .set_case_status(&ana, c.id, "INVESTIGATING")
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
    let c = db.set_case_status(&ana, c.id, "OPEN").await.unwrap();
    assert!(c.resolved_at.is_none(), "reopened");
    assert!(matches!(
        db.set_case_status(&ana, c.id, "CLOSED").await,
        Err(Error::Invalid { .. })
    ));

    let c = db.assign_case(&ana, c.id, bob.user_id).await.unwrap();
    assert_eq!(c.assigned_to, bob.user_id);
    assert!(matches!(
        db.assign_case(&ana, c.id, Some(999)).await,
        Err(Error::Invalid { .. })
    ));

    db.link_event(&ana, c.id, "evt-1").await.unwrap();
    db.link_event(&ana, c.id, "evt-2").await.unwrap();
    assert!(matches!(
        db.link_event(&ana, c.id, "evt-1").await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(db.case_events(c.id).await.unwrap(), ["evt-1", "evt-2"]);
    db.unlink_event(&ana, c.id, "evt-1").await.unwrap();
    assert!(matches!(
        db.unlink_event(&ana, c.id, "evt-1").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        db.link_event(&ana, 999, "evt-3").await,
        Err(Error::NotFound { .. })
    ));

    db.add_case_note(&ana, c.id, "source is 10.0.0.7")
        .await
        .unwrap();
    db.tag_case(&ana, c.id, "ssh").await.unwrap();
    db.tag_case(&bob, c.id, "brute-force").await.unwrap();
    assert!(matches!(
        db.tag_case(&ana, c.id, "ssh").await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(db.case(c.id).await.unwrap().tags, ["brute-force", "ssh"]);

    let report = db.verify_audit().await.unwrap();
    assert!(report.ok, "{report:?}");
    let actions: Vec<String> = db
        .audit_rows(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for a in [
        "CASE_CREATED",
        "CASE_UPDATED",
        "CASE_ASSIGNED",
        "EVENT_LINKED",
        "EVENT_UNLINKED",
        "CASE_NOTE_ADDED",
        "CASE_TAGGED",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }
}
on_both!(cases, case_workflow);
