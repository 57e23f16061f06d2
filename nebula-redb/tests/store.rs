//! `RedbStore` against the Store contract, across reopens, across a SIGKILL, and against a
//! second open of the same data dir.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nebula_core::store::{Collection, Expect, Store, StoreError};
use nebula_redb::RedbStore;
use serde_json::json;

/// Set (to a data dir) in the child process of [`acknowledged_writes_survive_sigkill`].
const CHILD_ENV: &str = "NEBULA_REDB_CRASH_CHILD_DIR";
/// How many documents the crash child writes unless it is killed first.
const CHILD_WRITES: u64 = 100_000;
/// How many acknowledgements the parent reads before it kills the child.
const ACKS_BEFORE_KILL: u64 = 50;

/// A fresh, empty directory for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("nebula-redb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Kills (SIGKILL) and reaps the child when dropped, so a failing test leaves no writer behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The index in an `ACK <i>` line of the child (libtest may print `test <name> ... ` first).
fn ack(line: &str) -> Option<u64> {
    let (_, i) = line.split_once("ACK ")?;
    Some(i.trim().parse().unwrap())
}

fn child_doc(i: u64) -> serde_json::Value {
    json!({"i": i, "payload": format!("document number {i}")})
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_store_contract() {
    let d = fresh_dir("contract");
    let store = RedbStore::open(&d).unwrap();
    nebula_core::testing::contract::store(&store, "redb").await;
    // Twice on the same file: the suite cleans up after itself.
    nebula_core::testing::contract::store(&store.clone(), "redb").await;
    drop(store);
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_survive_a_reopen() {
    let d = fresh_dir("reopen").join("nested").join("data");
    let coll = Collection::Apps;
    {
        let store = RedbStore::open(&d).unwrap();
        assert_eq!(store.path(), d.join("nebula.redb"));
        assert_eq!(
            store
                .put(coll, "a", &json!({"v": 1}), Expect::Absent)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .put(coll, "a", &json!({"v": 2}), Expect::Rev(1))
                .await
                .unwrap(),
            2
        );
        store
            .put(coll, "b", &json!({"v": "b"}), Expect::Absent)
            .await
            .unwrap();
        store
            .put(coll, "gone", &json!({}), Expect::Absent)
            .await
            .unwrap();
        store.delete(coll, "gone", 1).await.unwrap();
    }
    let store = RedbStore::open(&d).unwrap();
    let a = store.get(coll, "a").await.unwrap().unwrap();
    assert_eq!((a.rev, a.doc), (2, json!({"v": 2})));
    assert!(store.get(coll, "gone").await.unwrap().is_none());
    let listed: Vec<(String, u64)> = store
        .list(coll)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, s.rev))
        .collect();
    assert_eq!(listed, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    let err = store
        .put(coll, "a", &json!({}), Expect::Rev(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { found: Some(2) }),
        "{err:?}"
    );
    for c in Collection::ALL {
        store.list(c).await.unwrap();
    }
    drop(store);
    let _ = std::fs::remove_dir_all(fresh_dir("reopen"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_open_of_the_data_dir_says_it_is_in_use() {
    let d = fresh_dir("in-use");
    let first = RedbStore::open(&d).unwrap();
    let err = RedbStore::open(&d).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("in use by another nebula process")),
        "{err}"
    );
    // The refused open leaves the first one working, and closing it frees the dir.
    first
        .put(Collection::Apps, "k", &json!(1), Expect::Absent)
        .await
        .unwrap();
    drop(first);
    let again = RedbStore::open(&d).unwrap();
    assert_eq!(
        again.get(Collection::Apps, "k").await.unwrap().unwrap().doc,
        json!(1)
    );
    drop(again);
    let _ = std::fs::remove_dir_all(&d);
}

/// The child half of [`acknowledged_writes_survive_sigkill`]; does nothing unless
/// `NEBULA_REDB_CRASH_CHILD_DIR` is set. Writes documents one by one and prints `ACK <i>` after
/// each acknowledged put, until it is killed.
#[tokio::test(flavor = "multi_thread")]
async fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(std::path::Path::new(&dir)).unwrap();
    for i in 0..CHILD_WRITES {
        store
            .put(
                Collection::Apps,
                &format!("k{i:06}"),
                &child_doc(i),
                Expect::Absent,
            )
            .await
            .unwrap();
        println!("ACK {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let d = fresh_dir("crash");
    let mut child = Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &d)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    while (acked.len() as u64) < ACKS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the child exited before enough ACKs")
            .unwrap();
        if let Some(i) = ack(&line) {
            acked.push(i);
        }
    }
    // Another process holds the file: opening it here must say so.
    let err = RedbStore::open(&d).unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("in use by another nebula process")),
        "{err}"
    );
    child.0.kill().unwrap(); // SIGKILL
    // Lines already in the pipe were acknowledged before the kill, too.
    for line in lines {
        if let Some(i) = ack(&line.unwrap()) {
            acked.push(i);
        }
    }
    let status = child.0.wait().unwrap();
    assert!(
        !status.success(),
        "the child was killed, not finished: {status}"
    );
    let last = *acked.last().unwrap();
    assert_eq!(acked, (0..=last).collect::<Vec<_>>(), "ACKs are in order");

    let store = RedbStore::open(&d).unwrap();
    let coll = Collection::Apps;
    for &i in &acked {
        let got = store.get(coll, &format!("k{i:06}")).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("acknowledged write {i} lost"));
        assert_eq!((got.rev, got.doc), (1, child_doc(i)), "write {i}");
    }
    // At most the one put in flight at the kill may have landed beyond the last ACK.
    let listed = store.list(coll).await.unwrap();
    eprintln!(
        "{} writes acknowledged before SIGKILL, {} found after",
        last + 1,
        listed.len()
    );
    assert!(
        listed.len() as u64 == last + 1 || listed.len() as u64 == last + 2,
        "{} documents after {} ACKs",
        listed.len(),
        last + 1
    );
    for (k, s) in &listed {
        let i: u64 = k.trim_start_matches('k').parse().unwrap();
        assert!(i <= last + 1, "unexpected {k}");
        assert_eq!((s.rev, &s.doc), (1, &child_doc(i)), "{k}");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&d);
}
