//! Systems, alert settings, alerts; deleting a system cascades.

use vigil_relational::{AlertSettings, Db, Error, Inventory, NewTicket, Principal, Role};

use crate::on_both;

async fn systems_alerts_and_cascade(db: Db) {
    let sys = Principal::system();
    let u = db
        .create_user(
            &sys,
            "ana@example.com",
            "long password",
            None,
            &[Role::Analyst],
        )
        .await
        .unwrap();
    let ana = Principal {
        actor: format!("user:{}", u.id),
        role: Role::Analyst,
        user_id: Some(u.id),
        token_id: None,
        ip_address: None,
        user_agent: None,
        expires_at: None,
    };
    let inv = Inventory {
        os_name: Some("Debian 12".into()),
        cpu_cores: Some(8),
        total_memory_gb: Some(31.2),
        ..Inventory::default()
    };
    let s = db.upsert_system(&sys, "web-1", &inv).await.unwrap();
    assert_eq!(s.cpu_cores, Some(8));
    let again = db
        .upsert_system(
            &sys,
            "web-1",
            &Inventory {
                agent_version: Some("0.1.0".into()),
                ..Inventory::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.id, s.id);
    assert_eq!(again.os_name.as_deref(), Some("Debian 12"), "kept");
    assert_eq!(again.agent_version.as_deref(), Some("0.1.0"));
    let other = db
        .upsert_system(&sys, "db-1", &Inventory::default())
        .await
        .unwrap();
    let s = db
        .update_system(&ana, s.id, Some("front web"), None)
        .await
        .unwrap();
    assert_eq!(s.user_label.as_deref(), Some("front web"));
    db.update_system(&ana, other.id, None, Some(false))
        .await
        .unwrap();
    assert_eq!(
        db.systems(false, None, 10).await.unwrap().len(),
        1,
        "inactive hidden"
    );
    assert_eq!(db.systems(true, None, 10).await.unwrap().len(), 2);

    let global = db.alert_settings(None).await.unwrap();
    assert_eq!((global.cpu_threshold, global.system_id), (90.0, None));
    assert_eq!(
        db.alert_settings(Some(s.id)).await.unwrap().system_id,
        None,
        "falls back to global"
    );
    let own = AlertSettings {
        system_id: Some(s.id),
        cpu_threshold: 75.0,
        memory_threshold: 80.0,
        disk_threshold: 95.0,
    };
    assert_eq!(db.set_alert_settings(&ana, &own).await.unwrap(), own);
    let own2 = AlertSettings {
        cpu_threshold: 70.0,
        ..own
    };
    assert_eq!(
        db.set_alert_settings(&ana, &own2)
            .await
            .unwrap()
            .cpu_threshold,
        70.0
    );
    let g = AlertSettings {
        system_id: None,
        cpu_threshold: 85.0,
        ..global
    };
    assert_eq!(
        db.set_alert_settings(&ana, &g).await.unwrap().cpu_threshold,
        85.0
    );
    let bad = AlertSettings {
        cpu_threshold: 120.0,
        ..own
    };
    assert!(matches!(
        db.set_alert_settings(&ana, &bad).await,
        Err(Error::Invalid {
            field: "cpu_threshold",
            ..
        })
    ));

    let a = db
        .raise_alert(&sys, Some(s.id), "CPU", "CRITICAL", "cpu 97% for 5m")
        .await
        .unwrap();
    assert_eq!(a.status, "firing");
    assert!(matches!(
        db.raise_alert(&sys, Some(s.id), "CPU", "LOUD", "x").await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(db.alerts(Some("firing"), None, 10).await.unwrap().len(), 1);
    let a = db
        .set_alert_status(&ana, a.id, "acknowledged")
        .await
        .unwrap();
    assert_eq!(a.acknowledged_by, Some(u.id));
    let a = db.set_alert_status(&ana, a.id, "resolved").await.unwrap();
    assert!(a.resolved_at.is_some());
    assert!(matches!(
        db.set_alert_status(&ana, a.id, "acknowledged").await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        db.alerts(Some("open"), None, 10).await,
        Err(Error::Invalid { .. })
    ));

    let (t, _) = db
        .create_ticket(
            &ana,
            &NewTicket {
                title: "CPU".into(),
                system_id: Some(s.id),
                alert_id: Some(a.id),
                ..NewTicket::default()
            },
        )
        .await
        .unwrap();
    db.delete_system(&ana, s.id).await.unwrap();
    assert!(matches!(db.system(s.id).await, Err(Error::NotFound { .. })));
    assert!(
        matches!(db.alert(a.id).await, Err(Error::NotFound { .. })),
        "alerts cascade"
    );
    assert!(
        matches!(db.ticket(t.id).await, Err(Error::NotFound { .. })),
        "tickets cascade"
    );
    assert!(db.verify_audit().await.unwrap().ok);
}
on_both!(systems, systems_alerts_and_cascade);
