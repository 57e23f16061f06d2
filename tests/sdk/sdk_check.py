#!/usr/bin/env python3
"""Drives a running nebula-api-manager with the real NebulaPythonSDK (2.8.0, from PyPI).

Run by tests/tests/python_sdk.rs, which installs the SDK in a venv and starts the manager;
by hand:

    python3 -m venv /tmp/nebula-venv-sdk
    /tmp/nebula-venv-sdk/bin/pip install NebulaPythonSDK==2.8.0
    /tmp/nebula-venv-sdk/bin/python tests/sdk/sdk_check.py \
        --host 127.0.0.1 --port 8080 --user admin --password <admin password>

(or NEBULA_SDK_HOST, NEBULA_SDK_PORT, NEBULA_SDK_USER, NEBULA_SDK_PASSWORD). Every SDK call
group is walked: status, apps, device groups, prune, cron jobs, users, user groups, reports,
and a non-admin user created through the SDK, authenticating with Basic and with its refreshed
token (Bearer). Each reply's status code and key fields are checked against the reference
(shared/reference/nebula.md sections 1.2 and 5), where docs/compatibility.md records no
deliberate difference. One line is printed per call; the first failure exits 1 with the call,
the status and the body.

Names are unique per run (--prefix), so the script can run against a manager that holds other
objects, and it deletes what it creates.
"""

import argparse
import base64
import json
import os
import sys
import time
import uuid

import requests
from NebulaPythonSDK import Nebula

SDK_VERSION = "2.8.0"


class CheckFailed(Exception):
    pass


MISSING = object()


def show(value, limit=2000):
    if value is MISSING:
        return "(absent)"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def call(label, fn, *args, **kwargs):
    """Runs one SDK call; a reply that is not JSON (the SDK raises) is a failure."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any SDK exception is a failed call
        raise CheckFailed(f"{label}: the SDK raised {type(e).__name__}: {e}") from e


def expect(label, result, status, whole=MISSING, **fields):
    """Checks the status code, the whole reply when `whole` is given, and that each field of
    the reply equals its expected value; a callable expected value is a predicate on the field
    (absent fields are passed as a sentinel). Returns the reply."""
    reply = result.get("reply")
    problems = []
    if result.get("status_code") != status:
        problems.append(f"status {result.get('status_code')}, expected {status}")
    if whole is not MISSING and reply != whole:
        problems.append(f"the reply is not {show(whole)}")
    for key, want in fields.items():
        got = reply.get(key, MISSING) if isinstance(reply, dict) else MISSING
        good = want(got) if callable(want) else got == want
        if not good:
            want_text = getattr(want, "__doc__", None) or "a predicate" if callable(want) else show(want)
            problems.append(f"{key} = {show(got)}, expected {want_text}")
    if problems:
        raise CheckFailed(f"{label}: {'; '.join(problems)}; body: {show(reply)}")
    print(f"ok   {label} -> {result['status_code']}", flush=True)
    return reply


def has(*names):
    def pred(value):
        return isinstance(value, list) and all(n in value for n in names)

    pred.__doc__ = f"a list containing {list(names)}"
    return pred


def lacks(*names):
    def pred(value):
        return isinstance(value, list) and not any(n in value for n in names)

    pred.__doc__ = f"a list without {list(names)}"
    return pred


def empty(value):
    """empty ({} or [])"""
    return value in ({}, [])


def bcrypt_hash_not(plain):
    def pred(value):
        return isinstance(value, str) and value != plain and value.startswith("$2")

    pred.__doc__ = f"a bcrypt hash (not the plain {plain!r})"
    return pred


def nonempty_str(value):
    """a non-empty string"""
    return isinstance(value, str) and len(value) > 0


def raw_status(base, method, path, auth_header):
    """The status code of a request with a given Authorization header (401 replies are not
    JSON in the original, so the SDK cannot read them; this checks them directly)."""
    headers = {"content-type": "application/json"}
    if auth_header:
        headers["authorization"] = auth_header
    return requests.request(method, base + path, headers=headers, timeout=30).status_code


def expect_status(label, got, status):
    if got != status:
        raise CheckFailed(f"{label}: status {got}, expected {status}")
    print(f"ok   {label} -> {got}", flush=True)


def run(args):
    p = args.prefix
    app, app2, cron, dg, user, group = (
        f"{p}app",
        f"{p}app2",
        f"{p}cron",
        f"{p}dg",
        f"{p}user",
        f"{p}group",
    )
    base = f"http://{args.host}:{args.port}"
    admin = Nebula(username=args.user, password=args.password, host=args.host, port=args.port)

    # --- status -----------------------------------------------------------------------------
    expect("check_api()", call("check_api", admin.check_api), 200, whole={"api_available": True})

    # --- apps -------------------------------------------------------------------------------
    app_config = {
        "starting_ports": [18080, {"18443": "443"}],
        "containers_per": {"server": 2},
        "env_vars": {"MESSAGE": "sdk", "OTHER": "1"},
        "docker_image": "nginx:1.25",
        "running": True,
        "networks": ["nebula", "bridge"],
        "volumes": ["/tmp:/tmp/sdk:ro"],
        "devices": [],
        "privileged": False,
        "rolling_restart": False,
    }
    expect(
        f"create_app({app}, full config)",
        call("create_app", admin.create_app, app, app_config),
        200,
        app_name=app,
        app_id=1,
        **app_config,
    )
    expect(
        f"create_app({app}) again",
        call("create_app", admin.create_app, app, app_config),
        403,
        app_exists=True,
    )
    expect(
        f"create_app({app2}) without docker_image",
        call("create_app", admin.create_app, app2, {"running": True}),
        400,
        missing_parameters=["docker_image"],
    )
    expect(
        f"create_app({app2}, minimal config)",
        call("create_app", admin.create_app, app2, {"docker_image": "busybox"}),
        200,
        app_name=app2,
        app_id=1,
        containers_per={"server": 1},
        networks=["nebula", "bridge"],
        running=True,
        starting_ports=[],
        env_vars={},
        volumes=[],
        devices=[],
        privileged=False,
        rolling_restart=False,
    )
    expect("list_apps()", call("list_apps", admin.list_apps), 200, apps=has(app, app2))
    expect(
        f"list_app_info({app})",
        call("list_app_info", admin.list_app_info, app),
        200,
        app_name=app,
        app_id=1,
        **app_config,
    )
    expect(
        f"stop_app({app})",
        call("stop_app", admin.stop_app, app),
        202,
        app_name=app,
        app_id=2,
        running=False,
    )
    expect(
        f"restart_app({app}) while stopped",
        call("restart_app", admin.restart_app, app),
        403,
        running_before_restart=False,
    )
    expect(
        f"start_app({app})",
        call("start_app", admin.start_app, app),
        202,
        app_name=app,
        app_id=3,
        running=True,
    )
    expect(
        f"restart_app({app})",
        call("restart_app", admin.restart_app, app),
        202,
        app_name=app,
        app_id=4,
        running=True,
        docker_image="nginx:1.25",
    )
    expect(
        f"update_app({app}, subset) [PUT]",
        call("update_app", admin.update_app, app, {"env_vars": {"MESSAGE": "put"}}),
        202,
        app_name=app,
        app_id=5,
        env_vars={"MESSAGE": "put"},
        containers_per={"server": 2},
        starting_ports=app_config["starting_ports"],
        volumes=app_config["volumes"],
    )
    expect(
        f"update_app({app}, {{}}) [PUT]",
        call("update_app", admin.update_app, app, {}),
        400,
        missing_parameters=True,
    )
    expect(
        f"update_app({app}, force_all=True) [POST]",
        call(
            "update_app",
            admin.update_app,
            app,
            {"docker_image": "nginx:1.26", "starting_ports": [18080]},
            force_all=True,
        ),
        202,
        app_name=app,
        app_id=6,
        docker_image="nginx:1.26",
        starting_ports=[18080],
        # Every field not given is reset to its default.
        containers_per={"server": 1},
        env_vars=empty,
        volumes=[],
        running=True,
        networks=["nebula", "bridge"],
    )
    expect(
        f"list_app_info({app}) after the updates",
        call("list_app_info", admin.list_app_info, app),
        200,
        app_id=6,
        docker_image="nginx:1.26",
    )
    expect(
        "update_app(missing app) [PUT]",
        call("update_app", admin.update_app, f"{p}nosuchapp", {"running": False}),
        403,
        app_exists=False,
    )
    expect(
        "list_app_info(missing app)",
        call("list_app_info", admin.list_app_info, f"{p}nosuchapp"),
        403,
        app_exists=False,
    )

    # --- cron jobs --------------------------------------------------------------------------
    cron_config = {
        "schedule": "0 * * * *",
        "docker_image": "busybox:1.36",
        "env_vars": {"JOB": "sdk"},
        "running": True,
        "networks": ["nebula", "bridge"],
        "volumes": [],
        "devices": [],
        "privileged": False,
    }
    expect(
        f"create_cron_job({cron}, full config)",
        call("create_cron_job", admin.create_cron_job, cron, cron_config),
        200,
        cron_job_name=cron,
        cron_job_id=1,
        **cron_config,
    )
    expect(
        f"create_cron_job({cron}) again",
        call("create_cron_job", admin.create_cron_job, cron, cron_config),
        403,
        cron_job_exists=True,
    )
    expect(
        "create_cron_job(bad schedule)",
        call(
            "create_cron_job",
            admin.create_cron_job,
            f"{p}badcron",
            {"schedule": "not a schedule", "docker_image": "busybox"},
        ),
        400,
        schedule_valid=False,
    )
    expect(
        "create_cron_job(no docker_image)",
        call("create_cron_job", admin.create_cron_job, f"{p}badcron", {"schedule": "* * * * *"}),
        400,
        missing_parameters=has("docker_image"),
    )
    expect("list_cron_jobs()", call("list_cron_jobs", admin.list_cron_jobs), 200, cron_jobs=has(cron))
    expect(
        f"list_cron_job_info({cron})",
        call("list_cron_job_info", admin.list_cron_job_info, cron),
        200,
        cron_job_name=cron,
        cron_job_id=1,
        **cron_config,
    )
    expect(
        f"update_cron_job({cron}, subset) [PUT]",
        call("update_cron_job", admin.update_cron_job, cron, {"schedule": "*/5 * * * *"}),
        202,
        cron_job_name=cron,
        cron_job_id=2,
        schedule="*/5 * * * *",
        docker_image="busybox:1.36",
        env_vars={"JOB": "sdk"},
    )
    expect(
        f"update_cron_job({cron}, bad schedule) [PUT]",
        call("update_cron_job", admin.update_cron_job, cron, {"schedule": "61 * * * *"}),
        400,
        schedule_valid=False,
    )
    expect(
        f"update_cron_job({cron}, force_all=True) [POST]",
        call(
            "update_cron_job",
            admin.update_cron_job,
            cron,
            {"schedule": "30 2 * * *", "docker_image": "busybox:1.37"},
            force_all=True,
        ),
        202,
        cron_job_name=cron,
        cron_job_id=3,
        schedule="30 2 * * *",
        docker_image="busybox:1.37",
        # Every field not given is reset to its default.
        env_vars={},
        running=True,
        networks=["nebula", "bridge"],
        volumes=[],
        devices=[],
        privileged=False,
    )
    expect(
        f"update_cron_job({cron}, no schedule, force_all=True) [POST]",
        call(
            "update_cron_job",
            admin.update_cron_job,
            cron,
            {"docker_image": "busybox:1.37"},
            force_all=True,
        ),
        400,
        missing_parameters=has("schedule"),
    )
    expect(
        "list_cron_job_info(missing cron job)",
        call("list_cron_job_info", admin.list_cron_job_info, f"{p}nosuchcron"),
        403,
        cron_job_exists=False,
    )

    # --- device groups and prune ------------------------------------------------------------
    expect(
        f"create_device_group({dg})",
        call("create_device_group", admin.create_device_group, dg, {"apps": [app], "cron_jobs": [cron]}),
        200,
        device_group=dg,
        apps=[app],
        cron_jobs=[cron],
        device_group_id=1,
        prune_id=1,
    )
    expect(
        f"create_device_group({dg}) again",
        call("create_device_group", admin.create_device_group, dg, {"apps": [], "cron_jobs": []}),
        403,
        device_group_exists=True,
    )
    expect(
        "create_device_group(unknown app)",
        call(
            "create_device_group",
            admin.create_device_group,
            f"{p}dg2",
            {"apps": [f"{p}nosuchapp"], "cron_jobs": []},
        ),
        403,
        app_exists=False,
    )
    expect(
        "create_device_group(unknown cron job)",
        call(
            "create_device_group",
            admin.create_device_group,
            f"{p}dg2",
            {"apps": [], "cron_jobs": [f"{p}nosuchcron"]},
        ),
        403,
        cron_job_exists=False,
    )
    expect(
        "create_device_group(apps not a list)",
        call("create_device_group", admin.create_device_group, f"{p}dg2", {"apps": app}),
        400,
        apps_is_list=False,
    )
    expect(
        "list_device_groups()",
        call("list_device_groups", admin.list_device_groups),
        200,
        device_groups=has(dg),
    )
    expect(
        f"list_device_group({dg})",
        call("list_device_group", admin.list_device_group, dg),
        200,
        device_group=dg,
        apps=[app],
        cron_jobs=[cron],
        device_group_id=1,
        prune_id=1,
    )

    def docs_named(field, *names):
        def pred(value):
            return isinstance(value, list) and sorted(d.get(field) for d in value) == sorted(names)

        pred.__doc__ = f"full documents with {field} {list(names)}"
        return pred

    info = expect(
        f"list_device_group_info({dg})",
        call("list_device_group_info", admin.list_device_group_info, dg),
        200,
        apps=docs_named("app_name", app),
        apps_list=[app],
        cron_jobs=docs_named("cron_job_name", cron),
        cron_jobs_list=[cron],
        device_group_id=1,
        prune_id=1,
    )
    app_doc = info["apps"][0]
    if app_doc.get("app_id") != 6 or app_doc.get("docker_image") != "nginx:1.26":
        raise CheckFailed(f"list_device_group_info({dg}): the app document is not current: {show(app_doc)}")
    cron_doc = info["cron_jobs"][0]
    if cron_doc.get("cron_job_id") != 3 or cron_doc.get("schedule") != "30 2 * * *":
        raise CheckFailed(f"list_device_group_info({dg}): the cron job document is not current: {show(cron_doc)}")
    expect(
        f"update_device_group({dg}, apps) [PUT]",
        call("update_device_group", admin.update_device_group, dg, {"apps": [app, app2]}),
        202,
        device_group=dg,
        apps=[app, app2],
        cron_jobs=[cron],
        device_group_id=2,
        prune_id=1,
    )
    expect(
        f"update_device_group({dg}, {{}}) [PUT]",
        call("update_device_group", admin.update_device_group, dg, {}),
        400,
    )
    expect(
        f"update_device_group({dg}, unknown app) [PUT]",
        call("update_device_group", admin.update_device_group, dg, {"apps": [f"{p}nosuchapp"]}),
        403,
        app_exists=False,
    )
    expect(
        f"prune__device_group_images({dg})",
        call("prune__device_group_images", admin.prune__device_group_images, dg),
        202,
        device_group=dg,
        device_group_id=2,
        prune_id=2,
    )

    def prune_id_of(group, want):
        def pred(value):
            return isinstance(value, dict) and value.get(group) == want

        pred.__doc__ = f"a dict with {group}: {want}"
        return pred

    expect("prune_images()", call("prune_images", admin.prune_images), 202, prune_ids=prune_id_of(dg, 3))
    expect(
        f"list_device_group_info({dg}) after the update and prunes",
        call("list_device_group_info", admin.list_device_group_info, dg),
        200,
        apps_list=[app, app2],
        cron_jobs_list=[cron],
        device_group_id=2,
        prune_id=3,
    )

    # --- reports ----------------------------------------------------------------------------
    # Workers POST their reports (the SDK has no call for it); the SDK reads them.
    now = int(time.time())
    host_a, host_b = f"{p}host-a", f"{p}host-b"
    report_auth = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    for hostname, created, updated in ((host_a, now - 100, True), (host_b, now - 50, False), (host_a, now - 10, False)):
        r = requests.post(
            base + "/api/v2/reports",
            headers={"authorization": report_auth, "content-type": "application/json"},
            data=json.dumps(
                {
                    "hostname": hostname,
                    "device_group": dg,
                    "report_creation_time": created,
                    "updated": updated,
                    "memory_usage": None,
                    "root_disk_usage": None,
                    "cpu_usage": {"cores": 2, "used_percent": None},
                    "apps_containers": [],
                    "cron_jobs_containers": [],
                    "current_device_group_config": {},
                }
            ),
            timeout=30,
        )
        if r.status_code != 200:
            raise CheckFailed(f"POST /api/v2/reports ({hostname}): status {r.status_code}, body {r.text}")
    print("ok   3 worker reports posted (POST /api/v2/reports) -> 200", flush=True)

    def ours(value):
        return [d for d in value or [] if str(d.get("hostname", "")).startswith(p)]

    def report_page(*expected):
        """Our reports in the page are exactly `expected` (hostname, report_creation_time) in
        order."""

        def pred(value):
            return isinstance(value, list) and [
                (d.get("hostname"), d.get("report_creation_time")) for d in ours(value)
            ] == list(expected)

        pred.__doc__ = f"our reports {list(expected)}"
        return pred

    def oid(value):
        """{"$oid": <id>}"""
        return isinstance(value, dict) and nonempty_str(value.get("$oid"))

    # Default arguments: page_size=10, report_creation_time_filter="gt" and no time: every report.
    def at_most_10(value):
        """a list of 1 to 10 reports"""
        return isinstance(value, list) and 1 <= len(value) <= 10

    page = expect("list_reports()", call("list_reports", admin.list_reports), 200, data=at_most_10, last_id=oid)
    # The manager may hold other reports: page on with last_id (default arguments otherwise)
    # to the end, which must come, and must hold exactly our three in insertion order.
    seen = ours(page["data"])
    for _ in range(10_000):
        page = call("list_reports", admin.list_reports, last_id=page["last_id"]["$oid"])
        if page.get("status_code") != 200:
            raise CheckFailed(f"list_reports(last_id=...): status {page.get('status_code')}; body: {show(page.get('reply'))}")
        page = page["reply"]
        if page == {"data": None, "last_id": None}:
            break
        if not (at_most_10(page.get("data")) and oid(page.get("last_id"))):
            raise CheckFailed(f"list_reports(last_id=...): not a page: {show(page)}")
        seen += ours(page["data"])
    else:
        raise CheckFailed("list_reports(last_id=...): 10000 pages and no end")
    got = [(d.get("hostname"), d.get("report_creation_time")) for d in seen]
    want = [(host_a, now - 100), (host_b, now - 50), (host_a, now - 10)]
    if got != want:
        raise CheckFailed(f"list_reports(last_id=...) to the end: our reports are {got}, expected {want}")
    print("ok   list_reports(last_id=...) to {\"data\": null, \"last_id\": null} -> 200", flush=True)
    page = expect(
        f"list_reports(device_group={dg}, page_size=2)",
        call("list_reports", admin.list_reports, page_size=2, device_group=dg),
        200,
        data=report_page((host_a, now - 100), (host_b, now - 50)),
        last_id=oid,
    )
    page = expect(
        f"list_reports(device_group={dg}, page_size=2, last_id=...)",
        call("list_reports", admin.list_reports, page_size=2, device_group=dg, last_id=page["last_id"]["$oid"]),
        200,
        data=report_page((host_a, now - 10)),
        last_id=oid,
    )
    expect(
        f"list_reports(device_group={dg}, last_id=<the last>)",
        call("list_reports", admin.list_reports, device_group=dg, last_id=page["last_id"]["$oid"]),
        200,
        data=None,
        last_id=None,
    )
    expect(
        f"list_reports(hostname={host_a})",
        call("list_reports", admin.list_reports, hostname=host_a),
        200,
        data=report_page((host_a, now - 100), (host_a, now - 10)),
    )
    expect(
        "list_reports(report_creation_time=now-60) [gt]",
        call("list_reports", admin.list_reports, device_group=dg, report_creation_time=now - 60),
        200,
        data=report_page((host_b, now - 50), (host_a, now - 10)),
    )
    for flt, want in (
        ("eq", [(host_b, now - 50)]),
        ("ne", [(host_a, now - 100), (host_a, now - 10)]),
        ("lt", [(host_a, now - 100)]),
        ("lte", [(host_a, now - 100), (host_b, now - 50)]),
        ("gte", [(host_b, now - 50), (host_a, now - 10)]),
    ):
        expect(
            f"list_reports(report_creation_time=now-50, report_creation_time_filter={flt})",
            call(
                "list_reports",
                admin.list_reports,
                device_group=dg,
                report_creation_time=now - 50,
                report_creation_time_filter=flt,
            ),
            200,
            data=report_page(*want),
        )
    expect(
        "list_reports(updated=True)",
        call("list_reports", admin.list_reports, device_group=dg, updated=True),
        200,
        data=report_page((host_a, now - 100)),
    )
    expect(
        "list_reports(updated=False, hostname=...)",
        call("list_reports", admin.list_reports, device_group=dg, updated=False, hostname=host_a),
        200,
        data=report_page((host_a, now - 10)),
    )
    expect(
        "list_reports(device_group=<none such>)",
        call("list_reports", admin.list_reports, device_group=f"{p}nosuchdg"),
        200,
        data=None,
        last_id=None,
    )

    # --- users and user groups --------------------------------------------------------------
    password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    expect(
        f"create_user({user})",
        call("create_user", admin.create_user, user, {"password": password, "token": token}),
        200,
        user_name=user,
        password=bcrypt_hash_not(password),
        token=bcrypt_hash_not(token),
    )
    expect(
        f"create_user({user}) again",
        call("create_user", admin.create_user, user, {"password": password}),
        403,
        user_exists=True,
    )
    expect("list_users()", call("list_users", admin.list_users), 200, users=has(user))
    expect(
        f"list_user({user})",
        call("list_user", admin.list_user, user),
        200,
        user_name=user,
        password=bcrypt_hash_not(password),
        token=bcrypt_hash_not(token),
    )
    expect(
        "list_user(missing user)",
        call("list_user", admin.list_user, f"{p}nosuchuser"),
        403,
        user_exists=False,
    )
    new_password = f"pw2-{uuid.uuid4().hex}"
    expect(
        f"update_user({user}, password) [PUT]",
        call("update_user", admin.update_user, user, {"password": new_password}),
        200,
    )
    expect(
        "update_user(missing user) [PUT]",
        call("update_user", admin.update_user, f"{p}nosuchuser", {"password": "x"}),
        403,
        user_name=False,
    )
    expect(
        f"update_user({user}, {{}}) [PUT]",
        call("update_user", admin.update_user, user, {}),
        400,
    )
    group_config = {
        "group_members": [user],
        "pruning_allowed": False,
        "apps": {app: "ro", app2: "rw"},
        "device_groups": {dg: "ro"},
        "cron_jobs": {cron: "rw"},
        "admin": False,
    }
    expect(
        f"create_user_group({group})",
        call("create_user_group", admin.create_user_group, group, group_config),
        200,
        user_group=group,
        **group_config,
    )
    expect(
        f"create_user_group({group}) again",
        call("create_user_group", admin.create_user_group, group, group_config),
        403,
        user_group_exists=True,
    )
    expect("list_user_groups()", call("list_user_groups", admin.list_user_groups), 200, user_groups=has(group))
    expect(
        f"list_user_group({group})",
        call("list_user_group", admin.list_user_group, group),
        200,
        user_group=group,
        **group_config,
    )
    expect(
        "list_user_group(missing group)",
        call("list_user_group", admin.list_user_group, f"{p}nosuchgroup"),
        403,
        user_group_exists=False,
    )

    # The non-admin user, by Basic.
    expect_status(
        f"{user} with the old password (Basic) GET /status",
        raw_status(base, "GET", "/api/v2/status", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()),
        401,
    )
    basic = Nebula(username=user, password=new_password, host=args.host, port=args.port)
    expect(f"[{user} Basic] check_api()", call("check_api", basic.check_api), 200, api_available=True)
    expect(f"[{user} Basic] list_apps()", call("list_apps", basic.list_apps), 200, apps=has(app, app2))
    expect(f"[{user} Basic] list_app_info({app}) [ro]", call("list_app_info", basic.list_app_info, app), 200, app_name=app)
    expect(
        f"[{user} Basic] stop_app({app}) [ro only]",
        call("stop_app", basic.stop_app, app),
        403,
        access_allowed=False,
    )
    expect(
        f"[{user} Basic] list_app_info({app2}) [rw implies ro]",
        call("list_app_info", basic.list_app_info, app2),
        200,
        app_name=app2,
    )
    expect(
        f"[{user} Basic] stop_app({app2}) [rw]",
        call("stop_app", basic.stop_app, app2),
        202,
        app_name=app2,
        app_id=2,
        running=False,
    )
    expect(
        f"[{user} Basic] create_app(<no rights>)",
        call("create_app", basic.create_app, f"{p}app3", {"docker_image": "busybox"}),
        403,
        access_allowed=False,
    )
    expect(
        f"[{user} Basic] list_device_group({dg}) [ro]",
        call("list_device_group", basic.list_device_group, dg),
        200,
        device_group=dg,
    )
    expect(
        f"[{user} Basic] update_device_group({dg}) [ro only]",
        call("update_device_group", basic.update_device_group, dg, {"apps": [app]}),
        403,
        access_allowed=False,
    )
    expect(
        f"[{user} Basic] update_cron_job({cron}) [rw]",
        call("update_cron_job", basic.update_cron_job, cron, {"schedule": "15 * * * *"}),
        202,
        cron_job_id=4,
        schedule="15 * * * *",
    )
    expect(
        f"[{user} Basic] prune_images() [pruning not allowed]",
        call("prune_images", basic.prune_images),
        403,
        access_allowed=False,
    )
    expect(f"[{user} Basic] list_users() [list: authentication only]", call("list_users", basic.list_users), 200, users=has(user))
    expect(f"[{user} Basic] list_reports() [list: authentication only]", call("list_reports", basic.list_reports), 200)
    expect(
        f"[{user} Basic] list_user({user}) [admin only]",
        call("list_user", basic.list_user, user),
        403,
        access_allowed=False,
    )

    # Pruning granted through the group.
    expect(
        f"update_user_group({group}, pruning_allowed) [PUT]",
        call("update_user_group", admin.update_user_group, group, {"pruning_allowed": True}),
        200,
        user_group=group,
        pruning_allowed=True,
        group_members=[user],
        apps=group_config["apps"],
    )
    expect(
        f"update_user_group({group}, {{}}) [PUT]",
        call("update_user_group", admin.update_user_group, group, {}),
        400,
    )
    expect(
        f"[{user} Basic] prune__device_group_images({dg}) [pruning allowed]",
        call("prune__device_group_images", basic.prune__device_group_images, dg),
        202,
        prune_id=4,
    )

    # The non-admin user, by its refreshed token (Bearer).
    refreshed = expect(
        f"refresh_user_token({user})",
        call("refresh_user_token", admin.refresh_user_token, user),
        200,
        token=lambda t: nonempty_str(t) and t != token,
    )["token"]
    expect_status(
        f"{user} with the token from before the refresh (Bearer) GET /status",
        raw_status(base, "GET", "/api/v2/status", f"Bearer {token}"),
        401,
    )
    bearer = Nebula(token=refreshed, host=args.host, port=args.port)
    expect(f"[{user} Bearer] check_api()", call("check_api", bearer.check_api), 200, api_available=True)
    expect(f"[{user} Bearer] list_app_info({app}) [ro]", call("list_app_info", bearer.list_app_info, app), 200, app_name=app)
    expect(
        f"[{user} Bearer] delete_app({app}) [ro only]",
        call("delete_app", bearer.delete_app, app),
        403,
        access_allowed=False,
    )
    expect(
        f"[{user} Bearer] list_user_group({group}) [admin only]",
        call("list_user_group", bearer.list_user_group, group),
        403,
        access_allowed=False,
    )
    expect(
        f"[{user} Bearer] create_user(...) [admin only]",
        call("create_user", bearer.create_user, f"{p}user2", {"password": "x"}),
        403,
        access_allowed=False,
    )
    expect(
        # (Deleting a cron job needs rw on it here, not admin: docs/compatibility.md.)
        f"[{user} Bearer] delete_cron_job(<no rights>)",
        call("delete_cron_job", bearer.delete_cron_job, f"{p}cron3"),
        403,
        access_allowed=False,
    )
    expect_status(
        "no credentials GET /status",
        raw_status(base, "GET", "/api/v2/status", None),
        401,
    )

    # --- deletes ----------------------------------------------------------------------------
    expect(f"delete_user_group({group})", call("delete_user_group", admin.delete_user_group, group), 200, whole={})
    expect(
        f"list_user_group({group}) after delete",
        call("list_user_group", admin.list_user_group, group),
        403,
        user_group_exists=False,
    )
    expect(
        f"[{user} Bearer] list_app_info({app}) [no group: no rights]",
        call("list_app_info", bearer.list_app_info, app),
        403,
        access_allowed=False,
    )
    expect(f"delete_user({user})", call("delete_user", admin.delete_user, user), 200, whole={})
    expect(f"list_user({user}) after delete", call("list_user", admin.list_user, user), 403, user_exists=False)
    expect_status(
        f"{user} after delete (Bearer) GET /status",
        raw_status(base, "GET", "/api/v2/status", f"Bearer {refreshed}"),
        401,
    )
    expect(f"delete_device_group({dg})", call("delete_device_group", admin.delete_device_group, dg), 200, whole={})
    expect(
        f"list_device_group({dg}) after delete",
        call("list_device_group", admin.list_device_group, dg),
        403,
        device_group_exists=False,
    )
    expect(
        f"list_device_group_info({dg}) after delete",
        call("list_device_group_info", admin.list_device_group_info, dg),
        403,
        device_group_exists=False,
    )
    expect(f"delete_cron_job({cron})", call("delete_cron_job", admin.delete_cron_job, cron), 200, whole={})
    expect(
        f"list_cron_job_info({cron}) after delete",
        call("list_cron_job_info", admin.list_cron_job_info, cron),
        403,
        cron_job_exists=False,
    )
    expect(f"delete_cron_job({cron}) again", call("delete_cron_job", admin.delete_cron_job, cron), 403, cron_job_exists=False)
    for name in (app, app2):
        expect(f"delete_app({name})", call("delete_app", admin.delete_app, name), 200, whole={})
    expect(f"list_app_info({app}) after delete", call("list_app_info", admin.list_app_info, app), 403, app_exists=False)
    expect(f"delete_app({app}) again", call("delete_app", admin.delete_app, app), 403, app_exists=False)
    expect("list_apps() after deletes", call("list_apps", admin.list_apps), 200, apps=lacks(app, app2))


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=env("NEBULA_SDK_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("NEBULA_SDK_PORT", "80")))
    parser.add_argument("--user", default=env("NEBULA_SDK_USER", "admin"))
    parser.add_argument("--password", default=env("NEBULA_SDK_PASSWORD"))
    parser.add_argument("--prefix", default=env("NEBULA_SDK_PREFIX", f"sdk{uuid.uuid4().hex[:8]}-"))
    args = parser.parse_args()
    if not args.password:
        parser.error("--password (or NEBULA_SDK_PASSWORD) is required")

    from importlib.metadata import version

    installed = version("NebulaPythonSDK")
    if installed != SDK_VERSION:
        print(f"FAIL NebulaPythonSDK {installed} is installed; this check is for {SDK_VERSION}", flush=True)
        return 1
    print(f"NebulaPythonSDK {installed} against http://{args.host}:{args.port} (names {args.prefix}*)", flush=True)
    try:
        run(args)
    except CheckFailed as e:
        print(f"FAIL {e}", flush=True)
        return 1
    print("sdk_check: every call answered as the reference says", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
