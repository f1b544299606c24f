//! Users, roles and API tokens.

use vigil_relational::{Db, Error, Principal, Role};

use crate::on_both;

async fn users_and_passwords(db: Db) {
    let admin = Principal::system();
    let u = db
        .create_user(
            &admin,
            "ana@example.com",
            "correct horse",
            Some("Ana"),
            &[Role::Analyst, Role::Viewer],
        )
        .await
        .unwrap();
    assert_eq!(u.roles, [Role::Analyst, Role::Viewer]);
    assert!(u.is_active);
    let err = db
        .create_user(&admin, "ana@example.com", "another one", None, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    let err = db
        .create_user(&admin, "not-an-email", "long enough", None, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { field: "email", .. }),
        "{err}"
    );
    let err = db
        .create_user(&admin, "b@example.com", "short", None, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "password",
                ..
            }
        ),
        "{err}"
    );

    assert_eq!(
        db.check_password("ana@example.com", "correct horse")
            .await
            .unwrap()
            .unwrap()
            .id,
        u.id
    );
    assert!(
        db.check_password("ana@example.com", "wrong horse")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        db.check_password("nobody@example.com", "correct horse")
            .await
            .unwrap()
            .is_none()
    );
    // The stored hash is Argon2id, never the password.
    vigil_relational::dispatch!(&db, pool => {
        let hash: String = sqlx::query_scalar("SELECT hashed_password FROM users WHERE id = $1")
            .bind(u.id)
            .fetch_one(pool.ex())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
    });
    // One audit row for the user created; none for the refused attempts (they failed
    // validation before any mutation).
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.rows, 1);
}
on_both!(users, users_and_passwords);

async fn tokens_authenticate_until_revoked(db: Db) {
    let admin = Principal::system();
    let (token, secret) = db
        .create_token(&admin, "ci", Role::Agent, None, None, None)
        .await
        .unwrap();
    assert!(secret.starts_with("vgl_") && secret.len() == 68, "{secret}");
    let p = db.authenticate(&secret).await.unwrap();
    assert_eq!(p.role, Role::Agent);
    assert_eq!(p.token_id, Some(token.id));
    assert_eq!(p.actor, format!("token:{}", token.id));
    assert!(matches!(
        db.authenticate("vgl_nope").await,
        Err(Error::Unauthenticated)
    ));
    // Only the digest is stored.
    vigil_relational::dispatch!(&db, pool => {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE token_hash = $1")
            .bind(&secret)
            .fetch_one(pool.ex())
            .await
            .unwrap();
        assert_eq!(n, 0);
    });
    db.revoke_token(&admin, token.id).await.unwrap();
    assert!(matches!(
        db.authenticate(&secret).await,
        Err(Error::Unauthenticated)
    ));
    assert!(matches!(
        db.revoke_token(&admin, token.id).await,
        Err(Error::NotFound { .. })
    ));

    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let err = db
        .create_token(&admin, "old", Role::Viewer, None, Some(past), None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Invalid {
            field: "expires_at",
            ..
        }
    ));
    let soon = chrono::Utc::now() + chrono::Duration::hours(1);
    let (t, s) = db
        .create_token(
            &admin,
            "given",
            Role::Admin,
            None,
            Some(soon),
            Some("vgl_given-secret".into()),
        )
        .await
        .unwrap();
    assert_eq!(s, "vgl_given-secret");
    assert_eq!(db.authenticate(&s).await.unwrap().token_id, Some(t.id));
    let err = db
        .create_token(
            &admin,
            "again",
            Role::Admin,
            None,
            None,
            Some("vgl_given-secret".into()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!("root".parse::<Role>().is_err());
    assert!(
        db.ensure_token("data dir", Role::Admin, "vgl_admin-file")
            .await
            .unwrap()
    );
    assert!(
        !db.ensure_token("data dir", Role::Admin, "vgl_admin-file")
            .await
            .unwrap()
    );
    assert!(matches!(
        db.ensure_token("x", Role::Agent, "vgl_admin-file").await,
        Err(Error::Conflict { .. })
    ));
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.rows, 4, "created, revoked, created, ensured");
}
on_both!(tokens, tokens_authenticate_until_revoked);

/// A deactivated user cannot log in and their tokens stop working; reactivating restores
/// both. Each change leaves an audit row; users list with their roles.
async fn users_deactivate_and_list(db: Db) {
    let admin = Principal::system();
    let u = db
        .create_user(
            &admin,
            "bo@example.com",
            "correct horse",
            None,
            &[Role::Viewer],
        )
        .await
        .unwrap();
    let (_, secret) = db
        .create_token(&admin, "bo's", Role::Viewer, Some(u.id), None, None)
        .await
        .unwrap();
    let (_, service) = db
        .create_token(&admin, "shipper", Role::Agent, None, None, None)
        .await
        .unwrap();
    assert!(db.authenticate(&secret).await.is_ok());
    let before = db.verify_audit().await.unwrap().rows;

    let off = db.set_user_active(&admin, u.id, false).await.unwrap();
    assert!(!off.is_active);
    assert!(matches!(
        db.authenticate(&secret).await,
        Err(Error::Unauthenticated)
    ));
    assert!(db.authenticate(&service).await.is_ok(), "others unaffected");
    assert_eq!(
        db.check_password("bo@example.com", "correct horse")
            .await
            .unwrap(),
        None
    );
    let on = db.set_user_active(&admin, u.id, true).await.unwrap();
    assert!(on.is_active);
    assert!(db.authenticate(&secret).await.is_ok());
    assert!(matches!(
        db.set_user_active(&admin, 999_999, false).await,
        Err(Error::NotFound { .. })
    ));
    let report = db.verify_audit().await.unwrap();
    assert!(report.ok);
    assert_eq!(report.rows, before + 2);

    let users = db.users().await.unwrap();
    let bo = users.iter().find(|x| x.id == u.id).unwrap();
    assert_eq!(
        (bo.email.as_str(), bo.roles.as_slice()),
        ("bo@example.com", &[Role::Viewer][..])
    );
    assert!(
        users
            .iter()
            .any(|x| x.email.ends_with("@tokens.vigil.invalid") && x.roles == [Role::Agent]),
        "the shipper token's service user is listed"
    );
}
on_both!(users_deactivate, users_deactivate_and_list);
