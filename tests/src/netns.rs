//! Simulated hosts for the multi-host tests: a private `dockerd` per host, each in a network
//! namespace of its own joined to the root namespace by a veth pair (10.231.x.0/24), with its own
//! `--data-root`, `--exec-root`, `-H` socket and `--pidfile` under a temp dir. Root only.
//!
//! Everything is synchronous (`std::process`) so that `Drop` can clean up even on panic: the
//! engine is stopped by the pid of the process we started, then the namespace, the veth pair
//! and the temp dir are removed.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why the multi-host tests cannot run here (not root, no `ip`/`nsenter`/`dockerd`, or the
/// kernel refuses network namespaces); `None` when they can.
#[must_use]
pub fn unsupported() -> Option<String> {
    let uid = Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
        return Some("needs root (network namespaces, a private dockerd)".into());
    }
    for tool in ["ip", "nsenter", "dockerd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    let probe = crate::unique("nbp");
    let made = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        return Some("`ip netns add` fails: no network namespace support here".into());
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", &probe])
        .output();
    None
}

/// A free 10.231.x.0/24 (not routed on this machine yet) for a host's veth pair.
#[must_use]
pub fn free_subnet() -> u8 {
    let routes = Command::new("ip")
        .args(["-4", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for _ in 0..500 {
        let x = 1 + rand::random::<u8>() % 250;
        if !routes.contains(&format!("10.231.{x}.")) {
            return x;
        }
    }
    1
}

/// One simulated host: a `dockerd` in its own network namespace.
#[derive(Debug)]
pub struct NetnsEngine {
    /// The namespace's name (also the containerd namespace and the temp dir's name).
    pub name: String,
    /// The temp dir holding the engine's data, exec root, socket, pid file and log.
    pub dir: PathBuf,
    /// `unix:///.../docker.sock`, for `DOCKER_HOST` and `docker -H`.
    pub socket: String,
    /// The root namespace's end of the veth pair (10.231.x.1).
    pub host_addr: String,
    /// The namespace's end of the veth pair (10.231.x.2).
    pub ns_addr: String,
    veth: String,
    child: Option<Child>,
    forwarders: Vec<Child>,
}

impl NetnsEngine {
    /// Creates the namespace and veth pair and starts the engine; waits until it answers.
    ///
    /// # Errors
    /// When any step fails (everything made so far is removed again).
    pub fn start(name: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let subnet = free_subnet();
        let mut engine = Self {
            name: name.to_owned(),
            socket: format!("unix://{}", dir.join("docker.sock").display()),
            dir,
            host_addr: format!("10.231.{subnet}.1"),
            ns_addr: format!("10.231.{subnet}.2"),
            // Interface names are at most 15 bytes.
            veth: format!("v{}", &name[name.len().saturating_sub(10)..]),
            child: None,
            forwarders: Vec::new(),
        };
        ip(&["netns", "add", name])?;
        let peer = format!("{}p", engine.veth);
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&[
            "link",
            "add",
            &engine.veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            name,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", engine.host_addr),
            "dev",
            &engine.veth,
        ])?;
        ip(&["link", "set", &engine.veth, "up"])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{}/24", engine.ns_addr),
            "dev",
            &peer,
        ])?;
        ip(&["-n", name, "link", "set", &peer, "up"])?;
        engine.spawn_dockerd()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !engine.docker(&["version"]).status.success() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the dockerd in {name} did not answer: {}",
                    std::fs::read_to_string(engine.dir.join("dockerd.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(engine)
    }

    fn spawn_dockerd(&mut self) -> Result<(), String> {
        // An empty daemon config: the system's /etc/docker/daemon.json must not apply.
        std::fs::write(self.dir.join("daemon.json"), "{}").map_err(|e| e.to_string())?;
        let path = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let log = std::fs::File::create(self.dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts.
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("dockerd")
            .args(["--config-file", &path("daemon.json")])
            .args(["--data-root", &path("data"), "--exec-root", &path("exec")])
            .args(["--pidfile", &path("dockerd.pid"), "-H", &self.socket])
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .args(["--containerd-namespace", &self.name])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", self.name),
            ])
            .args(["--shutdown-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Makes the registry on the root namespace's 127.0.0.1:`port` answer on the namespace's
    /// own 127.0.0.1:`port` too (the engine pulls from there): two `socat` relays, one in the
    /// namespace to the host end of the veth pair, one on that address to 127.0.0.1.
    ///
    /// # Errors
    /// When `socat` cannot be started.
    pub fn forward_registry(&mut self, port: u16) -> Result<(), String> {
        let host_side = Command::new("socat")
            .arg(format!(
                "TCP-LISTEN:{port},bind={},fork,reuseaddr",
                self.host_addr
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("socat: {e}"))?;
        self.forwarders.push(host_side);
        let ns_side = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.name))
            .arg("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("TCP:{}:{port}", self.host_addr))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("socat in {}: {e}", self.name))?;
        self.forwarders.push(ns_side);
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    /// Runs `docker -H <this engine> args...`.
    ///
    /// # Panics
    /// When the docker CLI cannot be run.
    #[must_use]
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", &self.socket])
            .args(args)
            .output()
            .expect("docker CLI")
    }

    /// Loads an image archive made by `docker save` (so no pull is needed: the engine's
    /// 127.0.0.1 is the namespace's own loopback, without the registry).
    ///
    /// # Errors
    /// When the load fails.
    pub fn load(&self, archive: &std::path::Path) -> Result<(), String> {
        let out = Command::new("docker")
            .args(["-H", &self.socket, "load", "-i"])
            .arg(archive)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `(name, state, nebula.app_id label)` of the containers labelled `app_name=<app>`,
    /// sorted by name.
    #[must_use]
    pub fn app_containers(&self, app: &str) -> Vec<(String, String, String)> {
        let out = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=app_name={app}"),
            "--format",
            "{{.Names}} {{.State}} {{.Label \"nebula.app_id\"}}",
        ]);
        let mut seen: Vec<(String, String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                Some((
                    p.next()?.to_owned(),
                    p.next()?.to_owned(),
                    p.next().unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        seen.sort();
        seen
    }
}

impl Drop for NetnsEngine {
    fn drop(&mut self) {
        for mut relay in self.forwarders.drain(..) {
            let _ = relay.kill();
            let _ = relay.wait();
        }
        if let Some(mut child) = self.child.take() {
            // Remove what the test left, then SIGTERM the dockerd we started, by pid.
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        if std::fs::remove_dir_all(&self.dir).is_err() {
            // Mounts the engine left behind keep files busy: detach them, then retry.
            for sub in ["exec", "data"] {
                let _ = Command::new("umount")
                    .args(["-R", "-l"])
                    .arg(self.dir.join(sub))
                    .output();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
