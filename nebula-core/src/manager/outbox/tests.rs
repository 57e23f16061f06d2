//! The outbox against the in-memory store and a bus that refuses publishes, then takes them.
//! Time is paused: the republisher's waits pass as soon as every task is idle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::SWEEP_INTERVAL;
use crate::bus::{Bus, BusMessage, Subscription, Topic};
use crate::cron_job::{CronJobName, CronJobPatch, CronJobSpec};
use crate::device_group::{DeviceGroupName, Members};
use crate::manager::{AppPatch, Manager};
use crate::model::{AppName, AppSpec};
use crate::store::{Collection, Store};
use crate::testing::{InMemoryStore, SwitchableBus};

fn app(s: &str) -> AppName {
    AppName::parse(s).unwrap()
}

fn dg(s: &str) -> DeviceGroupName {
    DeviceGroupName::parse(s).unwrap()
}

fn manager(store: &Arc<InMemoryStore>, bus: &SwitchableBus) -> Manager {
    Manager::new(store.clone(), Some(Arc::new(bus.clone())))
}

/// Runs `m`'s republisher until the returned sender is dropped.
fn republisher(m: &Manager) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    let m = m.clone();
    tokio::spawn(async move {
        m.republish(async {
            let _ = rx.await;
        })
        .await;
    });
    tx
}

fn env(i: u32) -> AppPatch {
    AppPatch {
        env_vars: Some(BTreeMap::from([("I".to_owned(), i.to_string())])),
        ..AppPatch::default()
    }
}

async fn next(sub: &mut Subscription) -> BusMessage {
    tokio::time::timeout(SWEEP_INTERVAL + Duration::from_secs(5), sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
        .message
}

/// Nothing more arrives over several sweeps.
async fn nothing_more(sub: &mut Subscription, what: &str) {
    let extra = tokio::time::timeout(SWEEP_INTERVAL * 4, sub.next()).await;
    assert!(extra.is_err(), "{what}: {extra:?}");
}

#[tokio::test(start_paused = true)]
async fn three_updates_while_refused_publish_only_the_last_once() {
    let store = Arc::new(InMemoryStore::new());
    let bus = SwitchableBus::new();
    let m = manager(&store, &bus);
    let _running = republisher(&m);
    let mut sub = bus.subscribe(&[Topic::AllApps]).await.unwrap();
    m.create_app(app("web"), AppSpec::with_image("site"))
        .await
        .unwrap();
    assert!(matches!(next(&mut sub).await, BusMessage::AppChanged { app, .. } if app.app_id == 1));

    bus.refuse(true);
    for i in 0..3 {
        m.patch_app(&app("web"), env(i))
            .await
            .expect("a refused publish never fails the command");
    }
    assert_eq!(m.pending_publishes(), 1, "one app pending");
    nothing_more(&mut sub, "nothing reaches workers while the bus refuses").await;
    assert!(bus.refused() > 3, "the republisher kept trying");

    bus.refuse(false);
    let BusMessage::AppChanged { app: got, .. } = next(&mut sub).await else {
        panic!("an app change");
    };
    assert_eq!(got.app_id, 4, "the last version, not an intermediate one");
    assert_eq!(got.spec.env_vars["I"], "2");
    nothing_more(&mut sub, "published once").await;
    assert_eq!(m.pending_publishes(), 0);
    assert_eq!(bus.published(), 2, "the create and the last update");
}

#[tokio::test(start_paused = true)]
async fn a_change_stored_by_a_manager_that_died_before_publishing_goes_out_at_the_next_start() {
    let store = Arc::new(InMemoryStore::new());
    let before = SwitchableBus::new();
    manager(&store, &before)
        .create_app(app("old"), AppSpec::with_image("site"))
        .await
        .unwrap();
    // Killed between its store write and its publish: the write landed, the publish did not.
    let dying = SwitchableBus::new();
    dying.refuse(true);
    let first = manager(&store, &dying);
    first
        .create_app(app("web"), AppSpec::with_image("site"))
        .await
        .unwrap();
    first.patch_app(&app("web"), env(1)).await.unwrap();
    drop(first);

    let bus = SwitchableBus::new();
    let mut sub = bus.subscribe(&[Topic::AllApps]).await.unwrap();
    let fresh = manager(&store, &bus);
    let _running = republisher(&fresh);
    let BusMessage::AppChanged { app: got, .. } = next(&mut sub).await else {
        panic!("an app change");
    };
    assert_eq!((got.app_name, got.app_id), (app("web"), 2));
    nothing_more(&mut sub, "what was published before is not published again").await;
}

#[tokio::test(start_paused = true)]
async fn another_manager_on_the_store_publishes_what_one_could_not() {
    let store = Arc::new(InMemoryStore::new());
    let (bus_a, bus_b) = (SwitchableBus::new(), SwitchableBus::new());
    let (a, b) = (manager(&store, &bus_a), manager(&store, &bus_b));
    let mut sub = bus_b.subscribe(&[Topic::AllApps]).await.unwrap();
    let _running_b = republisher(&b);
    b.create_app(app("web"), AppSpec::with_image("site"))
        .await
        .unwrap();
    assert!(matches!(next(&mut sub).await, BusMessage::AppChanged { app, .. } if app.app_id == 1));

    bus_a.refuse(true);
    let _running_a = republisher(&a);
    a.patch_app(&app("web"), env(1)).await.unwrap();
    assert_eq!(a.pending_publishes(), 1);
    let BusMessage::AppChanged { app: got, .. } = next(&mut sub).await else {
        panic!("an app change");
    };
    assert_eq!(got.app_id, 2, "b's slow sweep found a's change");

    bus_a.refuse(false);
    nothing_more(&mut sub, "b published it once").await;
    assert_eq!(bus_a.published(), 0, "a finds it published by b");
    assert_eq!(a.pending_publishes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_delete_while_refused_is_published_after() {
    let store = Arc::new(InMemoryStore::new());
    let bus = SwitchableBus::new();
    let m = manager(&store, &bus);
    let _running = republisher(&m);
    let mut sub = bus.subscribe(&[Topic::AllApps]).await.unwrap();
    let created = m
        .create_app(app("web"), AppSpec::with_image("site"))
        .await
        .unwrap();
    next(&mut sub).await;

    bus.refuse(true);
    m.delete_app(&app("web")).await.unwrap();
    // Created and deleted while refused: no worker ever heard of it, nothing to tell.
    m.create_app(app("brief"), AppSpec::with_image("site"))
        .await
        .unwrap();
    m.delete_app(&app("brief")).await.unwrap();
    bus.refuse(false);

    let deleted = next(&mut sub).await;
    assert!(
        matches!(&deleted, BusMessage::AppDeleted { app_name, incarnation, .. }
            if *app_name == app("web") && *incarnation == created.incarnation),
        "{deleted:?}"
    );
    nothing_more(&mut sub, "one deletion, nothing about the brief app").await;
    assert!(
        store
            .get(Collection::PublishMarks, "app/web")
            .await
            .unwrap()
            .is_none(),
        "a published deletion removes the mark"
    );
}

#[tokio::test(start_paused = true)]
async fn device_group_changes_while_refused_publish_the_last_group_state_once() {
    let store = Arc::new(InMemoryStore::new());
    let bus = SwitchableBus::new();
    let m = manager(&store, &bus);
    let _running = republisher(&m);
    let backup = CronJobName::parse("backup").unwrap();
    m.create_app(app("web"), AppSpec::with_image("site"))
        .await
        .unwrap();
    m.create_cron_job(backup.clone(), CronJobSpec::new("0 * * * *", "backup"))
        .await
        .unwrap();
    let mut sub = bus
        .subscribe(&[Topic::DeviceGroup(dg("edge"))])
        .await
        .unwrap();
    m.create_device_group(
        dg("edge"),
        Members {
            apps: vec![app("web")],
            cron_jobs: vec!["backup".to_owned()],
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        next(&mut sub).await,
        BusMessage::DeviceGroupChanged { .. }
    ));

    bus.refuse(true);
    m.prune_device_group(&dg("edge")).await.unwrap();
    m.patch_cron_job(
        &backup,
        CronJobPatch {
            docker_image: Some("backup:2".to_owned()),
            ..CronJobPatch::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(m.pending_publishes(), 1, "one group pending");
    bus.refuse(false);

    let BusMessage::DeviceGroupChanged { info, .. } = next(&mut sub).await else {
        panic!("a group change");
    };
    assert_eq!(info.prune_id, 2, "the prune");
    assert_eq!(
        info.cron_jobs[0].spec.docker_image, "backup:2",
        "the cron job change"
    );
    assert_eq!(
        info.apps[0].app_name,
        app("web"),
        "the whole state, documents included"
    );
    nothing_more(&mut sub, "published once").await;
}
