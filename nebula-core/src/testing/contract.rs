//! Contract suites: one per seam, run against the fakes and against every real backend.
//!
//! Each suite takes a `prefix` that makes its keys, topics and container names unique, so it
//! can run against a shared, persistent backend. A broken contract panics with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::bus::{Bus, BusMessage, Delivery, ReportBus, Subscription, Topic};
use crate::container::{
    ContainerSpec, ContainerState, LABEL_ORCHESTRATOR, NetworkMode, ORCHESTRATOR,
};
use crate::device_group::{DeviceGroupInfo, DeviceGroupName};
use crate::model::{App, AppName, AppSpec, RestartMode};
use crate::report::WorkerReport;
use crate::runtime::{Runtime, RuntimeError};
use crate::store::{Collection, Expect, Store, StoreError};

/// The Store contract.
///
/// # Panics
/// When the store breaks a guarantee of [`Store`].
pub async fn store<S: Store>(store: &S, prefix: &str) {
    let coll = Collection::Apps;
    let a = format!("{prefix}-a");
    let b = format!("{prefix}-b");
    assert!(
        store.get(coll, &a).await.unwrap().is_none(),
        "fresh key must be absent"
    );

    let r1 = store
        .put(coll, &a, &json!({"v": 1}), Expect::Absent)
        .await
        .unwrap();
    assert_eq!(r1, 1, "first revision is 1");
    let got = store.get(coll, &a).await.unwrap().unwrap();
    assert_eq!((got.rev, got.doc), (1, json!({"v": 1})));

    let err = store
        .put(coll, &a, &json!({"v": 9}), Expect::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(1) }),
        "create over existing: {err:?}"
    );

    let r2 = store
        .put(coll, &a, &json!({"v": 2}), Expect::Rev(1))
        .await
        .unwrap();
    assert_eq!(r2, 2);
    let err = store
        .put(coll, &a, &json!({"v": 3}), Expect::Rev(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(2) }),
        "stale write: {err:?}"
    );
    assert_eq!(
        store.get(coll, &a).await.unwrap().unwrap().doc,
        json!({"v": 2}),
        "stale write changed nothing"
    );

    let err = store
        .put(coll, &b, &json!({}), Expect::Rev(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: None }),
        "update of missing: {err:?}"
    );

    store
        .put(coll, &b, &json!({"v": "b"}), Expect::Absent)
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list(coll)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .collect();
    assert_eq!(listed, [a.clone(), b.clone()], "list is sorted by key");

    let err = store.delete(coll, &a, 1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(2) }),
        "stale delete: {err:?}"
    );
    store.delete(coll, &a, 2).await.unwrap();
    assert!(store.get(coll, &a).await.unwrap().is_none());
    let err = store.delete(coll, &a, 2).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: None }),
        "delete of missing: {err:?}"
    );
    assert_eq!(
        store
            .put(coll, &a, &json!({}), Expect::Absent)
            .await
            .unwrap(),
        1,
        "re-create starts over"
    );

    // Concurrent read-modify-write: every increment lands exactly once.
    let counter = format!("{prefix}-counter");
    store
        .put(coll, &counter, &json!({"n": 0}), Expect::Absent)
        .await
        .unwrap();
    let tasks = (0..8).map(|_| async {
        for _ in 0..5 {
            loop {
                let cur = store.get(coll, &counter).await.unwrap().unwrap();
                let n = cur.doc["n"].as_u64().unwrap();
                match store
                    .put(coll, &counter, &json!({"n": n + 1}), Expect::Rev(cur.rev))
                    .await
                {
                    Ok(_) => break,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
    let end = store.get(coll, &counter).await.unwrap().unwrap();
    assert_eq!(end.doc["n"], 40, "no increment lost");
    assert_eq!(end.rev, 41, "one revision per write");
    for key in [&a, &b, &counter] {
        let rev = store.get(coll, key).await.unwrap().unwrap().rev;
        store.delete(coll, key, rev).await.unwrap();
    }

    // Every collection keeps its own documents, under keys of any shape Nebula uses.
    let key = format!("app/{prefix}-every");
    for c in Collection::ALL {
        let rev = store
            .put(c, &key, &json!({"in": c.name()}), Expect::Absent)
            .await
            .unwrap_or_else(|e| panic!("create in {}: {e}", c.name()));
        assert_eq!(rev, 1, "first revision in {}", c.name());
    }
    for c in Collection::ALL {
        let got = store.get(c, &key).await.unwrap().unwrap();
        assert_eq!(
            got.doc,
            json!({"in": c.name()}),
            "{} keeps its own document",
            c.name()
        );
        assert!(
            store.list(c).await.unwrap().iter().any(|(k, _)| *k == key),
            "{} lists its document",
            c.name()
        );
        store.delete(c, &key, 1).await.unwrap();
        assert!(
            store.get(c, &key).await.unwrap().is_none(),
            "deleted from {}",
            c.name()
        );
    }
}

fn app(name: &str, app_id: u64) -> App {
    App {
        app_name: AppName::parse(name).unwrap(),
        app_id,
        incarnation: 1,
        restart_generation: 0,
        restart_mode: RestartMode::AsConfigured,
        prune_generation: 0,
        spec: AppSpec::with_image("busybox"),
        fleet_rollout: None,
    }
}

/// The Bus contract.
///
/// # Panics
/// When the bus breaks a guarantee of [`Bus`].
pub async fn bus<B: Bus>(bus: &B, prefix: &str) {
    let a = AppName::parse(&format!("{prefix}-a")).unwrap();
    let c = AppName::parse(&format!("{prefix}-c")).unwrap();
    let mut sub_a = bus.subscribe(&[Topic::App(a.clone())]).await.unwrap();
    let mut sub_all = bus.subscribe(&[Topic::AllApps]).await.unwrap();
    let mut sub_c = bus.subscribe(&[Topic::App(c.clone())]).await.unwrap();
    let msgs = [
        BusMessage::app_changed(app(a.as_str(), 1)),
        BusMessage::app_changed(app(a.as_str(), 2)),
        BusMessage::AppDeleted {
            app_name: AppName::parse(&format!("{prefix}-b")).unwrap(),
            incarnation: 1,
            device_groups: Vec::new(),
        },
    ];
    for m in &msgs {
        bus.publish(m).await.unwrap();
    }
    let within = Duration::from_secs(10);
    for want in &msgs[..2] {
        let d = tokio::time::timeout(within, sub_a.next())
            .await
            .expect("delivery in time")
            .expect("open");
        assert_eq!(
            &d.message, want,
            "topic subscriber gets its messages in order"
        );
        d.ack().await.unwrap();
    }
    for want in &msgs {
        let d = tokio::time::timeout(within, sub_all.next())
            .await
            .expect("delivery in time")
            .expect("open");
        assert_eq!(
            &d.message, want,
            "all-apps subscriber gets everything in order"
        );
        d.ack().await.unwrap();
    }
    let stray = tokio::time::timeout(Duration::from_millis(300), sub_c.next()).await;
    assert!(
        stray.is_err(),
        "a subscriber hears nothing of other topics: {stray:?}"
    );
    let extra = tokio::time::timeout(Duration::from_millis(300), sub_a.next()).await;
    assert!(
        extra.is_err(),
        "no duplicate deliveries after ack: {extra:?}"
    );
    drop((sub_a, sub_all, sub_c));
    device_groups(bus, prefix).await;
}

/// The device group half of the Bus contract: a group's subscriber hears its group's changes
/// and the changes of the apps addressed to it, once each, and nothing else.
async fn device_groups<B: Bus>(bus: &B, prefix: &str) {
    let g = DeviceGroupName::parse(&format!("{prefix}-g")).unwrap();
    let h = DeviceGroupName::parse(&format!("{prefix}-h")).unwrap();
    let other = DeviceGroupName::parse(&format!("{prefix}-other")).unwrap();
    let x = app(&format!("{prefix}-x"), 1);
    let group_topic = |n: &DeviceGroupName| Topic::DeviceGroup(n.clone());
    let mut sub_g = bus.subscribe(&[group_topic(&g)]).await.unwrap();
    let mut sub_h = bus.subscribe(&[group_topic(&h)]).await.unwrap();
    let mut sub_other = bus.subscribe(&[group_topic(&other)]).await.unwrap();
    let mut sub_all = bus.subscribe(&[Topic::AllApps]).await.unwrap();
    let mut sub_gh = bus
        .subscribe(&[group_topic(&g), group_topic(&h)])
        .await
        .unwrap();
    let mut sub_gx = bus
        .subscribe(&[group_topic(&g), Topic::App(x.app_name.clone())])
        .await
        .unwrap();
    let info = |id: u64| DeviceGroupInfo {
        apps: vec![x.clone()],
        apps_list: vec![x.app_name.clone()],
        cron_jobs: Vec::new(),
        cron_jobs_list: Vec::new(),
        prune_id: 1,
        device_group_id: id,
        incarnation: 1,
    };
    // 0: an app of both groups; 1: an app of no group; 2, 3: each group's state;
    // 4: the app deleted, listed by g only; 5: h deleted.
    let msgs = [
        BusMessage::AppChanged {
            app: x.clone(),
            device_groups: vec![g.clone(), h.clone(), g.clone()],
        },
        BusMessage::app_changed(app(&format!("{prefix}-y"), 1)),
        BusMessage::DeviceGroupChanged {
            device_group: g.clone(),
            info: info(1),
        },
        BusMessage::DeviceGroupChanged {
            device_group: h.clone(),
            info: info(2),
        },
        BusMessage::AppDeleted {
            app_name: x.app_name.clone(),
            incarnation: 1,
            device_groups: vec![g.clone()],
        },
        BusMessage::DeviceGroupDeleted {
            device_group: h.clone(),
            incarnation: 1,
        },
    ];
    for m in &msgs {
        bus.publish(m).await.unwrap();
    }
    let cases = [
        (&mut sub_g, &[0, 2, 4][..], "a group's subscriber"),
        (&mut sub_h, &[0, 3, 5][..], "another group's subscriber"),
        (
            &mut sub_other,
            &[][..],
            "a subscriber of a group no message is for",
        ),
        (
            &mut sub_all,
            &[0, 1, 4][..],
            "an all-apps subscriber (no group messages)",
        ),
        (
            &mut sub_gh,
            &[0, 2, 3, 4, 5][..],
            "a subscriber of two groups",
        ),
        (
            &mut sub_gx,
            &[0, 2, 4][..],
            "a subscriber of a group and one of its apps",
        ),
    ];
    let within = Duration::from_secs(10);
    for (sub, want, who) in cases {
        for &i in want {
            let d = tokio::time::timeout(within, sub.next())
                .await
                .unwrap_or_else(|_| panic!("{who}: message {i} in time"))
                .expect("open");
            assert_eq!(d.message, msgs[i], "{who} gets its messages in order");
            d.ack().await.unwrap();
        }
        let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
        assert!(
            extra.is_err(),
            "{who} gets each of its messages once and nothing else: {extra:?}"
        );
    }
}

/// The ReportBus contract. `bus` must start with no report waiting and no subscriber (on a
/// broker: a report queue of the caller's own).
///
/// # Panics
/// When the bus breaks a guarantee of [`ReportBus`].
pub async fn report_bus<B: ReportBus>(bus: &B, prefix: &str) {
    let within = Duration::from_secs(10);
    let report = |i: u64| WorkerReport {
        hostname: format!("{prefix}-h{i}"),
        report_creation_time: i,
        device_group: Some("edge".to_owned()),
        ..WorkerReport::default()
    };
    async fn next(sub: &mut Subscription<WorkerReport>) -> Delivery<WorkerReport> {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a report in time")
            .expect("the subscription is open")
    }
    async fn nothing_more(sub: &mut Subscription<WorkerReport>, what: &str) {
        let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
        assert!(extra.is_err(), "{what}: {extra:?}");
    }

    // Published while no manager subscribes: the reports wait for one.
    for i in 0..3 {
        bus.publish_report(&report(i)).await.unwrap();
    }
    let mut a = bus.subscribe_reports().await.unwrap();
    for i in 0..3 {
        let d = next(&mut a).await;
        assert_eq!(
            d.message,
            report(i),
            "reports that waited come whole, in publish order"
        );
        d.ack().await.unwrap();
    }

    // Competing consumers: each report reaches one of the two subscribers, and both get some.
    let mut b = bus.subscribe_reports().await.unwrap();
    for i in 3..9 {
        bus.publish_report(&report(i)).await.unwrap();
    }
    let (by_a, by_b) = tokio::time::timeout(within, async {
        let (mut by_a, mut by_b) = (Vec::new(), Vec::new());
        while by_a.len() + by_b.len() < 6 {
            let (d, to_a) = tokio::select! {
                d = a.next() => (d.expect("a is open"), true),
                d = b.next() => (d.expect("b is open"), false),
            };
            let seen_by = if to_a { &mut by_a } else { &mut by_b };
            seen_by.push(d.message.report_creation_time);
            d.ack().await.unwrap();
        }
        (by_a, by_b)
    })
    .await
    .expect("every report delivered in time");
    let mut all: Vec<u64> = by_a.iter().chain(&by_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (3..9).collect::<Vec<_>>(), "each report exactly once");
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "the subscribers share the reports: {by_a:?} / {by_b:?}"
    );
    nothing_more(&mut a, "no report twice").await;
    nothing_more(&mut b, "no report twice").await;

    // A report whose subscription ends before the ack comes again, to the other subscriber.
    bus.publish_report(&report(9)).await.unwrap();
    let (unacked, to_a) = tokio::time::timeout(within, async {
        tokio::select! {
            d = a.next() => (d.expect("a is open"), true),
            d = b.next() => (d.expect("b is open"), false),
        }
    })
    .await
    .expect("the report delivered in time");
    assert_eq!(unacked.message, report(9));
    let (ended, mut survivor) = if to_a { (a, b) } else { (b, a) };
    drop(unacked);
    drop(ended);
    let again = next(&mut survivor).await;
    assert_eq!(
        again.message,
        report(9),
        "an unacknowledged report comes again when its subscription ends"
    );
    again.ack().await.unwrap();

    // Acknowledged reports are done: a new subscriber gets none of them.
    nothing_more(&mut survivor, "an acknowledged report does not come again").await;
    drop(survivor);
    let mut fresh = bus.subscribe_reports().await.unwrap();
    nothing_more(&mut fresh, "an acknowledged report does not come again").await;
}

/// The Runtime contract. `image` must be pullable and runnable with `sleep`; `missing` must
/// not exist anywhere.
///
/// # Panics
/// When the runtime breaks a guarantee of [`Runtime`].
pub async fn runtime<R: Runtime>(rt: &R, image: &str, missing: &str, prefix: &str) {
    let host = rt.host().await.unwrap();
    assert!(
        host.cpus >= 1 && host.memory_mb >= 64,
        "host resources: {host:?}"
    );

    assert!(
        rt.pull(missing, None).await.is_err(),
        "pull of a missing image fails"
    );
    assert!(!rt.has_image(missing).await.unwrap());
    rt.pull(image, None).await.unwrap();
    assert!(
        rt.has_image(image).await.unwrap(),
        "pulled image is present"
    );
    let id = rt
        .image_id(image)
        .await
        .unwrap()
        .expect("a held image has an id");
    assert!(id.starts_with("sha256:"), "image id {id}");
    assert_eq!(rt.image_id(missing).await.unwrap(), None);

    let mark = ("nebula.contract", prefix);
    let spec = ContainerSpec {
        name: format!("{prefix}-1"),
        image: image.to_owned(),
        env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
        ports: Vec::new(),
        binds: Vec::new(),
        devices: Vec::new(),
        privileged: false,
        network: NetworkMode::Networks(vec!["nebula".into(), "bridge".into()]),
        restart_unless_stopped: true,
        memory_bytes: Some(64 * 1024 * 1024),
        nano_cpus: None,
        command: Some(vec!["sleep".into(), "300".into()]),
        entrypoint: None,
        healthcheck: None,
        labels: BTreeMap::from([
            (LABEL_ORCHESTRATOR.to_owned(), ORCHESTRATOR.to_owned()),
            (mark.0.to_owned(), mark.1.to_owned()),
        ]),
    };
    let id = rt.create(&spec).await.unwrap();
    let listed = rt.list(&[mark]).await.unwrap();
    assert_eq!(listed.len(), 1, "list by label finds the container");
    let c = &listed[0];
    assert_eq!(
        (&c.id, c.name.as_str(), c.state),
        (&id, spec.name.as_str(), ContainerState::Running)
    );
    for (k, v) in &spec.labels {
        assert_eq!(c.label(k), Some(v.as_str()), "label {k}");
    }
    assert!(
        rt.list(&[mark, ("nebula.contract.other", "x")])
            .await
            .unwrap()
            .is_empty(),
        "all labels must match"
    );

    let err = rt.create(&spec).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Conflict(_)),
        "same name twice: {err:?}"
    );

    rt.restart(&id).await.unwrap();
    rt.remove(&id, Duration::from_secs(1)).await.unwrap();
    assert!(
        rt.list(&[mark]).await.unwrap().is_empty(),
        "removed container is gone"
    );
    let err = rt.remove(&id, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::NotFound(_)),
        "remove of missing: {err:?}"
    );
    let err = rt.start(&id).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::NotFound(_)),
        "start of missing: {err:?}"
    );

    let mut bad = spec.clone();
    bad.name = format!("{prefix}-2");
    bad.image = missing.to_owned();
    assert!(
        rt.create(&bad).await.is_err(),
        "create with an absent image fails"
    );
    assert!(
        rt.list(&[mark]).await.unwrap().is_empty(),
        "a failed create leaves nothing behind"
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn in_process_bus_passes_the_bus_contract() {
        super::bus(&crate::bus::InProcessBus::new(), "mem").await;
    }

    #[tokio::test]
    async fn in_process_bus_passes_the_report_bus_contract() {
        let bus = crate::bus::InProcessBus::new();
        super::report_bus(&bus, "mem").await;
        assert_eq!(bus.report_backlog(), 0, "nothing left behind");
    }
}
