//! The seed's "site + load balancer" example, against a running Nebula, over its HTTP API.
//!
//! Run with: cargo run -p nebula-examples --example site_and_lb
//!
//! Start Nebula first, on the machine whose Docker engine should run the containers:
//! `nebula standalone` (API on 127.0.0.1:8080, data in ./nebula-data). The example then:
//!
//! 1. creates the app `site`: the test image (it serves "$MESSAGE <hostname>" on port 80),
//!    3 containers per CPU, container `i` on host port `81 + i - 1`, env `MESSAGE`;
//! 2. creates the app `lb`: one container per server on host port 80;
//! 3. waits until every site container answers on its port and prints the replies, and the
//!    `lb` page;
//! 4. deletes both apps (unless `KEEP=1`) and waits until the site ports stop answering.
//!
//! About `lb`: the original's example ran HAProxy in front of the site containers, and that is
//! what a real deployment puts there (HAProxy or nginx, with ports 81.. as its backends). The
//! only image available here is a busybox, which has no reverse proxy, so `lb` is a stand-in:
//! the same busybox running `httpd` with a page that lists the site's ports. What it shows is
//! the Nebula side: a second app with its own port and `containers_per {"server": 1}`, pushed
//! to the same hosts as the site. An app that already exists is replaced by a full update, so
//! the example can be run again.
//!
//! Environment:
//! - `NEBULA_URL` (default `http://127.0.0.1:8080`): the API; the containers are reached on the
//!   same host.
//! - `NEBULA_USER` (default `admin`), `NEBULA_PASSWORD` (default: the contents of
//!   `$NEBULA_DATA_DIR/admin-password`, `./nebula-data/admin-password`, which `nebula standalone`
//!   writes when no credentials are configured).
//! - `SITE_IMAGE` (default `127.0.0.1:5000/nebula-test/busybox:latest`), used by both apps.
//! - `MESSAGE` (default `hello from the site`): the site's `MESSAGE`.
//! - `SITE_CONTAINERS` (default: 3 x this machine's CPUs, which is what the worker computes
//!   when Nebula runs here): how many site containers to wait for.
//! - `SITE_PORT` (default 81), `LB_PORT` (default 80): the host ports.
//! - `KEEP=1`: leave both apps running.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long the containers get to answer (the first run may pull the image).
const WAIT: Duration = Duration::from_secs(120);

/// What the `lb` container runs: a page listing the site's ports, served by busybox httpd.
const LB_SCRIPT: &str = r#"mkdir -p /www && {
  echo "nebula lb stand-in on $(hostname); a real deployment runs HAProxy or nginx here."
  echo "The site answers on these host ports:"
  for p in $SITE_PORTS; do echo "  $p"; done
} > /www/index.html && exec httpd -f -p 80 -h /www"#;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn env_port(name: &str, default: u16) -> Result<u16, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| format!("{name}={v} is not a port number")),
        _ => Ok(default),
    }
}

/// The API with the admin's credentials.
struct Api {
    base: String,
    user: String,
    password: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// Calls the API; returns the status code and the JSON body (Null if none).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .basic_auth(&self.user, self.password.as_ref());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            format!("cannot reach the Nebula API at {}: {e}\nStart one with `nebula standalone`, or set NEBULA_URL.", self.base)
        })?;
        let code = response.status().as_u16();
        if code == 401 {
            return Err(format!(
                "{method} {url}: 401, the API refused the credentials of user {:?}; set NEBULA_USER and NEBULA_PASSWORD \
                 (standalone writes the admin's password to <data-dir>/admin-password)",
                self.user
            ));
        }
        Ok((code, response.json().await.unwrap_or(Value::Null)))
    }

    /// Creates the app, or replaces its whole spec when it exists.
    async fn create_or_replace(&self, app: &str, body: &Value) -> Result<(), String> {
        let path = format!("/api/v2/apps/{app}");
        let (code, reply) = self.call(reqwest::Method::POST, &path, Some(body)).await?;
        match code {
            200 => {
                println!("created app {app} (app_id {})", reply["app_id"]);
                Ok(())
            }
            403 if reply["app_exists"] == json!(true) => {
                let (code, reply) = self
                    .call(reqwest::Method::POST, &format!("{path}/update"), Some(body))
                    .await?;
                if code == 202 {
                    println!(
                        "app {app} existed: replaced its spec (app_id {})",
                        reply["app_id"]
                    );
                    Ok(())
                } else {
                    Err(format!("update of app {app}: {code} {reply}"))
                }
            }
            _ => Err(format!("create of app {app}: {code} {reply}")),
        }
    }

    async fn delete(&self, app: &str) -> Result<(), String> {
        let (code, reply) = self
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v2/apps/{app}"),
                None,
            )
            .await?;
        match code {
            200 => {
                println!("deleted app {app}");
                Ok(())
            }
            403 => {
                println!("app {app} was already gone");
                Ok(())
            }
            _ => Err(format!("delete of app {app}: {code} {reply}")),
        }
    }
}

/// GET `http://<host>:<port>/`: the body when it answers 2xx.
async fn get(client: &reqwest::Client, host: &str, port: u16) -> Option<String> {
    let response = client
        .get(format!("http://{host}:{port}/"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

async fn run() -> Result<(), String> {
    let base = env_or("NEBULA_URL", "http://127.0.0.1:8080")
        .trim_end_matches('/')
        .to_owned();
    let host = reqwest::Url::parse(&base)
        .map_err(|e| format!("NEBULA_URL={base} is not a URL: {e}"))?
        .host_str()
        .ok_or_else(|| format!("NEBULA_URL={base} has no host"))?
        .to_owned();
    let user = env_or("NEBULA_USER", "admin");
    let password = match std::env::var("NEBULA_PASSWORD") {
        Ok(p) => Some(p),
        Err(_) => {
            let file = std::path::Path::new(&env_or("NEBULA_DATA_DIR", "./nebula-data"))
                .join("admin-password");
            std::fs::read_to_string(file)
                .ok()
                .map(|p| p.trim().to_owned())
        }
    };
    let image = env_or("SITE_IMAGE", "127.0.0.1:5000/nebula-test/busybox:latest");
    let message = env_or("MESSAGE", "hello from the site");
    let site_port = env_port("SITE_PORT", 81)?;
    let lb_port = env_port("LB_PORT", 80)?;
    let count: u16 = match std::env::var("SITE_CONTAINERS") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("SITE_CONTAINERS={v} is not a number"))?,
        Err(_) => {
            let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            u16::try_from(cpus * 3).map_err(|_| "too many CPUs".to_owned())?
        }
    };
    let ports: Vec<u16> = (0..count)
        .map(|i| {
            site_port
                .checked_add(i)
                .ok_or_else(|| format!("site ports {site_port}+{count} pass 65535"))
        })
        .collect::<Result<_, _>>()?;

    let client = nebula_http::client::client_builder(None)?
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let api = Api {
        base: base.clone(),
        user,
        password,
        client,
    };
    let (code, reply) = api
        .call(reqwest::Method::GET, "/api/v2/status", None)
        .await?;
    if code != 200 {
        return Err(format!(
            "{base}/api/v2/status answered {code} {reply}: is this a Nebula API?"
        ));
    }
    println!("Nebula API at {base} answers");

    // 1. The site: 3 containers per CPU on host ports 81.., each serving "$MESSAGE <hostname>".
    let site = json!({
        "docker_image": image,
        "starting_ports": [{ site_port.to_string(): "80" }],
        "containers_per": {"cpu": 3},
        "env_vars": {"MESSAGE": message},
        "running": true,
    });
    api.create_or_replace("site", &site).await?;

    // 2. The load balancer's place: one container per server on port 80 (see the top of the file).
    let site_ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
    let lb = json!({
        "docker_image": image,
        "starting_ports": [{ lb_port.to_string(): "80" }],
        "containers_per": {"server": 1},
        "env_vars": {"SITE_PORTS": site_ports.join(" ")},
        "run_command": ["sh", "-c", LB_SCRIPT],
        "running": true,
    });
    api.create_or_replace("lb", &lb).await?;

    // 3. Wait until every site container answers with the message, then the lb.
    println!(
        "waiting for {count} site containers on {host}:{site_port}..{}",
        site_port + count - 1
    );
    let probe = nebula_http::client::client_builder(None)?
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + WAIT;
    let mut last_ready = usize::MAX;
    let replies = loop {
        let mut replies = Vec::with_capacity(ports.len());
        for &port in &ports {
            replies.push(
                get(&probe, &host, port)
                    .await
                    .filter(|body| body.starts_with(&format!("{message} "))),
            );
        }
        let ready = replies.iter().filter(|r| r.is_some()).count();
        if ready != last_ready {
            println!("  {ready} of {count} answer");
            last_ready = ready;
        }
        if ready == ports.len() {
            break replies;
        }
        if Instant::now() > deadline {
            let silent: Vec<String> = ports
                .iter()
                .zip(&replies)
                .filter(|(_, r)| r.is_none())
                .map(|(p, _)| p.to_string())
                .collect();
            return Err(format!(
                "after {WAIT:?}, no reply with {message:?} on ports {} (if this machine's CPU count differs from the \
                 engine's, set SITE_CONTAINERS)",
                silent.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (port, reply) in ports.iter().zip(replies) {
        println!(
            "  {host}:{port} -> {}",
            reply.unwrap_or_default().trim_end()
        );
    }
    let page = loop {
        if let Some(page) = get(&probe, &host, lb_port).await {
            break page;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the lb did not answer on {host}:{lb_port} within {WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("lb on {host}:{lb_port}:");
    for line in page.lines() {
        println!("  | {line}");
    }

    // 4. Clean up, unless asked to keep the apps.
    if std::env::var("KEEP").is_ok_and(|v| v == "1") {
        println!(
            "KEEP=1: leaving apps site and lb running (delete them with DELETE {base}/api/v2/apps/<name>)"
        );
        return Ok(());
    }
    api.delete("site").await?;
    api.delete("lb").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut answering = 0;
        for &port in ports.iter().chain([&lb_port]) {
            if get(&probe, &host, port).await.is_some() {
                answering += 1;
            }
        }
        if answering == 0 {
            println!("no container answers any more: the worker removed them");
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{answering} ports still answer 60 s after the apps were deleted"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("site_and_lb: {e}");
        std::process::exit(1);
    }
}
