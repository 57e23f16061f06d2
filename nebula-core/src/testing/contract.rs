//! Contract suites: one per seam, run against the fakes and against every real backend.
//!
//! Each suite takes a `prefix` that makes its keys, topics and container names unique, so it
//! can run against a shared, persistent backend. A broken contract panics with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::bus::{Bus, BusMessage, Topic};
use crate::container::{
    ContainerSpec, ContainerState, LABEL_ORCHESTRATOR, NetworkMode, ORCHESTRATOR,
};
use crate::model::{App, AppName, AppSpec, RestartMode};
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
        BusMessage::AppChanged {
            app: app(a.as_str(), 1),
        },
        BusMessage::AppChanged {
            app: app(a.as_str(), 2),
        },
        BusMessage::AppDeleted {
            app_name: AppName::parse(&format!("{prefix}-b")).unwrap(),
            incarnation: 1,
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
}
