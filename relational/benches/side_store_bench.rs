//! Side store mutation throughput and list latency on SQLite (the embedded default,
//! `synchronous=FULL`: a mutation is acknowledged once its group's commit is fsynced).
//!
//! 1. Ticket creations per second, each with its audit row, from 1, 8, 64 and 256
//!    concurrent tasks (concurrent mutations share a commit: group commit).
//! 2. List latency at scale: the store is filled (bulk, outside the API) to `--tickets`
//!    tickets and `--audit` audit rows, then the first page and a deep page (by cursor) of
//!    the ticket list (default sort, a status filter, sort by priority) and of the audit
//!    log (newest first, an action filter) are timed, median of 20 runs each.
//!
//! `cargo bench -p vigil-relational --bench side_store_bench -- [--mutations N]
//!  [--tickets N] [--audit N]`

use std::time::{Duration, Instant};

use vigil_relational::list::{AUDIT, TICKETS};
use vigil_relational::{
    AuditRow, Db, ListParams, NewTicket, Page, Principal, Reader, Role, Ticket,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn creations(db: &Db, by: &Principal, tasks: usize, total: usize) -> f64 {
    let per = (total / tasks).max(1);
    let t = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|k| {
            let (db, by) = (db.clone(), by.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let new = NewTicket {
                        title: format!("ticket {k}/{i}"),
                        priority: Some("medium".into()),
                        ..NewTicket::default()
                    };
                    db.create_ticket(&by, &new).await.expect("create");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    (per * tasks) as f64 / t.elapsed().as_secs_f64()
}

/// Median time of `f` over 20 runs.
async fn median<F, Fut, T>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        std::hint::black_box(f().await);
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Adds tickets and audit rows in bulk (one transaction each 50k rows).
async fn fill(db: &Db, reporter: i64, tickets: usize, audit: usize) {
    let Db::Sqlite(store) = db else {
        unreachable!("the bench runs on SQLite")
    };
    let pool = store.ex();
    let statuses = ["open", "in_progress", "waiting", "resolved", "closed"];
    let categories = ["todo", "in_progress", "in_progress", "done", "done"];
    let priorities = ["low", "medium", "high", "critical"];
    let now = chrono::Utc::now();
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets")
        .fetch_one(pool)
        .await
        .expect("count");
    for chunk in (have as usize..tickets).collect::<Vec<_>>().chunks(50_000) {
        let mut tx = pool.begin().await.expect("begin");
        for &i in chunk {
            let s = i % 5;
            sqlx::query(
                "INSERT INTO tickets (ticket_number, title, description, status, status_category, \
                 priority, issue_type, reporter_id, created_at, updated_at) \
                 VALUES ($1, $2, '', $3, $4, $5, 'task', $6, $7, $7)",
            )
            .bind(format!("BULK-{i:07}"))
            .bind(format!("bulk ticket {i}"))
            .bind(statuses[s])
            .bind(categories[s])
            .bind(priorities[i % 4])
            .bind(reporter)
            .bind(now - chrono::Duration::seconds((tickets - i) as i64))
            .execute(&mut *tx)
            .await
            .expect("insert ticket");
        }
        tx.commit().await.expect("commit");
    }
    let (mut last_id, mut prev): (i64, String) =
        sqlx::query_as("SELECT last_id, last_hash FROM audit_head WHERE id = 1")
            .fetch_one(pool)
            .await
            .expect("head");
    let actions = [
        "TICKET_CREATED",
        "TICKET_UPDATED",
        "COMMENT_ADDED",
        "CASE_CREATED",
    ];
    while (last_id as usize) < audit {
        let mut tx = pool.begin().await.expect("begin");
        for _ in 0..50_000.min(audit - last_id as usize) {
            let entry = vigil_relational::AuditEntry {
                actor: format!("user:{}", last_id % 50),
                action: actions[last_id as usize % 4].into(),
                target_type: "ticket".into(),
                target_id: Some((last_id % 100_000).to_string()),
                outcome: vigil_relational::Outcome::Allowed,
                metadata: serde_json::json!({"bulk": true}),
                ip_address: None,
                user_agent: None,
            };
            let row = vigil_relational::new_row(last_id + 1, prev, &entry);
            sqlx::query(
                "INSERT INTO audit_log (id, actor, action, target_type, target_id, outcome, \
                 metadata, ip_address, user_agent, prev_hash, hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(row.id)
            .bind(&row.actor)
            .bind(&row.action)
            .bind(&row.target_type)
            .bind(&row.target_id)
            .bind(&row.outcome)
            .bind(sqlx::types::Json(&row.metadata))
            .bind(&row.ip_address)
            .bind(&row.user_agent)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await
            .expect("insert audit row");
            last_id = row.id;
            prev = row.hash;
        }
        sqlx::query("UPDATE audit_head SET last_id = $1, last_hash = $2 WHERE id = 1")
            .bind(last_id)
            .bind(&prev)
            .execute(&mut *tx)
            .await
            .expect("head");
        tx.commit().await.expect("commit");
    }
}

async fn pages<T: vigil_relational::list::FromRows>(
    db: &Db,
    resource: &vigil_relational::list::Resource,
    label: &str,
    params: ListParams,
) {
    let first = median(|| db.list::<T>(resource, &params, None)).await;
    // A deep page: follow the cursor 20 pages in.
    let mut p = params.clone();
    for _ in 0..20 {
        let page: Page<T> = db.list(resource, &p, None).await.expect("list");
        match page.next_cursor {
            Some(c) => p.cursor = Some(c),
            None => break,
        }
    }
    let deep = median(|| db.list::<T>(resource, &p, None)).await;
    println!(
        "  {label:<40} first page {:>7.2} ms, page 21 {:>7.2} ms",
        first.as_secs_f64() * 1e3,
        deep.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let mutations = arg("--mutations", 4000);
    let tickets = arg("--tickets", 100_000);
    let audit = arg("--audit", 1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open_sqlite(dir.path()).await.expect("open");
    let u = db
        .create_user(
            &Principal::system(),
            "bench@example.com",
            "long password",
            None,
            &[Role::Analyst],
        )
        .await
        .expect("user");
    let by = Principal {
        actor: format!("user:{}", u.id),
        role: Role::Analyst,
        user_id: Some(u.id),
        ..Principal::system()
    };
    println!("ticket creations with their audit rows (SQLite, synchronous=FULL):");
    for tasks in [1, 8, 64, 256] {
        let n = if tasks == 1 { mutations / 8 } else { mutations };
        let rate = creations(&db, &by, tasks, n).await;
        println!("  {tasks:>3} concurrent tasks: {rate:>7.0} mutations/s");
    }
    let t = Instant::now();
    fill(&db, u.id, tickets, audit).await;
    println!(
        "filled to {tickets} tickets and {audit} audit rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(db.verify_audit().await.expect("verify").ok);
    println!("list latency (median of 20, limit 50):");
    let limit = ListParams {
        limit: Some(50),
        ..ListParams::default()
    };
    pages::<Ticket>(&db, &TICKETS, "tickets, newest first", limit.clone()).await;
    pages::<Ticket>(
        &db,
        &TICKETS,
        "tickets, status=open",
        limit.clone().filter("status", "open"),
    )
    .await;
    pages::<Ticket>(
        &db,
        &TICKETS,
        "tickets, sort=-priority",
        ListParams {
            sort: Some("-priority".into()),
            ..limit.clone()
        },
    )
    .await;
    pages::<AuditRow>(&db, &AUDIT, "audit, newest first", limit.clone()).await;
    pages::<AuditRow>(
        &db,
        &AUDIT,
        "audit, action=COMMENT_ADDED",
        limit.clone().filter("action", "COMMENT_ADDED"),
    )
    .await;
    let t = Instant::now();
    let report = db.verify_audit().await.expect("verify");
    println!(
        "audit verify over {} rows: {:.2} s",
        report.rows,
        t.elapsed().as_secs_f64()
    );
}
