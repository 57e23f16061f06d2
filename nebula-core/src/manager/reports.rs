//! The manager's report commands: store a worker's report under a fresh sortable id (posted
//! over HTTP, or taken from the bus by [`Manager::consume_reports`]), page through the
//! unexpired ones with the reference's filters, sum them up per app, and sweep the expired
//! ones.
//!
//! The [`Store`](crate::store::Store) lists whole collections, so every read here lists every
//! stored report and filters in memory: the cost is linear in the reports kept, which the TTL
//! bounds (hosts × reports per host per TTL). Expired reports are skipped by their key alone,
//! before any decoding.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::Manager;
use crate::bus::ReportBus;
use crate::model::AppName;
use crate::report::{
    AppStatusView, InsertDate, ReportError, ReportId, ReportPage, ReportQuery, StoredReport,
    WorkerReport, app_status_view, page,
};
use crate::store::{Collection, Expect, StoreError, Stored};
use crate::worker::SourceError;
use crate::worker::report::ReportSink;

/// The first wait before subscribing to reports again; it doubles up to
/// [`MAX_RESUBSCRIBE_WAIT`] while subscribing or storing keeps failing.
const FIRST_RESUBSCRIBE_WAIT: Duration = Duration::from_millis(250);
/// The longest wait before subscribing to reports again.
const MAX_RESUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// How many fresh ids an insert tries before giving up (a clash needs the same nanosecond and
/// the same 32 random bits).
const ID_ATTEMPTS: usize = 8;

/// The last insertion time handed out by this process.
static LAST_NS: AtomicU64 = AtomicU64::new(0);

/// The insertion time of a report inserted at `now_ns` when the last one got `last`: strictly
/// later than `last` when the clock reads at most a second before it (same instant, or a small
/// step back), else the clock's reading (a test's own time, or a large clock change).
fn next_after(last: u64, now_ns: u64) -> u64 {
    if now_ns <= last && last - now_ns < 1_000_000_000 {
        last.saturating_add(1)
    } else {
        now_ns
    }
}

fn next_ns(now_ns: u64) -> u64 {
    let mut last = LAST_NS.load(Ordering::Relaxed);
    loop {
        let next = next_after(last, now_ns);
        match LAST_NS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Unix nanoseconds now.
#[must_use]
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A stored report, or `None` (logged) when it does not decode.
pub(super) fn decode_report(stored: Stored) -> Option<StoredReport> {
    match serde_json::from_value(stored.doc) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable report skipped");
            None
        }
    }
}

impl Manager {
    /// Every stored report with a well-formed key, sorted by id.
    pub(super) async fn report_docs(&self) -> Result<Vec<(ReportId, Stored)>, ReportError> {
        Ok(self
            .store
            .list(Collection::Reports)
            .await?
            .into_iter()
            .filter_map(|(key, stored)| ReportId::parse("key", &key).ok().map(|id| (id, stored)))
            .collect())
    }

    /// Stores a worker's report, inserted at `now_ns` (unix nanoseconds); returns its id.
    ///
    /// # Errors
    /// [`ReportError::Invalid`] (nothing stored), store failures.
    pub async fn insert_report(
        &self,
        report: WorkerReport,
        now_ns: u64,
    ) -> Result<ReportId, ReportError> {
        report.validate().map_err(ReportError::Invalid)?;
        let mut last_err = None;
        for _ in 0..ID_ATTEMPTS {
            let at = next_ns(now_ns);
            let id = ReportId::new(at, rand::random());
            let stored = StoredReport {
                report: report.clone(),
                report_insert_date: InsertDate {
                    millis: at / 1_000_000,
                },
            };
            let doc = serde_json::to_value(&stored)
                .map_err(|e| StoreError::Corrupt(format!("report: {e}")))?;
            match self
                .store
                .put(Collection::Reports, id.as_str(), &doc, Expect::Absent)
                .await
            {
                Ok(_) => {
                    tracing::debug!(report = %id, hostname = %report.hostname, "report stored");
                    return Ok(id);
                }
                Err(e @ StoreError::Conflict { .. }) => last_err = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err
            .unwrap_or_else(|| StoreError::Unavailable("no free report id".into()))
            .into())
    }

    /// One page of the reports unexpired at `now_ns` (`GET /api/v2/reports`).
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_reports(
        &self,
        query: &ReportQuery,
        now_ns: u64,
        ttl: Duration,
    ) -> Result<ReportPage, ReportError> {
        Ok(page(
            self.report_docs().await?,
            query,
            now_ns,
            ttl,
            decode_report,
        ))
    }

    /// How the hosts that reported within `ttl` of `now_ns` run `app`
    /// (`GET /api/v2/apps/<app>/status`).
    ///
    /// # Errors
    /// [`ReportError::AppNotFound`], store failures.
    pub async fn app_status(
        &self,
        app: &AppName,
        now_ns: u64,
        ttl: Duration,
    ) -> Result<AppStatusView, ReportError> {
        let app = match self.get_app(app).await {
            Ok(app) => app,
            Err(super::ManagerError::AppNotFound) => return Err(ReportError::AppNotFound),
            Err(super::ManagerError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(StoreError::Corrupt(e.to_string()).into()),
        };
        let reports = self
            .report_docs()
            .await?
            .into_iter()
            .filter(|(id, _)| !id.expired(now_ns, ttl))
            .filter_map(|(id, stored)| decode_report(stored).map(|s| (id, s.report)));
        Ok(app_status_view(&app, reports, now_ns, ttl))
    }

    /// Deletes the reports expired at `now_ns`; returns how many went. A report deleted or
    /// changed meanwhile by another manager is left to it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn sweep_reports(&self, now_ns: u64, ttl: Duration) -> Result<usize, ReportError> {
        let mut removed = 0;
        for (id, stored) in self.report_docs().await? {
            if !id.expired(now_ns, ttl) {
                // Ids sort by insertion time: every later one is younger.
                break;
            }
            match self
                .store
                .delete(Collection::Reports, id.as_str(), stored.rev)
                .await
            {
                Ok(()) => removed += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if removed > 0 {
            tracing::debug!(removed, "expired reports removed");
        }
        Ok(removed)
    }
}

impl Manager {
    /// Stores the reports workers publish on `bus` until `shutdown` completes. Every API
    /// manager of a fleet runs this; they share the reports, each stored by one of them.
    ///
    /// - A report is acknowledged only after it is stored.
    /// - When the store fails, the report is not acknowledged: the subscription is ended, so
    ///   it (and whatever else was delivered and not acknowledged) is delivered again, to this
    ///   manager after a pause or to another one at once.
    /// - A report that breaks the validation rules can never be stored: it is acknowledged,
    ///   dropped and logged (its rules, never its content).
    /// - When subscribing fails or the subscription ends (a lost connection), the manager
    ///   subscribes again after a jittered pause: 250 ms doubling to 5 s while failures
    ///   follow each other, back to 250 ms once a report is stored.
    pub async fn consume_reports(
        &self,
        bus: Arc<dyn ReportBus>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut pause = Duration::ZERO;
        let mut failing = false;
        loop {
            if !pause.is_zero() {
                let wait = pause.mul_f64(rand::random_range(0.5..=1.0));
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            let subscribed = tokio::select! {
                () = &mut shutdown => return,
                s = bus.subscribe_reports() => s,
            };
            let mut subscription = match subscribed {
                Ok(s) => s,
                Err(e) => {
                    pause = next_pause(pause);
                    if !failing {
                        tracing::warn!(error = %e, "cannot subscribe to worker reports; retrying");
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!("taking worker reports from the bus again");
                failing = false;
            } else {
                tracing::debug!("taking worker reports from the bus");
            }
            loop {
                let delivery = tokio::select! {
                    () = &mut shutdown => return,
                    d = subscription.next() => d,
                };
                let Some(delivery) = delivery else {
                    tracing::warn!("the report subscription ended; subscribing again");
                    pause = next_pause(pause);
                    break;
                };
                match self.insert_report(delivery.message.clone(), now_ns()).await {
                    Ok(_) => {
                        pause = Duration::ZERO;
                        if let Err(e) = delivery.ack().await {
                            tracing::warn!(error = %e, "report stored but not acknowledged; it may be stored twice");
                        }
                    }
                    Err(ReportError::Invalid(rules)) => {
                        let error = ReportError::Invalid(rules);
                        tracing::warn!(%error, "dropping a report from the bus that can never be stored");
                        if let Err(e) = delivery.ack().await {
                            tracing::warn!(error = %e, "ack of a dropped report failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "report not stored; it will be delivered again");
                        pause = next_pause(pause);
                        failing = true;
                        break;
                    }
                }
            }
        }
    }
}

/// The pause after `pause` when failures follow each other.
fn next_pause(pause: Duration) -> Duration {
    if pause.is_zero() {
        FIRST_RESUBSCRIBE_WAIT
    } else {
        (pause * 2).min(MAX_RESUBSCRIBE_WAIT)
    }
}

/// The single-process mode: the worker's reports go straight to the manager.
#[async_trait]
impl ReportSink for Manager {
    async fn send(&self, report: &WorkerReport) -> Result<(), SourceError> {
        self.insert_report(report.clone(), now_ns())
            .await
            .map(drop)
            .map_err(|e| SourceError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::bus::{BusError, InProcessBus, Subscription};
    use crate::model::AppSpec;
    use crate::report::{AppStatus, ReportFilter};
    use crate::store::Store;
    use crate::testing::InMemoryStore;

    const SEC: u64 = 1_000_000_000;
    const TTL: Duration = Duration::from_secs(3600);

    fn report(host: &str, time: u64) -> WorkerReport {
        WorkerReport {
            hostname: host.into(),
            report_creation_time: time,
            ..WorkerReport::default()
        }
    }

    #[tokio::test]
    async fn reports_are_stored_paged_and_swept() {
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        let m = Manager::new(store.clone(), None);
        let t0 = 1_000_000 * SEC;
        let mut ids = Vec::new();
        for (i, host) in ["a", "b", "a"].iter().enumerate() {
            let at = t0 + i as u64 * 600 * SEC;
            ids.push(m.insert_report(report(host, i as u64), at).await.unwrap());
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise");
        assert!(matches!(
            m.insert_report(report("", 0), t0).await,
            Err(ReportError::Invalid(_))
        ));
        let now = t0 + 1300 * SEC;
        let all = m
            .list_reports(&ReportQuery::default(), now, TTL)
            .await
            .unwrap();
        assert_eq!(all.data.len(), 3);
        assert_eq!(
            all.data[0].1.report_insert_date.millis,
            ids[0].inserted_ns() / 1_000_000
        );
        let only_a = ReportQuery {
            filter: ReportFilter {
                hostname: Some("a".into()),
                ..ReportFilter::default()
            },
            page_size: 1,
            last_id: Some(ids[0].clone()),
        };
        let p = m.list_reports(&only_a, now, TTL).await.unwrap();
        assert_eq!(p.last_id(), Some(&ids[2]));

        // An hour after the first insert, the first report is gone from reads and the sweep.
        let later = t0 + 3600 * SEC;
        let left = m
            .list_reports(&ReportQuery::default(), later, TTL)
            .await
            .unwrap();
        assert_eq!(left.data.len(), 2);
        assert_eq!(store.list(Collection::Reports).await.unwrap().len(), 3);
        assert_eq!(m.sweep_reports(later, TTL).await.unwrap(), 1);
        assert_eq!(m.sweep_reports(later, TTL).await.unwrap(), 0);
        let keys: Vec<String> = store
            .list(Collection::Reports)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![ids[1].to_string(), ids[2].to_string()]);
    }

    #[test]
    fn insertion_times_rise_within_a_second() {
        assert_eq!(next_after(0, 5), 5);
        assert_eq!(next_after(5, 5), 6);
        assert_eq!(next_after(10, 5), 11);
        assert_eq!(
            next_after(5 * SEC, 1),
            1,
            "a far earlier reading is taken as is"
        );
    }

    #[tokio::test]
    async fn the_same_instant_still_gives_distinct_ids() {
        let m = Manager::new(Arc::new(InMemoryStore::new()), None);
        let a = m.insert_report(report("h", 1), 5).await.unwrap();
        let b = m.insert_report(report("h", 1), 5).await.unwrap();
        assert_ne!(a, b);
        let all = m
            .list_reports(&ReportQuery::default(), 6, TTL)
            .await
            .unwrap();
        assert_eq!(all.data.len(), 2);
    }

    /// A store whose report writes fail while `failures` is above zero.
    #[derive(Debug, Default)]
    struct FlakyStore {
        inner: InMemoryStore,
        failures: AtomicUsize,
        report_puts: AtomicUsize,
    }

    #[async_trait]
    impl Store for FlakyStore {
        async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError> {
            self.inner.get(coll, key).await
        }
        async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
            self.inner.list(coll).await
        }
        async fn put(
            &self,
            coll: Collection,
            key: &str,
            doc: &serde_json::Value,
            expect: Expect,
        ) -> Result<u64, StoreError> {
            if coll == Collection::Reports {
                self.report_puts.fetch_add(1, Ordering::SeqCst);
                let failing = self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    return Err(StoreError::Unavailable("disk gone".into()));
                }
            }
            self.inner.put(coll, key, doc, expect).await
        }
        async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError> {
            self.inner.delete(coll, key, rev).await
        }
    }

    /// A report bus whose first `fail_subscribes` subscriptions are refused.
    struct RefusingBus {
        bus: InProcessBus,
        fail_subscribes: AtomicUsize,
        subscribes: AtomicUsize,
    }

    #[async_trait]
    impl ReportBus for RefusingBus {
        async fn publish_report(&self, report: &WorkerReport) -> Result<(), BusError> {
            self.bus.publish_report(report).await
        }
        async fn subscribe_reports(&self) -> Result<Subscription<WorkerReport>, BusError> {
            self.subscribes.fetch_add(1, Ordering::SeqCst);
            if self
                .fail_subscribes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(BusError::Unavailable("broker down".into()));
            }
            self.bus.subscribe_reports().await
        }
    }

    async fn stored_hosts(m: &Manager) -> Vec<String> {
        let mut hosts: Vec<String> = m
            .list_reports(&ReportQuery::default(), now_ns(), TTL)
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|(_, s)| s.report.hostname)
            .collect();
        hosts.sort();
        hosts
    }

    /// Waits (in the test's paused time) until `done`, at most a minute.
    async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while !done().await {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test(start_paused = true)]
    async fn reports_from_the_bus_are_stored_once_and_acked_after_the_store() {
        let store = Arc::new(FlakyStore::default());
        let m = Manager::new(store.clone(), None);
        let bus = InProcessBus::new();
        // Published before any manager listens: they wait.
        bus.publish_report(&report("a", 1)).await.unwrap();
        bus.publish_report(&report("b", 1)).await.unwrap();
        store.failures.store(1, Ordering::SeqCst);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let consumer = {
            let (m, bus) = (m.clone(), Arc::new(bus.clone()));
            tokio::spawn(async move {
                m.consume_reports(bus, async {
                    let _ = stopped.await;
                })
                .await;
            })
        };
        until("both reports stored", || async {
            stored_hosts(&m).await.len() == 2
        })
        .await;
        until("every report acknowledged", || async {
            bus.report_backlog() == 0
        })
        .await;
        assert_eq!(stored_hosts(&m).await, ["a", "b"], "each stored once");
        assert_eq!(
            store.report_puts.load(Ordering::SeqCst),
            3,
            "the failed write was not acknowledged and came again"
        );

        // A report that can never be stored is dropped; the next one is stored.
        bus.publish_report(&report("", 2)).await.unwrap();
        bus.publish_report(&report("c", 2)).await.unwrap();
        until("the valid report stored", || async {
            stored_hosts(&m).await.len() == 3
        })
        .await;
        until("the invalid report acknowledged", || async {
            bus.report_backlog() == 0
        })
        .await;
        assert_eq!(stored_hosts(&m).await, ["a", "b", "c"]);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("the consumer stops at shutdown")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_subscription_is_tried_again() {
        let m = Manager::new(Arc::new(InMemoryStore::new()), None);
        let bus = Arc::new(RefusingBus {
            bus: InProcessBus::new(),
            fail_subscribes: AtomicUsize::new(3),
            subscribes: AtomicUsize::new(0),
        });
        bus.publish_report(&report("a", 1)).await.unwrap();
        let started = tokio::time::Instant::now();
        let consumer = {
            let (m, bus) = (m.clone(), bus.clone());
            tokio::spawn(async move { m.consume_reports(bus, std::future::pending()).await })
        };
        until("the report stored", || async {
            stored_hosts(&m).await == ["a"]
        })
        .await;
        assert_eq!(bus.subscribes.load(Ordering::SeqCst), 4);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(125 + 250 + 500)
                && waited <= Duration::from_millis(250 + 500 + 1000 + 100),
            "three jittered, doubling pauses: {waited:?}"
        );
        consumer.abort();
    }

    #[tokio::test]
    async fn status_of_an_app_from_the_reports() {
        let m = Manager::new(Arc::new(InMemoryStore::new()), None);
        let name = AppName::parse("site").unwrap();
        assert!(matches!(
            m.app_status(&name, now_ns(), TTL).await,
            Err(ReportError::AppNotFound)
        ));
        let app = m
            .create_app(name.clone(), AppSpec::with_image("site"))
            .await
            .unwrap();
        let mut r = report("h1", 1);
        r.apps_status.insert(
            "site".into(),
            AppStatus {
                app_id: app.app_id,
                incarnation: app.incarnation,
                running: true,
                desired_containers: 1,
                running_containers: 1,
                converged: true,
                pull_fallback: None,
                fleet_rollout: None,
            },
        );
        m.send(&r).await.unwrap();
        let view = m.app_status(&name, now_ns(), TTL).await.unwrap();
        assert_eq!((view.hosts, view.converged), (1, 1));
        assert_eq!(view.by_app_id.get("1"), Some(&1));
    }
}
