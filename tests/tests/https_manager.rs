//! HTTPS to the manager: a `nebula-api-manager` behind a TLS-terminating proxy with a
//! certificate of a private CA; the `nebula` CLI and a `nebula-worker-manager` reach it over
//! https:// trusting that CA (`--ca-file`, `NEBULA_MANAGER_CA_FILE`), and refuse it without.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nebula_tests::procs::{ApiManager, Worker};
use nebula_tests::{
    binary, cleanup, engine_ready, free_port_range, running, scratch_dir, unique, wait_for,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const PASSWORD: &str = "https-secret-pw";

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1 (`server.pem`, `server.key`) in
/// `dir`, made with the `openssl` CLI; the reason when that fails.
fn certificates(dir: &Path) -> Result<(), String> {
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Nebula test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl {}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A TLS-terminating proxy on a free port of 127.0.0.1 forwarding to `upstream`; its port.
async fn tls_proxy(dir: &Path, upstream: u16) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("server.pem")
        .collect::<Result<_, _>>()
        .expect("server.pem parses");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("server.key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the server certificate");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client refusing the certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut manager) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut manager).await;
            });
        }
    });
    port
}

/// A `nebula` command for the manager at `uri` with its credentials in the environment and
/// no other client setting inherited from the test's.
fn nebula(uri: &str, args: &[&str]) -> Command {
    let mut c = Command::new(binary("nebula"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEBULA_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .args(["--manager-uri", uri, "--timeout", "20"])
        .env("NEBULA_MANAGER_AUTH_USER", "admin")
        .env("NEBULA_MANAGER_AUTH_PASSWORD", PASSWORD)
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_and_worker_reach_the_manager_over_https() {
    let dir = scratch_dir("nebula-https-");
    if let Err(reason) = certificates(&dir) {
        // .ci/run installs openssl: in CI a missing one is a failure, not a skip.
        assert!(
            std::env::var("NEBULA_REQUIRE_ENGINE").as_deref() != Ok("1"),
            "openssl is needed to make the test certificates: {reason}"
        );
        println!(
            "SKIPPED cli_and_worker_reach_the_manager_over_https: {reason} (install openssl to run it)"
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let (manager, api, http_uri) = ApiManager::new("admin", PASSWORD).ready(&dir).await;
    let upstream: u16 = http_uri
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the manager's port");
    let proxy = tls_proxy(&dir, upstream).await;
    let uri = format!("https://127.0.0.1:{proxy}");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().expect("UTF-8 path");

    for args in [&["ping"][..], &["apps", "list"]] {
        let out = nebula(&uri, &[args, &["--ca-file", ca][..]].concat())
            .output()
            .expect("nebula runs");
        assert!(
            out.status.success(),
            "nebula {args:?} over https: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = nebula(&uri, &["ping"]).output().expect("nebula runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unknown CA is refused: {stdout}{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the refusal names the certificate: {stderr}"
    );
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "the password is never printed"
    );

    if !engine_ready("cli_and_worker_reach_the_manager_over_https") {
        drop(manager);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let app = unique("tls");
    let port = free_port_range(1);
    let worker = Worker::of(&uri, "admin", PASSWORD)
        .envs(&[("APP_NAME", &app), ("NEBULA_MANAGER_CA_FILE", ca)])
        .start(dir.join("worker.log"));
    let body = json!({"starting_ports": [{port.to_string(): "80"}],
        "containers_per": {"server": 2}, "env_vars": {}, "docker_image": nebula_tests::IMAGE,
        "running": true, "networks": ["nebula", "bridge"], "volumes": [], "devices": [],
        "privileged": false});
    assert_eq!(
        api.call("POST", &format!("/api/apps/{app}"), Some(body))
            .await
            .0,
        202
    );
    wait_for(
        "the app runs through a worker syncing over https",
        Duration::from_secs(60),
        || async { running(&app).len() == 2 },
    )
    .await;
    assert!(
        !worker.log().contains(PASSWORD),
        "the worker never logs the password"
    );

    drop(worker);
    drop(manager);
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}
