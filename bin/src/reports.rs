//! Reports at the edge: the report settings and transport, the host's usage read from `/proc`
//! and `statvfs("/")` on the worker's own host, attaching a reporter to a worker, and the API's
//! periodic sweep of expired reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nebula_core::manager::Manager;
use nebula_core::report::{DiskUsage, MemoryUsage};
use nebula_core::worker::Worker;
use nebula_core::worker::report::{HostProbe, HostUsage, ReportConfig, ReportSink, Reporter};
use tokio::sync::watch;

use crate::config::ReportSettings;

/// `worker`, reporting to `sink` after every check-in, when reports are enabled.
#[must_use]
pub fn attach(worker: Worker, sink: Arc<dyn ReportSink>, settings: &ReportSettings) -> Worker {
    if !settings.enabled {
        tracing::info!("reports off (NEBULA_REPORT_ENABLED=false)");
        return worker;
    }
    tracing::info!(
        hostname = %settings.hostname,
        on_update_only = settings.on_update_only,
        "reporting at every check-in"
    );
    worker.with_reporter(Reporter::new(
        sink,
        Arc::new(ProcProbe::new()),
        ReportConfig {
            hostname: settings.hostname.clone(),
            on_update_only: settings.on_update_only,
            timeout: settings.timeout,
        },
    ))
}

/// Removes expired reports every minute (or every `ttl`, if shorter) until `stop`.
pub async fn sweep(manager: Manager, ttl: Duration, mut stop: watch::Receiver<bool>) {
    let every = ttl.min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        if let Err(e) = manager.sweep_reports(now, ttl).await {
            tracing::warn!(error = %e, "sweeping expired reports failed; retrying later");
        }
    }
}

/// Host usage from `/proc/meminfo`, `/proc/stat` and `statvfs` of the root directory.
#[derive(Debug)]
pub struct ProcProbe {
    proc: PathBuf,
    root: PathBuf,
    /// The previous CPU reading: (busy, total) jiffies.
    last_cpu: Mutex<Option<(u64, u64)>>,
}

impl Default for ProcProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcProbe {
    /// The probe of this host.
    #[must_use]
    pub fn new() -> Self {
        Self::at("/proc", "/")
    }

    /// A probe reading `proc` (a `/proc` tree) and the filesystem of `root`.
    #[must_use]
    pub fn at(proc: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            proc: proc.into(),
            root: root.into(),
            last_cpu: Mutex::new(None),
        }
    }

    fn cpu(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.proc.join("stat")).ok()?;
        let now = parse_cpu(&text)?;
        let mut last = self.last_cpu.lock().unwrap_or_else(PoisonError::into_inner);
        let before = last.replace(now).unwrap_or((0, 0));
        cpu_percent(before, now)
    }
}

impl HostProbe for ProcProbe {
    fn usage(&self) -> HostUsage {
        HostUsage {
            memory: std::fs::read_to_string(self.proc.join("meminfo"))
                .ok()
                .and_then(|t| parse_meminfo(&t)),
            root_disk: rustix::fs::statvfs(&self.root).ok().map(|s| {
                let mb = |blocks: u64| blocks.saturating_mul(s.f_frsize) / (1024 * 1024);
                DiskUsage {
                    total: mb(s.f_blocks),
                    used: mb(s.f_blocks.saturating_sub(s.f_bfree)),
                    free: mb(s.f_bavail),
                }
            }),
            cpu_used_percent: self.cpu(),
        }
    }
}

/// Memory from `/proc/meminfo` (kB) in MiB; `used` is `total - available`.
#[must_use]
pub fn parse_meminfo(text: &str) -> Option<MemoryUsage> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let available = field("MemAvailable").unwrap_or(free);
    Some(MemoryUsage {
        total: total / 1024,
        used: total.saturating_sub(available) / 1024,
        free: free / 1024,
        available: available / 1024,
    })
}

/// (busy, total) jiffies of all CPUs from `/proc/stat`'s `cpu` line (idle and iowait are not
/// busy; guest time is already in user time).
#[must_use]
pub fn parse_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The busy share, 0 to 100, between two readings; `None` when no time passed.
#[must_use]
pub fn cpu_percent(before: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let total = now.1.checked_sub(before.1).filter(|t| *t > 0)?;
    let busy = now.0.saturating_sub(before.0).min(total);
    #[allow(clippy::cast_precision_loss)]
    let share = busy as f64 * 100.0 / total as f64;
    Some((share * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16384000 kB\nMemFree:         1024000 kB\n\
                           MemAvailable:    8192000 kB\nBuffers:          100 kB\n";

    #[test]
    fn memory_is_read_in_mib() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Some(MemoryUsage {
                total: 16000,
                used: 8000,
                free: 1000,
                available: 8000
            })
        );
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn cpu_share_is_busy_over_total_between_readings() {
        let a = parse_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, (200, 1000));
        let b = parse_cpu("cpu  150 0 150 1300 100 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), Some(14.3));
        assert_eq!(cpu_percent(b, b), None);
        assert_eq!(cpu_percent((0, 0), a), Some(20.0));
        assert_eq!(parse_cpu("intr 1 2"), None);
    }

    #[test]
    fn the_probe_reads_this_host() {
        let dir = std::env::temp_dir().join(format!("nebula-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("meminfo"), MEMINFO).unwrap();
        std::fs::write(dir.join("stat"), "cpu  100 0 100 700 100 0 0 0\n").unwrap();
        let probe = ProcProbe::at(&dir, &dir);
        let usage = probe.usage();
        assert_eq!(usage.memory.unwrap().total, 16000);
        assert_eq!(usage.cpu_used_percent, Some(20.0));
        let disk = usage.root_disk.unwrap();
        assert!(disk.total > 0 && disk.used + disk.free <= disk.total + 1);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!crate::config::system_hostname().is_empty());
        let real = ProcProbe::new().usage();
        if cfg!(target_os = "linux") {
            assert!(real.memory.is_some() && real.root_disk.is_some());
        }
    }
}
