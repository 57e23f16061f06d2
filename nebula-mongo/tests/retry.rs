//! Transient errors are retried, then reported as `Unavailable`: errors injected by the
//! server's `failCommand` fail point (secantusdb runs with `--enable-test-commands` under
//! `.ci/mongo.sh`; a real mongod needs `--setParameter enableTestCommands=1`). The fail point
//! is scoped to this test's `appName`, and this binary holds this one test, so no other test
//! meets the injected errors. Skipped (with a message) when the server has no fail points.

mod common;

use common::{TestDb, server_url, with_option};
use mongodb::bson::{Document, doc};
use nebula_core::store::{Collection, Expect, Store, StoreError};
use nebula_mongo::{MongoConfig, MongoStore};
use serde_json::json;

async fn fail_point(admin: &mongodb::Database, mode: mongodb::bson::Bson, data: Document) {
    admin
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_then_unavailable() {
    let Some(url) = server_url().await else {
        return;
    };
    let app_name = format!("nebula-failpoint-{:08x}", rand::random::<u32>());
    let db = TestDb::new(&url, "retry").await;
    let admin = db.client.database("admin");

    // Does the server have fail points, and does it scope them by appName? Probe with a
    // command no store call sends.
    let probe = admin
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": 1 },
            "data": { "failCommands": ["ping"], "errorCode": 2, "appName": "nebula-nobody" },
        })
        .await;
    if let Err(e) = probe {
        println!(
            "SKIPPED: the server has no failCommand fail point ({e}); start it with test commands enabled"
        );
        db.drop_db().await;
        return;
    }
    let pinged = admin.run_command(doc! { "ping": 1 }).await;
    fail_point(&admin, "off".into(), doc! {}).await;
    if pinged.is_err() {
        println!(
            "SKIPPED: the server's fail points ignore appName, so they would hit every client"
        );
        db.drop_db().await;
        return;
    }

    let config = MongoConfig {
        schema_name: db.name.clone(),
        // Frequent heartbeats: a dropped connection makes the driver re-check the server.
        ..MongoConfig::new(with_option(
            &url,
            &format!("appName={app_name}&heartbeatFrequencyMS=500"),
        ))
    };
    let store = MongoStore::connect(&config).await.unwrap();
    let coll = Collection::Apps;
    let t0 = std::time::Instant::now();

    // Three failures of "host unreachable" (not a state change, which would make the driver
    // forget the primary until its next heartbeat): the driver retries once, this store again.
    fail_point(
        &admin,
        doc! { "times": 3 }.into(),
        doc! {
            "failCommands": ["insert"],
            "errorCode": 6,
            "errorLabels": ["RetryableWriteError"],
            "appName": &app_name,
        },
    )
    .await;
    let rev = store.put(coll, "a", &json!({"v": 1}), Expect::Absent).await;
    fail_point(&admin, "off".into(), doc! {}).await;
    assert_eq!(rev.unwrap(), 1, "the insert lands after the retries");

    println!("{:?}: next phase", t0.elapsed());
    // A dropped connection on the update: retried, applied once.
    fail_point(
        &admin,
        doc! { "times": 2 }.into(),
        doc! { "failCommands": ["update"], "closeConnection": true, "appName": &app_name },
    )
    .await;
    let rev = store.put(coll, "a", &json!({"v": 2}), Expect::Rev(1)).await;
    fail_point(&admin, "off".into(), doc! {}).await;
    assert_eq!(rev.unwrap(), 2);
    let got = store.get(coll, "a").await.unwrap().unwrap();
    assert_eq!((got.rev, got.doc), (2, json!({"v": 2})));

    println!("{:?}: next phase", t0.elapsed());
    // Reads and deletes too.
    fail_point(
        &admin,
        doc! { "times": 2 }.into(),
        doc! { "failCommands": ["find", "delete"], "errorCode": 89, "appName": &app_name },
    )
    .await;
    let got = store.get(coll, "a").await;
    let deleted = store.delete(coll, "a", 2).await;
    fail_point(&admin, "off".into(), doc! {}).await;
    assert_eq!(got.unwrap().unwrap().rev, 2);
    deleted.unwrap();

    println!("{:?}: next phase", t0.elapsed());
    // Ambiguous failures: the write is applied, then an error comes back (a write concern
    // error). The retry finds the write already there and knows it as its own.
    let wce = |cmd: &str| {
        doc! {
            "failCommands": [cmd],
            "writeConcernError": { "code": 6, "errmsg": "injected after the write" },
            "appName": &app_name,
        }
    };
    fail_point(&admin, doc! { "times": 2 }.into(), wce("insert")).await;
    let created = store.put(coll, "c", &json!({"v": 1}), Expect::Absent).await;
    fail_point(&admin, doc! { "times": 2 }.into(), wce("update")).await;
    let updated = store.put(coll, "c", &json!({"v": 2}), Expect::Rev(1)).await;
    fail_point(&admin, doc! { "times": 2 }.into(), wce("delete")).await;
    let deleted = store.delete(coll, "c", 2).await;
    fail_point(&admin, "off".into(), doc! {}).await;
    assert_eq!(
        created.unwrap(),
        1,
        "a create that landed is not a conflict with itself"
    );
    assert_eq!(
        updated.unwrap(),
        2,
        "an update that landed is not a conflict with itself"
    );
    deleted.unwrap();
    assert!(store.get(coll, "c").await.unwrap().is_none());

    println!("{:?}: next phase", t0.elapsed());
    // A failure that outlasts every attempt is Unavailable, and nothing is written.
    fail_point(
        &admin,
        "alwaysOn".into(),
        doc! {
            "failCommands": ["insert"],
            "errorCode": 9001,
            "errorLabels": ["RetryableWriteError"],
            "appName": &app_name,
        },
    )
    .await;
    let started = std::time::Instant::now();
    let err = store.put(coll, "b", &json!({}), Expect::Absent).await;
    let took = started.elapsed();
    fail_point(&admin, "off".into(), doc! {}).await;
    let err = err.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("attempts")),
        "{err:?}"
    );
    assert!(
        took >= std::time::Duration::from_millis(1000),
        "with backoff between attempts: {took:?}"
    );
    assert!(store.get(coll, "b").await.unwrap().is_none());

    println!("{:?}: next phase", t0.elapsed());
    // A definite error (not transient) is not retried.
    fail_point(
        &admin,
        doc! { "times": 1 }.into(),
        doc! { "failCommands": ["find"], "errorCode": 2, "appName": &app_name },
    )
    .await;
    let err = store.get(coll, "b").await;
    let after = store.get(coll, "b").await;
    fail_point(&admin, "off".into(), doc! {}).await;
    assert!(matches!(err, Err(StoreError::Unavailable(_))), "{err:?}");
    assert!(after.unwrap().is_none(), "the next call is fine");
    db.drop_db().await;
}
