//! `MongoStore` against a MongoDB-compatible server: secantusdb on 127.0.0.1:27017 as
//! `.ci/mongo.sh` starts it, or the server named by `NEBULA_TEST_MONGODB_URL` (a real
//! MongoDB). Each test works in a database of its own (`nebula_test_<test>_<random>`) and
//! drops it at the end. Without a server every test that needs one prints `SKIPPED` and
//! returns; with `NEBULA_REQUIRE_MONGO=1` it fails instead.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestDb, server_url};
use mongodb::bson::{Bson, doc};
use nebula_core::healthcheck::{HealthTest, Healthcheck, Probe};
use nebula_core::model::{
    App, AppName, AppSpec, ContainersPer, RestartMode, RolloutPolicy, StartingPort,
};
use nebula_core::report::StoredReport;
use nebula_core::store::{Collection, Expect, Store, StoreError};
use nebula_mongo::{
    FIELD_DOC, FIELD_KEY, FIELD_REPORT_DATE, FIELD_REV, MongoConfig, MongoStore, REPORT_TTL_INDEX,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_store_contract() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "contract").await;
    println!("server under test: {} at {url}", db.server_name().await);
    let store = db.store().await;
    nebula_core::testing::contract::store(&store, "mongo").await;
    // Twice on the same database: the suite cleans up after itself.
    nebula_core::testing::contract::store(&store.clone(), "mongo").await;
    // In every collection, not only apps: the same CAS on each.
    for coll in Collection::ALL {
        let rev = store
            .put(coll, "k", &json!({"in": coll.name()}), Expect::Absent)
            .await
            .unwrap();
        assert_eq!(rev, 1);
        let got = store.get(coll, "k").await.unwrap().unwrap();
        assert_eq!(got.doc, json!({"in": coll.name()}), "{coll:?}");
        store.delete(coll, "k", 1).await.unwrap();
    }
    db.drop_db().await;
}

/// An app with every field set to something other than its default.
fn full_app(incarnation: u64) -> App {
    let mut spec = AppSpec::with_image(
        "registry.local:5000/team/site@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    spec.starting_ports = vec![
        StartingPort::Same(80),
        StartingPort::Mapped {
            host: 8443,
            container: 443,
        },
    ];
    spec.containers_per = ContainersPer::Cpu(0.5);
    spec.env_vars = BTreeMap::from([
        ("PLAIN".to_owned(), "1".to_owned()),
        ("com.example.dotted".to_owned(), "dots in a key".to_owned()),
        ("UNICODE".to_owned(), "ünïcødé ✓".to_owned()),
        ("EMPTY".to_owned(), String::new()),
    ]);
    spec.running = false;
    spec.networks = vec!["nebula".to_owned(), "backend".to_owned()];
    spec.volumes = vec!["/data:/data:ro".to_owned(), "/logs:/logs".to_owned()];
    spec.devices = vec!["/dev/ttyUSB0:/dev/ttyUSB0:rwm".to_owned()];
    spec.privileged = true;
    spec.rolling_restart = true;
    spec.memory_limit_mb = Some(512);
    spec.cpu_limit = Some(1.5);
    spec.run_command = Some(vec!["httpd".to_owned(), "-f".to_owned()]);
    spec.entrypoint = Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]);
    spec.rollout = RolloutPolicy {
        wave_size: 3,
        min_healthy_seconds: 12,
    };
    spec.healthcheck = Some(Healthcheck::Check(Probe {
        test: Some(HealthTest::Cmd(vec!["wget".to_owned(), "-q".to_owned()])),
        interval_secs: Some(10),
        timeout_secs: Some(3),
        retries: Some(4),
        start_period_secs: Some(0),
    }));
    App {
        app_name: AppName::parse("site").unwrap(),
        app_id: 42,
        incarnation,
        restart_generation: 7,
        restart_mode: RestartMode::Rolling,
        prune_generation: 2,
        spec,
        fleet_rollout: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_document_round_trips_exactly() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "app").await;
    let store = db.store().await;
    // An incarnation as the manager makes it: creation time in nanoseconds.
    let now_ns = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    let app = full_app(now_ns);
    let json = serde_json::to_value(&app).unwrap();
    store
        .put(Collection::Apps, "site", &json, Expect::Absent)
        .await
        .unwrap();
    let got = store.get(Collection::Apps, "site").await.unwrap().unwrap();
    assert_eq!(got.doc, json, "the JSON document comes back as it went in");
    let back: App = serde_json::from_value(got.doc).unwrap();
    assert_eq!(back, app, "and reads as the same App");
    assert_eq!(back.incarnation, now_ns);

    // What MongoDB holds: the layout the crate docs describe.
    let raw = db
        .raw("nebula_apps")
        .find_one(doc! { FIELD_KEY: "site" })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get(FIELD_REV), Some(&Bson::Int64(1)));
    let body = raw.get_document(FIELD_DOC).unwrap();
    assert_eq!(
        body.get("incarnation"),
        Some(&Bson::Int64(i64::try_from(now_ns).unwrap())),
        "an incarnation below i64::MAX is a plain Int64"
    );
    assert_eq!(body.get_str("app_name").unwrap(), "site");
    assert!(
        raw.get(FIELD_REPORT_DATE).is_none(),
        "only reports carry a TTL date"
    );

    // Incarnations beyond i64::MAX (and every other number) keep their exact value.
    let big = full_app(u64::MAX);
    let big_json = serde_json::to_value(&big).unwrap();
    store
        .put(Collection::Apps, "site", &big_json, Expect::Rev(1))
        .await
        .unwrap();
    let got = store.get(Collection::Apps, "site").await.unwrap().unwrap();
    assert_eq!(got.rev, 2);
    assert_eq!(serde_json::from_value::<App>(got.doc).unwrap(), big);
    let raw = db
        .raw("nebula_apps")
        .find_one(doc! { FIELD_KEY: "site" })
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            raw.get_document(FIELD_DOC).unwrap().get("incarnation"),
            Some(Bson::Decimal128(_))
        ),
        "u64::MAX is stored as an exact Decimal128: {raw}"
    );

    let numbers = json!({
        "i64_min": i64::MIN, "i64_max": i64::MAX, "above": (i64::MAX as u64) + 1,
        "u64_max": u64::MAX, "neg": -1, "half": 0.5, "three": 3.0,
        "nested": [[1, {"x": u64::MAX}], {"$oid": "not an id"}, {"a.b": null}],
        "_id": "a document's own _id is just a field", "_rev": "and so is _rev",
    });
    store
        .put(Collection::CronJobs, "numbers", &numbers, Expect::Absent)
        .await
        .unwrap();
    let got = store
        .get(Collection::CronJobs, "numbers")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.rev, &got.doc), (1, &numbers));
    assert_eq!(got.doc.to_string(), numbers.to_string(), "prints the same");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn indexes_and_collections_are_made_once_and_follow_the_report_ttl() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "indexes").await;
    let ttl_of = |db: &TestDb| {
        let reports = db.raw("nebula_reports");
        async move {
            let indexes: Vec<_> = {
                use futures::TryStreamExt;
                reports
                    .list_indexes()
                    .await
                    .unwrap()
                    .try_collect()
                    .await
                    .unwrap()
            };
            let names: BTreeSet<String> = indexes
                .iter()
                .filter_map(|i| i.options.as_ref().and_then(|o| o.name.clone()))
                .collect();
            assert_eq!(
                names,
                BTreeSet::from(["_id_".to_owned(), REPORT_TTL_INDEX.to_owned()]),
                "exactly the _id index and the TTL index"
            );
            let ttl = indexes
                .iter()
                .find(|i| {
                    i.options.as_ref().and_then(|o| o.name.as_deref()) == Some(REPORT_TTL_INDEX)
                })
                .and_then(|i| i.options.as_ref().and_then(|o| o.expire_after))
                .expect("the TTL index has expireAfterSeconds");
            let keys = &indexes
                .iter()
                .find(|i| {
                    i.options.as_ref().and_then(|o| o.name.as_deref()) == Some(REPORT_TTL_INDEX)
                })
                .unwrap()
                .keys;
            assert_eq!(keys, &doc! { FIELD_REPORT_DATE: 1 });
            ttl
        }
    };

    let first = db.store().await;
    assert_eq!(first.database_name(), db.name);
    assert_eq!(ttl_of(&db).await, Duration::from_secs(3600));
    // Reopening, twice at once (two API managers starting), changes nothing.
    let config = db.config();
    let (a, b) = tokio::join!(MongoStore::connect(&config), MongoStore::connect(&config));
    a.unwrap();
    b.unwrap();
    assert_eq!(ttl_of(&db).await, Duration::from_secs(3600));
    let colls: BTreeSet<String> = db
        .client
        .database(&db.name)
        .list_collection_names()
        .await
        .unwrap()
        .into_iter()
        .collect();
    let want: BTreeSet<String> = Collection::ALL
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(
        colls, want,
        "the original's six collections and the publish marks, nothing else"
    );

    // Another report_ttl changes the index in place.
    let shorter = MongoConfig {
        report_ttl: Duration::from_secs(120),
        ..db.config()
    };
    let store = MongoStore::connect(&shorter).await.unwrap();
    assert_eq!(ttl_of(&db).await, Duration::from_secs(120));

    // A report carries the date the TTL index expires it on; re-writing it moves the date.
    store
        .put(
            Collection::Reports,
            "r1",
            &json!({"hostname": "h1"}),
            Expect::Absent,
        )
        .await
        .unwrap();
    let date = |db: &TestDb| {
        let reports = db.raw("nebula_reports");
        async move {
            let raw = reports
                .find_one(doc! { FIELD_KEY: "r1" })
                .await
                .unwrap()
                .unwrap();
            *raw.get_datetime(FIELD_REPORT_DATE)
                .expect("report_insert_date is a BSON date")
        }
    };
    let d1 = date(&db).await;
    let age = mongodb::bson::DateTime::now().timestamp_millis() - d1.timestamp_millis();
    assert!(
        (0..60_000).contains(&age),
        "set at write time: {age} ms ago"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .put(
            Collection::Reports,
            "r1",
            &json!({"hostname": "h1", "n": 2}),
            Expect::Rev(1),
        )
        .await
        .unwrap();
    assert!(date(&db).await > d1, "the date follows the last write");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_database_never_lose_an_increment() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "two").await;
    // Two API managers: two clients with their own pools.
    let managers = [db.store().await, db.store().await];
    let coll = Collection::Apps;
    managers[0]
        .put(coll, "counter", &json!({"n": 0}), Expect::Absent)
        .await
        .unwrap();
    const TASKS_PER_MANAGER: u64 = 6;
    const INCREMENTS: u64 = 5;
    let mut tasks = Vec::new();
    for m in &managers {
        for _ in 0..TASKS_PER_MANAGER {
            let store = m.clone();
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0_u32;
                for _ in 0..INCREMENTS {
                    loop {
                        let cur = store.get(coll, "counter").await.unwrap().unwrap();
                        let n = cur.doc["n"].as_u64().unwrap();
                        match store
                            .put(coll, "counter", &json!({"n": n + 1}), Expect::Rev(cur.rev))
                            .await
                        {
                            Ok(rev) => {
                                assert_eq!(rev, cur.rev + 1);
                                break;
                            }
                            Err(StoreError::Conflict { found: Some(f) }) => {
                                assert!(f > cur.rev, "a conflict reports a later revision");
                                conflicts += 1;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            }));
        }
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let total = 2 * TASKS_PER_MANAGER * INCREMENTS;
    for m in &managers {
        let end = m.get(coll, "counter").await.unwrap().unwrap();
        assert_eq!(end.doc["n"], total, "no increment lost or doubled");
        assert_eq!(end.rev, total + 1, "one revision per write");
    }
    println!("{total} increments from 2 stores, {conflicts} conflicts retried");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_documents_are_corrupt() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "corrupt").await;
    let store = db.store().await;
    let apps = db.raw("nebula_apps");
    apps.insert_one(doc! { FIELD_KEY: "bad-rev", FIELD_REV: "one", FIELD_DOC: {} })
        .await
        .unwrap();
    apps.insert_one(doc! { FIELD_KEY: "no-doc", FIELD_REV: 1_i64 })
        .await
        .unwrap();
    for key in ["bad-rev", "no-doc"] {
        let err = store.get(Collection::Apps, key).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains(key)),
            "{err:?}"
        );
    }
    let err = store
        .put(Collection::Apps, "bad-rev", &json!({}), Expect::Rev(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");

    // A document of the original (Python) Nebula: flat, with an ObjectId _id.
    let groups = db.raw("nebula_device_groups");
    groups
        .insert_one(doc! { "device_group": "old", "apps": [], "device_group_id": 1 })
        .await
        .unwrap();
    let err = store.list(Collection::DeviceGroups).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("schema_name")),
        "{err:?}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn no_server_is_unavailable_quickly() {
    let config = MongoConfig {
        server_selection_timeout: Duration::from_millis(300),
        ..MongoConfig::new("mongodb://127.0.0.1:1/?connectTimeoutMS=200")
    };
    let started = std::time::Instant::now();
    let err = MongoStore::connect(&config).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("no usable server") && m.contains("127.0.0.1:1")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "server selection is not retried: {:?}",
        started.elapsed()
    );

    let err = MongoStore::connect(&MongoConfig {
        schema_name: "no/slashes".to_owned(),
        ..MongoConfig::new("postgres://nope")
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("mongo_url") && m.contains("schema_name")),
        "every problem is named: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_expire_after_the_report_ttl() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "ttl").await;
    let store = MongoStore::connect(&MongoConfig {
        report_ttl: Duration::from_secs(1),
        ..db.config()
    })
    .await
    .unwrap();
    store
        .put(
            Collection::Reports,
            "old",
            &json!({"hostname": "h"}),
            Expect::Absent,
        )
        .await
        .unwrap();
    store
        .put(Collection::Apps, "kept", &json!({}), Expect::Absent)
        .await
        .unwrap();
    // MongoDB's TTL monitor sweeps every 60 s; allow two sweeps and some.
    let started = std::time::Instant::now();
    while store
        .get(Collection::Reports, "old")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the report outlived its TTL by 150 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("the report expired {:?} after its write", started.elapsed());
    assert!(
        store.get(Collection::Apps, "kept").await.unwrap().is_some(),
        "only reports expire"
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_with_its_date_object_round_trips() {
    let Some(url) = server_url().await else {
        return;
    };
    let db = TestDb::new(&url, "report").await;
    let store = db.store().await;
    // The manager's report keeps `report_insert_date` as `{"$date": <ms>}`, which the driver's
    // own Document type would read back as a BSON date.
    let report: StoredReport = serde_json::from_value(json!({
        "hostname": "worker-1",
        "device_group": "edge",
        "report_creation_time": 1_763_840_000_u64,
        "report_insert_date": {"$date": 1_763_840_000_123_u64},
    }))
    .unwrap();
    let doc = serde_json::to_value(&report).unwrap();
    let id = "0000018f00000000deadbeef";
    store
        .put(Collection::Reports, id, &doc, Expect::Absent)
        .await
        .unwrap();
    let got = store.get(Collection::Reports, id).await.unwrap().unwrap();
    assert_eq!(got.doc, doc);
    assert_eq!(
        serde_json::from_value::<StoredReport>(got.doc).unwrap(),
        report
    );
    // Through a replace too.
    store
        .put(Collection::Reports, id, &doc, Expect::Rev(1))
        .await
        .unwrap();
    let listed = store.list(Collection::Reports).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, id);
    assert_eq!((listed[0].1.rev, &listed[0].1.doc), (2, &doc));
    db.drop_db().await;
}
