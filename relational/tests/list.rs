//! Lists: filters, sort orders and keyset pagination, on both backends.

use std::collections::BTreeMap;

use vigil_relational::list::{AUDIT, TICKETS};
use vigil_relational::{AuditRow, Db, Error, ListParams, NewTicket, Page, Principal, Role, Ticket};

use crate::on_both;

async fn all_pages(db: &Db, params: ListParams) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut params = params;
    loop {
        let page: Page<Ticket> = db.list(&TICKETS, &params, None).await.unwrap();
        pages.push(page.items.iter().map(|t| t.id).collect());
        match page.next_cursor {
            Some(c) => params.cursor = Some(c),
            None => return pages,
        }
    }
}

async fn tickets_page_filter_and_sort(db: Db) {
    let u = db
        .create_user(
            &Principal::system(),
            "p@example.com",
            "long password",
            None,
            &[Role::Analyst],
        )
        .await
        .unwrap();
    let by = Principal {
        user_id: Some(u.id),
        ..Principal::system()
    };
    let priorities = [
        "low", "critical", "medium", "high", "low", "critical", "medium",
    ];
    let mut ids = Vec::new();
    for (i, p) in priorities.iter().enumerate() {
        let new = NewTicket {
            title: format!("t{i}"),
            priority: Some(p.to_string()),
            ..NewTicket::default()
        };
        ids.push(db.create_ticket(&by, &new).await.unwrap().0.id);
    }
    let limit3 = ListParams {
        limit: Some(3),
        ..ListParams::default()
    };
    // Newest first by default; pages of 3, 3, 1, none repeated or skipped.
    let pages = all_pages(&db, limit3.clone()).await;
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(pages.concat(), newest_first);
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );

    // By priority rank, then id: low < medium < high < critical.
    let by_priority = ListParams {
        sort: Some("priority".into()),
        ..limit3.clone()
    };
    let order = all_pages(&db, by_priority).await.concat();
    let expect = vec![ids[0], ids[4], ids[2], ids[6], ids[3], ids[1], ids[5]];
    assert_eq!(order, expect);
    let desc = ListParams {
        sort: Some("-priority".into()),
        ..limit3.clone()
    };
    let order = all_pages(&db, desc).await.concat();
    assert_eq!(order, expect.iter().rev().copied().collect::<Vec<_>>());

    // A filter; a row added between pages neither repeats nor shifts the next page.
    let crit = limit3.clone().filter("priority", "critical");
    let first: Page<Ticket> = db.list(&TICKETS, &crit, None).await.unwrap();
    assert_eq!(
        first.items.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[5], ids[1]]
    );
    assert!(first.next_cursor.is_none());
    let mut one = ListParams {
        limit: Some(1),
        ..ListParams::default()
    };
    let p1: Page<Ticket> = db.list(&TICKETS, &one, None).await.unwrap();
    let newer = NewTicket {
        title: "newer".into(),
        ..NewTicket::default()
    };
    db.create_ticket(&by, &newer).await.unwrap();
    one.cursor = p1.next_cursor;
    let p2: Page<Ticket> = db.list(&TICKETS, &one, None).await.unwrap();
    assert_eq!(p2.items[0].id, ids[5]);

    // Bad requests name what was wrong.
    let bad = |params: ListParams| {
        let db = db.clone();
        async move {
            db.list::<Ticket>(&TICKETS, &params, None)
                .await
                .unwrap_err()
        }
    };
    let e = bad(ListParams::default().filter("colour", "red")).await;
    assert!(e.to_string().contains("unknown parameter 'colour'"), "{e}");
    let e = bad(ListParams::default().filter("priority", "urgent")).await;
    assert!(e.to_string().contains("expected one of low, medium"), "{e}");
    let e = bad(ListParams::default().filter("assignee_id", "x")).await;
    assert!(e.to_string().contains("not an integer"), "{e}");
    let e = bad(ListParams {
        sort: Some("title".into()),
        ..ListParams::default()
    })
    .await;
    assert!(matches!(e, Error::Invalid { field: "sort", .. }), "{e}");
    let e = bad(ListParams {
        cursor: Some("zz".into()),
        ..ListParams::default()
    })
    .await;
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "cursor",
                ..
            }
        ),
        "{e}"
    );
    // A cursor of another sort order is refused rather than misread.
    let p: Page<Ticket> = db.list(&TICKETS, &limit3, None).await.unwrap();
    let e = bad(ListParams {
        sort: Some("priority".into()),
        cursor: p.next_cursor,
        ..ListParams::default()
    })
    .await;
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "cursor",
                ..
            }
        ),
        "{e}"
    );
    let e = ListParams::from_query(BTreeMap::from([("limit".to_string(), "0".to_string())]))
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "limit", .. }), "{e}");
}
on_both!(tickets_pages, tickets_page_filter_and_sort);

async fn audit_filters_by_time_and_outcome(db: Db) {
    let since = chrono::Utc::now().to_rfc3339();
    db.create_user(
        &Principal::system(),
        "q@example.com",
        "long password",
        None,
        &[Role::Viewer],
    )
    .await
    .unwrap();
    let page: Page<AuditRow> = db
        .list(&AUDIT, &ListParams::default().filter("since", &since), None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].action, "USER_CREATED");
    let page: Page<AuditRow> = db
        .list(
            &AUDIT,
            &ListParams::default().filter("outcome", "denied"),
            None,
        )
        .await
        .unwrap();
    assert!(page.items.is_empty());
    let e = db
        .list::<AuditRow>(
            &AUDIT,
            &ListParams::default().filter("since", "yesterday"),
            None,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("RFC 3339"), "{e}");
}
on_both!(audit_list, audit_filters_by_time_and_outcome);
