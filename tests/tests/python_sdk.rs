//! The real NebulaPythonSDK 2.8.0 (from PyPI) against `nebula-api-manager`: every SDK call
//! group (status, apps, device groups, prune, cron jobs, users, user groups, reports, and a
//! non-admin user by Basic and by Bearer), checked by `tests/sdk/sdk_check.py`.
//!
//! The SDK is installed in a venv outside the repository, reused by later runs:
//! `$NEBULA_SDK_VENV`, or `<temp dir>/nebula-venv-sdk`. Without python3 (with `venv`) or PyPI
//! the test prints `SKIPPED` with the reason and returns, unless `NEBULA_REQUIRE_SDK=1` (as in
//! .ci/run), when it fails. `NEBULA_PYTHON` names the interpreter that makes the venv
//! (default `python3`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nebula_tests::{Api, Process, binary, free_port, unique};

const SDK: &str = "NebulaPythonSDK==2.8.0";
const SDK_VERSION: &str = "2.8.0";
const TEST: &str = "python_sdk_drives_the_api";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Prints `SKIPPED`, or fails when the SDK is required.
fn skip(reason: &str, fix: &str) {
    assert!(
        std::env::var_os("NEBULA_REQUIRE_SDK").is_none_or(|v| v != "1"),
        "{TEST}: NEBULA_REQUIRE_SDK=1 but {reason}; {fix}"
    );
    println!("SKIPPED {TEST}: {reason}; {fix}");
}

/// Whether `venv` holds a Python with NebulaPythonSDK 2.8.0.
fn has_sdk(venv: &Path) -> bool {
    Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!(
                "import importlib.metadata as m, NebulaPythonSDK; \
                 assert m.version('NebulaPythonSDK') == '{SDK_VERSION}'"
            ),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The venv with the SDK: reused when it is there, made otherwise (in a private directory,
/// then renamed into place, so concurrent runs never see a half-made one). `Err` holds why it
/// cannot be had and how to fix that.
fn sdk_venv() -> Result<PathBuf, (String, String)> {
    let venv = std::env::var_os("NEBULA_SDK_VENV").map_or_else(
        || std::env::temp_dir().join("nebula-venv-sdk"),
        PathBuf::from,
    );
    if has_sdk(&venv) {
        return Ok(venv);
    }
    let python = std::env::var("NEBULA_PYTHON").unwrap_or_else(|_| "python3".into());
    let version = Command::new(&python).arg("--version").output();
    if !version.as_ref().is_ok_and(|o| o.status.success()) {
        return Err((
            format!("no Python interpreter `{python}`"),
            "install python3 (apt-get install python3 python3-venv) or set NEBULA_PYTHON".into(),
        ));
    }
    let parent = venv.parent().unwrap_or_else(|| Path::new("/tmp"));
    let staging = parent.join(unique("nebula-venv-sdk-staging-"));
    let made = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&staging)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err((
                format!(
                    "`{python} -m venv` failed: {}",
                    other.as_ref().map_or_else(ToString::to_string, text)
                ),
                "install the venv module (apt-get install python3-venv)".into(),
            ));
        }
    }
    let pip = Command::new(staging.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            SDK,
        ])
        .output();
    match pip {
        Ok(o) if o.status.success() => {}
        other => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err((
                format!(
                    "`pip install {SDK}` failed (is PyPI reachable?): {}",
                    other.as_ref().map_or_else(ToString::to_string, text)
                ),
                format!(
                    "make PyPI reachable, or install {SDK} into a venv and set NEBULA_SDK_VENV"
                ),
            ));
        }
    }
    if std::fs::rename(&staging, &venv).is_err() {
        if has_sdk(&venv) {
            // A concurrent run put its own venv there first: use that one.
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(venv);
        }
        // A stale or broken venv: replace it.
        let _ = std::fs::remove_dir_all(&venv);
        if let Err(e) = std::fs::rename(&staging, &venv) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err((
                format!("cannot put the venv at {}: {e}", venv.display()),
                "set NEBULA_SDK_VENV to a writable path".into(),
            ));
        }
    }
    if has_sdk(&venv) {
        Ok(venv)
    } else {
        Err((
            format!("the venv at {} does not import {SDK}", venv.display()),
            format!("remove {} and run the test again", venv.display()),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_drives_the_api() {
    let venv = match tokio::task::spawn_blocking(sdk_venv)
        .await
        .expect("venv task")
    {
        Ok(v) => v,
        Err((reason, fix)) => {
            skip(&reason, &fix);
            return;
        }
    };

    let dir = std::env::temp_dir().join(unique("nebula-sdk-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let password = unique("sdk-admin-pw-");
    let manager = Process::start(
        binary("nebula-api-manager"),
        &[
            "--bind",
            &bind,
            "--data-dir",
            dir.join("data").to_str().expect("utf-8 path"),
        ],
        &[
            ("BASIC_AUTH_USER", "admin"),
            ("BASIC_AUTH_PASSWORD", &password),
            ("RUST_LOG", "info"),
        ],
        dir.join("manager.log"),
    );
    Api::new(port, "admin", &password).wait_ready().await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/sdk_check.py");
    let run = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--user", "admin", "--password", &password])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("sdk_check.py finishes within 300 s")
        .expect("run sdk_check.py");
    let output = text(&out);
    assert!(
        out.status.success(),
        "sdk_check.py failed ({}):\n{output}\n--- nebula-api-manager log (last 4000 bytes) ---\n{}",
        out.status,
        tail(&manager.log(), 4000)
    );
    println!("{output}");
    assert!(
        output.contains("sdk_check: every call answered as the reference says"),
        "sdk_check.py exited 0 without its closing line:\n{output}"
    );
    drop(manager);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
