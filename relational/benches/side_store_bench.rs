//! Side store mutation throughput and list latency on SQLite (the embedded default).
//!
//! Measures: ticket creations per second (each with its audit row, one transaction and
//! one fsync each, `synchronous=FULL`), sequentially and from 8 concurrent tasks; then the
//! latency of the first page (50) of the ticket list and of the audit log.
//!
//! `cargo bench -p vigil-relational --bench side_store_bench -- [mutations]`

use std::time::Instant;

use vigil_relational::{Db, NewTicket, Principal, Role, TicketFilter};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
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
        token_id: None,
        ip_address: None,
        user_agent: None,
        expires_at: None,
    };
    let ticket = |i: usize| NewTicket {
        title: format!("ticket {i}"),
        ..NewTicket::default()
    };
    let t = Instant::now();
    for i in 0..n / 2 {
        db.create_ticket(&by, &ticket(i)).await.expect("create");
    }
    let sequential = (n / 2) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..8 {
        let (db, by) = (db.clone(), by.clone());
        let per = n / 2 / 8;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                db.create_ticket(&by, &ticket(k * per + i))
                    .await
                    .expect("create");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let concurrent = (n / 2 / 8 * 8) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let page = db
        .tickets(&TicketFilter {
            limit: 50,
            status: Some("open".into()),
            ..TicketFilter::default()
        })
        .await
        .expect("list");
    let list = t.elapsed();
    let t = Instant::now();
    let audit = db.audit_rows(Some(n as i64 / 2), 50).await.expect("audit");
    let audit_list = t.elapsed();
    println!("ticket creations (with audit row), sequential: {sequential:.0}/s");
    println!("ticket creations (with audit row), 8 tasks:    {concurrent:.0}/s");
    println!(
        "first page of {} tickets ({} rows): {:.2} ms; audit page ({} rows): {:.2} ms",
        n,
        page.len(),
        list.as_secs_f64() * 1e3,
        audit.len(),
        audit_list.as_secs_f64() * 1e3
    );
}
