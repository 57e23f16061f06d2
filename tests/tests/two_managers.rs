//! Two API managers on one MongoDB-compatible store behave as one: hammered with concurrent
//! updates of the same app, every acknowledged update is reflected and `app_id` never skips or
//! repeats.

use std::time::Duration;

use nebula_tests::{Api, Process, binary, free_port, unique};
use serde_json::json;

fn mongo_ready(test: &str) -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], 27017).into(),
        Duration::from_secs(1),
    )
    .is_ok();
    if !up {
        assert!(
            std::env::var_os("NEBULA_REQUIRE_MONGO").is_none(),
            "{test}: NEBULA_REQUIRE_MONGO is set"
        );
        println!(
            "SKIPPED {test}: no MongoDB-compatible server on 127.0.0.1:27017; run .ci/mongo.sh (secantusdb) \
             or start mongod"
        );
    }
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_managers_on_one_store_never_lose_or_repeat_an_update() {
    if !mongo_ready("two_managers_on_one_store_never_lose_or_repeat_an_update") {
        return;
    }
    let dir = std::env::temp_dir().join(unique("nebula-two-"));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = unique("it");
    let mut apis = Vec::new();
    let mut managers = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let data = dir.join(format!("data{i}"));
        managers.push(Process::start(
            binary("nebula-api-manager"),
            &["--bind", &bind, "--data-dir", data.to_str().unwrap()],
            &[
                ("BASIC_AUTH_USER", "admin"),
                ("BASIC_AUTH_PASSWORD", "pw"),
                ("MONGO_URL", "mongodb://127.0.0.1:27017"),
                ("SCHEMA_NAME", &schema),
            ],
            dir.join(format!("manager{i}.log")),
        ));
        let api = Api::new(port, "admin", "pw");
        api.wait_ready().await;
        apis.push(api);
    }
    let app = unique("cas");
    let path = format!("/api/v2/apps/{app}");
    let (code, doc) = apis[0]
        .call("POST", &path, Some(json!({"docker_image": "nginx"})))
        .await;
    assert_eq!((code, doc["app_id"].clone()), (200, json!(1)));
    assert_eq!(
        apis[1].call("GET", &path, None).await.1["app_id"],
        1,
        "the other manager sees it"
    );

    const UPDATES: u64 = 40;
    let tasks: Vec<_> = (0..UPDATES)
        .map(|i| {
            let api = apis[usize::try_from(i % 2).unwrap()].clone();
            let path = format!("{path}/update");
            tokio::spawn(async move {
                let (code, doc) = api
                    .call(
                        "PUT",
                        &path,
                        Some(json!({"env_vars": {"U": i.to_string()}})),
                    )
                    .await;
                assert_eq!(code, 202, "{doc}");
                assert_eq!(
                    doc["env_vars"]["U"],
                    i.to_string(),
                    "the reply shows this update applied"
                );
                (doc["app_id"].as_u64().unwrap(), i)
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.push(t.await.unwrap());
    }
    acked.sort_unstable();
    let ids: Vec<u64> = acked.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (2..=UPDATES + 1).collect::<Vec<_>>(),
        "app_id never skips or repeats"
    );
    let last = acked.last().unwrap().1;
    for api in &apis {
        let doc = api.call("GET", &path, None).await.1;
        assert_eq!(doc["app_id"], UPDATES + 1);
        assert_eq!(
            doc["env_vars"]["U"],
            last.to_string(),
            "the last acknowledged update is what both managers serve"
        );
    }
    assert!(!managers[0].log().contains("panicked"));
    drop(managers);
    let _ = std::fs::remove_dir_all(&dir);
}
