//! Polymorphic links, projects, assets.

use vigil_relational::{Db, Error, Principal};

use crate::on_both;

async fn links_projects_assets(db: Db) {
    let sys = Principal::system();
    let l = db
        .add_link(&sys, ("ticket", "1"), ("event", "evt-9"), "evidence")
        .await
        .unwrap();
    db.add_link(
        &sys,
        ("ticket", "1"),
        ("url", "https://wiki/runbook"),
        "runbook",
    )
    .await
    .unwrap();
    assert!(matches!(
        db.add_link(&sys, ("ticket", "1"), ("event", "evt-9"), "again")
            .await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        db.add_link(&sys, ("spaceship", "1"), ("event", "e"), "x")
            .await,
        Err(Error::Invalid {
            field: "source_type",
            ..
        })
    ));
    let links = db.links("ticket", "1").await.unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].linkable_id, "evt-9");
    db.remove_link(&sys, l.id).await.unwrap();
    assert!(matches!(
        db.remove_link(&sys, l.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(db.links("ticket", "1").await.unwrap().len(), 1);

    db.create_project(&sys, "Platform", "infra work")
        .await
        .unwrap();
    assert!(matches!(
        db.create_project(&sys, "Platform", "").await,
        Err(Error::Conflict { .. })
    ));
    db.create_asset(&sys, "laptop-ana", "laptop", Some("SN-1"))
        .await
        .unwrap();
    db.create_asset(&sys, "no serial", "switch", None)
        .await
        .unwrap();
    db.create_asset(&sys, "no serial 2", "switch", None)
        .await
        .unwrap();
    assert!(matches!(
        db.create_asset(&sys, "dup", "laptop", Some("SN-1")).await,
        Err(Error::Conflict { .. })
    ));
    assert!(db.verify_audit().await.unwrap().ok);
}
on_both!(links, links_projects_assets);
