"""Run the example project as real processes on loopback: fake Slack, control, two regions, a worker.

``Cluster`` is what the demo (``python -m example_project.demo``) and end-to-end tests
drive::

    with Cluster() as cluster:
        sent = cluster.sender().click_button(team_id="T0US00001", action_id="resolve_dialog", value=...)
        cluster.fake.wait_for_call(lambda call: ..., method="views.update")

Every service is a subprocess with its own environment, listening on a free port of
127.0.0.1 (found by binding port 0), logging to ``<var>/<name>.log``:

- ``slack``: the fake Slack (``python -m example_project.fake_slack``);
- ``us``, ``eu``: region silos under gunicorn;
- ``control``: the control silo under gunicorn, on an internal port;
- ``control-proxy``: control's public port, a buffering proxy
  (``example_project.buffering_proxy``) that reads each request whole before gunicorn
  sees it, so slow clients cannot hold gunicorn's threads;
- ``worker``: the control silo's Celery worker (filesystem broker unless
  ``CELERY_BROKER_URL`` says otherwise);
- ``beat``: control's Celery beat, which runs the delivery sweeper (it republishes
  payloads held by a region's open circuit or missed by a lost message);
- ``<region>-worker``: only for a region given ``region_transports={"<region>": "celery"}``:
  that region's Celery worker, consuming ``silo_router.region.<region>`` on the same
  broker (control then delivers to the region through the queue, not over HTTP).

Each silo gets only its own secrets: control the Slack signing secret, the app's OAuth
client id and secret, the token encryption key and every region's hop key; a region its
own hop key and control's addresses (``CONTROL_URL`` for the Web API proxy, the public
install URL), and no Slack credential. Every silo has its own Django ``SECRET_KEY``.

Once the services are up, ``start()`` creates the workspaces (``WORKSPACES``) in the fake
Slack and installs each through the OAuth flow for its organizations, as an admin would:
an install link made by the organization's region, Slack's consent screen (the fake plays
the user), the redirect back to control (``install``; ``uninstall`` undoes it the way Slack
does). The tokens exist only in the fake and, encrypted, in control's database.

Processes run in their own sessions and are stopped with SIGTERM, then SIGKILL, from
``stop()``, ``__exit__`` and ``atexit``. On Linux each child also gets SIGTERM if the
thread that started it dies (``PR_SET_PDEATHSIG``), so a killed demo leaves no orphans;
start the cluster from a thread that outlives it (the main thread, usually).

Fault tests crash or freeze one service with ``kill_service`` (SIGKILL) and
``pause_service``/``resume_service`` (SIGSTOP/SIGCONT), run management commands with
``manage``, and put control's database on PostgreSQL with ``SILO_CONTROL_DATABASE_URL``
in ``extra_env``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import ctypes.util
import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from example_project.fake_slack import Sent, SlackSender
from example_project.install_browser import PageSeen
from example_project.seed import ORGANIZATIONS

REPO_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: A file that marks a directory as a demo var dir, so ``start()`` may wipe it.
VAR_MARKER = ".silo-demo-var"
SLACK_PATH = "/extensions/slack/"
#: Control's install flow, under SLACK_PATH (the library's default paths).
INSTALL_PATH = "install/"
REDIRECT_PATH = "oauth_redirect/"
ENVELOPE_PATH = "/silo-router/envelopes/"
OPERATOR = "operator"
#: Environment variables of the caller that would change how a service starts.
SCRUBBED_ENV = ("DJANGO_SETTINGS_MODULE", "GUNICORN_CMD_ARGS")
REGIONS = ("us", "eu")
#: A region's Celery queue is this plus its name (the celery transport's default QUEUE).
QUEUE_PREFIX = "silo_router.region."
#: gunicorn's access log line without the query string or the referrer: an OAuth redirect's
#: ``code`` and ``state`` and an install link's grant travel there and must not be logged.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
#: How control may reach a region (``SILO_REGION_<REGION>_TRANSPORT``).
TRANSPORTS = ("http", "celery")

JsonDict = dict[str, Any]
#: The line of a region's management shell that carries its install links.
INSTALL_LINKS_MARKER = "install-links: "


def install_links_script(organizations: Mapping[str, str]) -> str:
    """Code for a region's ``manage.py shell -c`` that prints install links for ``{slug: organization id}``."""
    return (
        "import json\n"
        "from silo_router.region.installs import install_url\n"
        f"orgs = {dict(organizations)!r}\n"
        f"print({INSTALL_LINKS_MARKER!r} + json.dumps({{slug: install_url(org) for slug, org in orgs.items()}}))\n"
    )


@dataclasses.dataclass(frozen=True)
class Workspace:
    """A Slack workspace of the fake, and the organizations it is installed for."""

    name: str
    channels: tuple[str, ...]
    #: Organization slugs (``seed.ORGANIZATIONS``); one install per organization.
    organizations: tuple[str, ...]


#: The example's workspaces: one per region, and one shared by an organization of each.
WORKSPACES: dict[str, Workspace] = {
    "T0US00001": Workspace(name="Acme", channels=("C0US00001", "C0US00002", "C0US00003"), organizations=("acme",)),
    "T0EU00001": Workspace(name="Globex", channels=("C0EU00001", "C0EU00002", "C0EU00003"), organizations=("globex",)),
    "T0BOTH001": Workspace(
        name="Acme and Globex",
        channels=("C0BOTH001", "C0BOTH002", "C0BOTH003", "C0BOTH004"),
        organizations=("acme", "globex"),
    ),
}


@dataclasses.dataclass(frozen=True)
class Installed:
    """A workspace's installation in control's database (the bot token only as stored: ciphertext)."""

    installation_id: str
    active: bool
    deactivation_reason: str
    organizations: tuple[str, ...]
    encrypted_bot_token: str = dataclasses.field(repr=False)
    #: Unix time the bot token expires (token rotation), or ``None``.
    bot_token_expires_at: float | None = None


def _timestamp(value: Any) -> float | None:
    """Unix time of a database datetime (SQLite's text in UTC, or PostgreSQL's datetime); ``None`` stays."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        moment = datetime.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


class ClusterError(RuntimeError):
    """A service did not start, died, or did not answer as expected."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def form_csrf_token(html: str) -> str:
    """The ``csrfmiddlewaretoken`` of the first Django form in ``html``."""
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if match is None:
        raise ClusterError("the page has no CSRF token")
    return match.group(1)


def _death_signal_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent thread dies.

    Built in the parent so the child only makes one system call before ``exec``.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return set_death_signal


@dataclasses.dataclass
class Service:
    """One subprocess of the cluster and how to tell that it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    #: Ready when a GET answers 200; ``None``: ready when ``ready_marker`` is in the log.
    health_url: str | None = None
    ready_marker: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    #: Where the log stood at the last start: ``ready_marker`` is looked for after it.
    ready_offset: int = 0

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the service's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class FakeSlackAPI:
    """Reads and resets the fake Slack's state over its ``/_fake/`` HTTP endpoints."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = self._session.get(f"{self.base_url}/_fake/{path}", params=params, timeout=self.timeout)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def calls(self, method: str | None = None, *, error: str | None = None) -> list[JsonDict]:
        """Recorded Web API and response_url calls, oldest first (method, params, ok, error, wall)."""
        params = {key: value for key, value in (("method", method), ("error", error)) if value is not None}
        calls: list[JsonDict] = self._get("calls", params) or []
        if method is not None:  # the fake filters too; this keeps the contract local
            calls = [call for call in calls if call["method"] == method]
        return calls

    def views(self) -> dict[str, JsonDict]:
        """Current views by view id."""
        return self._get("views") or {}

    def view(self, view_id: str) -> JsonDict | None:
        """The current view ``view_id``, or ``None``."""
        view: JsonDict | None = self._get(f"views/{view_id}")
        return view

    def view_by_external_id(self, external_id: str) -> JsonDict | None:
        """The current view with ``external_id``, or ``None``."""
        view: JsonDict | None = self._get("views", {"external_id": external_id})
        return view

    def messages(self) -> list[JsonDict]:
        """Posted messages and response_url posts, oldest first."""
        return self._get("messages") or []

    def _post(self, path: str, data: JsonDict) -> Any:
        response = self._session.post(f"{self.base_url}/_fake/{path}", json=data, timeout=self.timeout)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_workspace(self, team_id: str, *, name: str, channels: Collection[str] = ()) -> JsonDict:
        """Create workspace ``team_id`` with ``channels`` (its bot user and bot ids come back)."""
        answer: JsonDict = self._post("workspaces", {"team_id": team_id, "name": name, "channels": list(channels)})
        return answer

    def issue_trigger(self, *, team_id: str, user_id: str = "U0USER001") -> str:
        """A fresh trigger_id of workspace ``team_id``, as a click there would carry."""
        answer: JsonDict = self._post("trigger", {"team_id": team_id, "user_id": user_id})
        return str(answer["trigger_id"])

    def tokens(self, team_id: str, *, kind: str = "bot") -> list[str]:
        """Live ``kind`` (bot or user) tokens of ``team_id``: for tests that look for leaks, never for calls."""
        answer: JsonDict = self._get("tokens", {"team_id": team_id, "kind": kind}) or {}
        return [str(token) for token in answer.get("tokens", [])]

    def refreshes(self, team_id: str) -> int:
        """How many ``grant_type=refresh_token`` exchanges ``team_id``'s installs made."""
        answer: JsonDict = self._get("refreshes", {"team_id": team_id}) or {}
        return int(answer.get("refreshes", 0))

    def revoke(self, team_id: str) -> int:
        """Revoke every token of workspace ``team_id``, as uninstalling the app does; how many died."""
        answer: JsonDict = self._post("revoke", {"team_id": team_id}) or {}
        return int(answer.get("revoked", 0))

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        self._session.close()

    def reset(self) -> None:
        """Forget calls, views, messages, triggers and response_urls."""
        self._session.post(f"{self.base_url}/_fake/reset", timeout=self.timeout).raise_for_status()

    def wait_for_call(
        self,
        predicate: Callable[[JsonDict], bool],
        *,
        method: str | None = None,
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> JsonDict:
        """The first recorded call (of ``method``) that ``predicate`` accepts; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls(method):
                if predicate(call):
                    return call
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching {method or 'Slack'} call within {timeout:.1f} s")
            time.sleep(interval)

    @staticmethod
    def view_of(call: JsonDict) -> JsonDict:
        """The ``view`` argument of a views.* call, decoded if it was sent form-encoded."""
        view = call.get("params", {}).get("view")
        if isinstance(view, str):
            view = json.loads(view)
        return view if isinstance(view, dict) else {}


def _only_empty_broker_folders(var: Path) -> bool:
    """Whether ``var`` holds nothing but the empty folders ``example_project.celery`` makes for
    the filesystem broker (any ``manage.py`` command with the example settings makes them)."""
    for path in var.rglob("*"):
        relative = path.relative_to(var).parts
        if not path.is_dir() or relative[0] != "broker" or len(relative) > 2:
            return False
    return True


class Cluster:
    """The example project's processes on loopback, started fresh in ``var_dir``."""

    def __init__(
        self,
        var_dir: Path | str | None = None,
        *,
        upstream_latency: float | None = None,
        broker_url: str | None = None,
        startup_timeout: float = 45.0,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        region_transports: Mapping[str, str] | None = None,
        workspaces: Mapping[str, Workspace] | None = None,
        install_workspaces: bool = True,
        token_ttl: float | None = None,
        token_rotation_margin: int | None = None,
        trigger_ttl: float | None = None,
        control_workers: int = 1,
        control_processes: int = 1,
        region_env: Mapping[str, Mapping[str, str]] | None = None,
        control_runner: str = "celery",
    ) -> None:
        """Plan the cluster (ports, secrets, commands); nothing runs until ``start()``.

        ``var_dir`` defaults to ``$SILO_DEMO_VAR`` or ``<repo>/var/demo`` and is wiped
        on start (only if it is empty or was made by a Cluster). ``upstream_latency``
        sets ``DEMO_UPSTREAM_LATENCY`` in the regions; ``broker_url`` sets
        ``CELERY_BROKER_URL``; ``extra_env`` is added to every service's environment.
        ``region_transports`` maps a region to ``"http"`` (the default) or ``"celery"``;
        a ``celery`` region also gets its own Celery worker (``<region>-worker``).

        ``workspaces`` (default ``WORKSPACES``) are added to the fake Slack and, unless
        ``install_workspaces`` is false, installed through the OAuth flow by ``start()``
        for their organizations. ``token_ttl`` starts the fake with token rotation
        (tokens live that many seconds, refresh tokens are single-use) and
        ``token_rotation_margin`` sets control's ``SLACK["TOKEN_ROTATION_MARGIN"]``.
        ``trigger_ttl`` sets how long the fake's trigger_ids live (Slack's 3 s by default),
        for benchmarks that issue a run's triggers before it starts.
        ``control_workers`` Celery workers and ``control_processes`` gunicorn processes
        serve control (``worker``, ``worker-2``, ...).
        ``control_runner="embedded"`` runs control with the embedded runner: its web
        processes deliver and sweep, and no control worker or beat is started.
        ``region_env`` adds to one region's environment (its gunicorn, seeding, shells and
        worker), e.g. ``{"us": {"DJANGO_SETTINGS_MODULE": "..."}}`` for other handler modules.
        """
        default_var = os.environ.get("SILO_DEMO_VAR") or REPO_DIR / "var" / "demo"
        self.var_dir = Path(var_dir or default_var).resolve()
        self.region_transports: dict[str, str] = {region: "http" for region in REGIONS}
        for region, transport in (region_transports or {}).items():
            if region not in REGIONS or transport not in TRANSPORTS:
                raise ValueError(f"region_transports: {region!r} -> {transport!r} (regions {REGIONS}, {TRANSPORTS})")
            self.region_transports[region] = transport
        self.python = python
        self.startup_timeout = startup_timeout
        self.ports: dict[str, int] = {name: free_port() for name in ("slack", "us", "eu", "control", "control-app")}
        self.workspaces: dict[str, Workspace] = dict(WORKSPACES if workspaces is None else workspaces)
        self.install_workspaces = install_workspaces
        self.token_ttl = token_ttl
        self.token_rotation_margin = token_rotation_margin
        self.trigger_ttl = trigger_ttl
        self.control_workers = control_workers
        self.control_processes = control_processes
        self.region_env = {region: dict(env) for region, env in (region_env or {}).items()}
        self.control_runner = control_runner
        self.signing_secret = secrets.token_urlsafe(24)
        self.client_id = f"{secrets.randbelow(10**10):010d}.{secrets.randbelow(10**12):012d}"
        self.client_secret = secrets.token_hex(16)
        self.token_encryption_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        self.operator_password = secrets.token_urlsafe(12)
        self._secret_keys = {silo: secrets.token_urlsafe(40) for silo in ("control", *REGIONS)}
        self._hop_keys = {
            region: (f"{region}-" + secrets.token_hex(3), secrets.token_urlsafe(40)) for region in REGIONS
        }
        self._env = self._common_env(upstream_latency, broker_url, extra_env or {})
        self.services: dict[str, Service] = {service.name: service for service in self._plan()}
        self.fake = FakeSlackAPI(self.slack_url)
        self._death_signal = _death_signal_setter()
        self._started = False

    # -- addresses ------------------------------------------------------------------------

    def _url(self, name: str) -> str:
        return f"http://{HOST}:{self.ports[name]}"

    @property
    def slack_url(self) -> str:
        """Base URL of the fake Slack (``/api/`` is its Web API)."""
        return self._url("slack")

    @property
    def control_url(self) -> str:
        """Base URL of the control silo, as Slack reaches it: through the buffering proxy."""
        return self._url("control")

    @property
    def control_app_url(self) -> str:
        """Base URL of control's gunicorn itself, behind the proxy (for tests of gunicorn's own behaviour)."""
        return self._url("control-app")

    @property
    def slack_request_url(self) -> str:
        """Where Slack posts every request: control's ``/extensions/slack/``."""
        return self.control_url + SLACK_PATH

    @property
    def install_url(self) -> str:
        """Control's public install URL (``/extensions/slack/install/``), where install links lead."""
        return self.control_url + SLACK_PATH + INSTALL_PATH

    @property
    def broker_url(self) -> str:
        """The Celery broker control and its worker share (kombu's filesystem transport by default)."""
        return self._env.get("CELERY_BROKER_URL", "filesystem://")

    def region_url(self, region: str) -> str:
        """Base URL of region silo ``region`` (``us`` or ``eu``)."""
        return self._url(region)

    def hop_key(self, region: str) -> tuple[str, str]:
        """``(key id, key)`` that control signs region ``region``'s envelopes with."""
        return self._hop_keys[region]

    def region_db(self, region: str) -> Path:
        """Path of region ``region``'s SQLite database."""
        return self.var_dir / f"region_{region}.sqlite3"

    @property
    def control_db(self) -> Path:
        """Path of the control silo's SQLite database (unused when ``control_database_url`` is set)."""
        return self.var_dir / "control.sqlite3"

    @property
    def control_database_url(self) -> str | None:
        """Control's PostgreSQL database (``SILO_CONTROL_DATABASE_URL`` in ``extra_env``), or ``None``: SQLite."""
        return self._env.get("SILO_CONTROL_DATABASE_URL") or None

    # -- planning ---------------------------------------------------------------------------

    def _common_env(
        self, upstream_latency: float | None, broker_url: str | None, extra: Mapping[str, str]
    ) -> dict[str, str]:
        """What every service gets: the caller's environment (scrubbed), paths, transports, broker, tunables."""
        env = {key: value for key, value in os.environ.items() if key not in SCRUBBED_ENV}
        pythonpath = [str(REPO_DIR), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PYTHONUNBUFFERED": "1",
                "SILO_DEMO_VAR": str(self.var_dir),
                "SLACK_API_URL": self._url("slack") + "/api/",
                **{f"SILO_REGION_{r.upper()}_TRANSPORT": t for r, t in self.region_transports.items()},
            }
        )
        if upstream_latency is not None:
            env["DEMO_UPSTREAM_LATENCY"] = str(upstream_latency)
        if broker_url is not None:
            env["CELERY_BROKER_URL"] = broker_url
        env.update(extra)
        return env

    def _control_env(self) -> dict[str, str]:
        """Control's environment: the only one with Slack's secrets and every region's hop key."""
        hop_keys = {
            name: value
            for region, (key_id, key) in self._hop_keys.items()
            for name, value in (
                (f"SILO_ROUTER_{region.upper()}_SIGNING_KEY_ID", key_id),
                (f"SILO_ROUTER_{region.upper()}_SIGNING_KEY", key),
            )
        }
        return {
            **self._env,
            "DJANGO_SETTINGS_MODULE": "example_project.settings.control",
            "DJANGO_SECRET_KEY": self._secret_keys["control"],
            **hop_keys,
            "SLACK_SIGNING_SECRET": self.signing_secret,
            "SLACK_CLIENT_ID": self.client_id,
            "SLACK_CLIENT_SECRET": self.client_secret,
            "SLACK_REDIRECT_URI": self.control_url + SLACK_PATH + REDIRECT_PATH,
            "SILO_ROUTER_TOKEN_ENCRYPTION_KEYS": self.token_encryption_key,
            **({"SLACK_TOKEN_ROTATION_MARGIN": str(self.token_rotation_margin)} if self.token_rotation_margin else {}),
            "SILO_REGION_US_URL": self._url("us") + ENVELOPE_PATH,
            "SILO_REGION_EU_URL": self._url("eu") + ENVELOPE_PATH,
            **({"SILO_ROUTER_RUNNER": self.control_runner} if self.control_runner != "celery" else {}),
        }

    def _region_env(self, region: str) -> dict[str, str]:
        """Region ``region``'s environment: its own hop key and Django secret, control's addresses, no Slack secret."""
        key_id, key = self._hop_keys[region]
        return {
            **self._env,
            "DJANGO_SETTINGS_MODULE": f"example_project.settings.region_{region}",
            "DJANGO_SECRET_KEY": self._secret_keys[region],
            f"SILO_ROUTER_{region.upper()}_SIGNING_KEY_ID": key_id,
            f"SILO_ROUTER_{region.upper()}_SIGNING_KEY": key,
            "SILO_CONTROL_URL": self.control_app_url,
            "SLACK_INSTALL_URL": self.install_url,
            **self.region_env.get(region, {}),
        }

    def silo_env(self, silo: str) -> dict[str, str]:
        """The environment a process of ``silo`` (``control``, ``us`` or ``eu``) runs with."""
        return self._control_env() if silo == "control" else self._region_env(silo)

    def _gunicorn(self, name: str, silo: str, *, port: str | None = None, workers: int = 1) -> Service:
        port = port or name
        argv = [
            self.python, "-m", "gunicorn", "example_project.wsgi:application",
            "--bind", f"{HOST}:{self.ports[port]}",
            "--workers", str(workers), "--threads", "2", "--worker-class", "gthread",
            "--timeout", "60", "--graceful-timeout", "3",
            "--no-control-socket",
            "--access-logfile", "-", f"--access-logformat={ACCESS_LOG_FORMAT}", "--error-logfile", "-",
        ]  # fmt: skip
        health = self._url(port) + ("/admin/login/" if silo == "control" else "/health/")
        return Service(
            name=name,
            argv=argv,
            env=self.silo_env(silo),
            log_path=self.var_dir / f"{name}.log",
            health_url=health,
        )

    def _buffering_proxy(self) -> Service:
        """Control's public port: whole requests are buffered before gunicorn sees them (slow clients)."""
        argv = [
            self.python, "-m", "example_project.buffering_proxy",
            f"--listen={HOST}:{self.ports['control']}", f"--upstream={HOST}:{self.ports['control-app']}",
        ]  # fmt: skip
        return Service(
            name="control-proxy",
            argv=argv,
            env=dict(self._env),
            log_path=self.var_dir / "control-proxy.log",
            health_url=self._url("control") + "/admin/login/",
        )

    def _celery_worker(self, name: str, silo: str, queue: str, hostname: str) -> Service:
        argv = [
            self.python, "-m", "celery", "-A", "example_project.celery", "worker",
            "--pool=threads", "--concurrency=4", "-Q", queue,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel=INFO", "--hostname", f"{hostname}@%h",
        ]  # fmt: skip
        return Service(
            name=name,
            argv=argv,
            env=self.silo_env(silo),
            log_path=self.var_dir / f"{name}.log",
            ready_marker=" ready.",
        )

    def _plan(self) -> list[Service]:
        slack_argv = [
            self.python,
            "-m",
            "example_project.fake_slack",
            # "--opt=value": a random secret may start with "-".
            f"--port={self.ports['slack']}",
            f"--signing-secret={self.signing_secret}",
            f"--client-id={self.client_id}",
            f"--client-secret={self.client_secret}",
        ]  # fmt: skip
        if self.token_ttl is not None:
            slack_argv += ["--token-rotation", f"--token-ttl={self.token_ttl:g}"]
        if self.trigger_ttl is not None:
            slack_argv.append(f"--trigger-ttl={self.trigger_ttl:g}")
        slack = Service(
            name="slack",
            argv=slack_argv,
            env=dict(self._env),
            log_path=self.var_dir / "slack.log",
            health_url=self._url("slack") + "/_fake/health",
        )
        embedded = self.control_runner == "embedded"
        workers = [
            self._celery_worker(name, "control", "celery", f"control-{name}")
            for name in ["worker", *(f"worker-{n}" for n in range(2, self.control_workers + 1))]
            if not embedded
        ]
        region_workers = [
            self._celery_worker(f"{region}-worker", region, QUEUE_PREFIX + region, f"region-{region}-worker")
            for region, transport in self.region_transports.items()
            if transport == "celery"
        ]
        return [
            slack,
            self._gunicorn("us", "us"),
            self._gunicorn("eu", "eu"),
            self._gunicorn("control", "control", port="control-app", workers=self.control_processes),
            self._buffering_proxy(),
            *workers,
            *([] if embedded else [self._beat()]),
            *region_workers,
        ]

    def _beat(self) -> Service:
        argv = [
            self.python, "-m", "celery", "-A", "example_project.celery", "beat",
            f"--schedule={self.var_dir / 'celerybeat-schedule'}", "--loglevel=INFO",
        ]  # fmt: skip
        return Service(
            name="beat",
            argv=argv,
            env=self.silo_env("control"),
            log_path=self.var_dir / "beat.log",
            ready_marker="beat: Starting...",
        )

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Make a fresh var dir, migrate and seed every silo, start every service, wait for health.

        Then the workspaces are created in the fake Slack and (``install_workspaces``)
        installed through the OAuth flow, one install per organization.
        """
        if self._started:
            raise ClusterError("the cluster is already started")
        self._started = True
        atexit.register(self.stop)
        try:
            self._fresh_var_dir()
            self._seed()
            # The regions make their install links while the services start.
            link_jobs = self._start_link_jobs(self._installed_organizations() if self.install_workspaces else ())
            for name in self.services:
                self._spawn(self.services[name])
            try:
                self._wait_ready(list(self.services))
            finally:
                links = self._collect_links(link_jobs)
            for team_id, workspace in self.workspaces.items():
                self.fake.add_workspace(team_id, name=workspace.name, channels=workspace.channels)
            if self.install_workspaces:
                self.install_all(links)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every service: SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call twice."""
        self._terminate([service for service in self.services.values() if service.process is not None], timeout)
        self.fake.close()
        atexit.unregister(self.stop)
        self._started = False

    def stop_service(self, name: str, timeout: float = 5.0) -> None:
        """Stop one service (e.g. ``"us"`` to take a region down)."""
        self._terminate([self.services[name]], timeout)

    def start_service(self, name: str) -> None:
        """Start a stopped service again, on the same port, and wait until it is ready."""
        service = self.services[name]
        if service.running:
            return
        self._spawn(service)
        self._wait_ready([name])

    def kill_service(self, name: str) -> None:
        """Crash one service: SIGKILL its whole process group at once (no shutdown handler runs), then reap it.

        ``start_service(name)`` starts it again.
        """
        service = self.services[name]
        if service.process is None:
            return
        self._kill_and_reap(service)

    def pause_service(self, name: str) -> None:
        """Freeze one service's process group (SIGSTOP): it holds its sockets but does nothing."""
        service = self.services[name]
        if service.process is not None:
            self._signal_group(service.process, signal.SIGSTOP)

    def resume_service(self, name: str) -> None:
        """Let a paused service run again (SIGCONT); harmless if it was not paused."""
        service = self.services[name]
        if service.process is not None:
            self._signal_group(service.process, signal.SIGCONT)

    def manage(self, silo: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m example_project.manage <args>`` for ``silo`` (``control``, ``us`` or ``eu``).

        The command gets the silo's environment (database, broker, tunables), as a
        service of this cluster would; its output is captured, its exit code not checked.
        """
        return subprocess.run(
            [self.python, "-m", "example_project.manage", *args],
            env=self.silo_env(silo),
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _fresh_var_dir(self) -> None:
        var = self.var_dir
        if var.exists() and not (var / VAR_MARKER).exists() and not _only_empty_broker_folders(var):
            raise ClusterError(f"{var} is not empty and was not made by a Cluster; refusing to wipe it")
        shutil.rmtree(var, ignore_errors=True)
        (var / "broker").mkdir(parents=True)
        (var / VAR_MARKER).write_text("made by example_project.cluster; wiped on every start\n")

    def _seed(self) -> None:
        """Migrate and seed the three databases in parallel."""
        jobs = {
            "control": ["control", f"--operator-password={self.operator_password}"],
            "us": ["region"],
            "eu": ["region"],
        }
        running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for name, args in jobs.items():
            log_path = self.var_dir / f"seed-{name}.log"
            with log_path.open("wb") as log:
                running[name] = (
                    subprocess.Popen(
                        [self.python, "-m", "example_project.seed", *args],
                        env=self.silo_env(name),
                        cwd=REPO_DIR,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=self._death_signal,
                    ),
                    log_path,
                )
        failures = []
        try:
            for name, (process, log_path) in running.items():
                try:
                    code = process.wait(timeout=self.startup_timeout)
                except subprocess.TimeoutExpired:
                    code = None
                if code != 0:
                    failures.append(f"seeding {name} failed ({code}):\n{log_path.read_text(errors='replace')[-3000:]}")
        finally:  # also on Ctrl-C: no seeding process outlives start()
            for process, _ in running.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if failures:
            raise ClusterError("\n".join(failures))

    def _spawn(self, service: Service) -> None:
        service.log_file = service.log_path.open("ab")
        service.ready_offset = service.log_file.tell()
        service.process = subprocess.Popen(
            service.argv,
            env=service.env,
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=service.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._death_signal,
        )

    def _is_ready(self, service: Service, session: requests.Session) -> bool:
        if service.health_url is not None:
            with contextlib.suppress(requests.RequestException):
                return session.get(service.health_url, timeout=2).status_code == 200
            return False
        with service.log_path.open("rb") as log:
            log.seek(service.ready_offset)
            return (service.ready_marker or "").encode() in log.read()

    def _wait_ready(self, names: list[str]) -> None:
        """Poll until every named service is ready; ``ClusterError`` with its log if one dies or times out."""
        deadline = time.monotonic() + self.startup_timeout
        waiting = list(names)
        with requests.Session() as session:
            while waiting:
                for name in list(waiting):
                    service = self.services[name]
                    if service.process is not None and service.process.poll() is not None:
                        raise ClusterError(
                            f"{name} exited with code {service.process.returncode} while starting; "
                            f"{service.log_path}:\n{service.log_tail()}"
                        )
                    if self._is_ready(service, session):
                        waiting.remove(name)
                if waiting and time.monotonic() > deadline:
                    tails = "\n".join(f"--- {n}:\n{self.services[n].log_tail(20)}" for n in waiting)
                    raise ClusterError(f"not ready after {self.startup_timeout:.0f} s: {', '.join(waiting)}\n{tails}")
                if waiting:
                    time.sleep(0.1)

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the process's whole session (gunicorn's workers too); gone is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

    def _kill_and_reap(self, service: Service) -> None:
        """SIGKILL the service's process group, wait for it, close its log."""
        assert service.process is not None
        self._signal_group(service.process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=5)
        if service.log_file is not None:
            service.log_file.close()
            service.log_file = None
        service.process = None

    def _terminate(self, services: list[Service], timeout: float) -> None:
        """SIGTERM each service's process group, wait, SIGKILL whatever is left, reap."""
        live = [s for s in services if s.process is not None]
        for service in live:
            if service.process is not None and service.process.poll() is None:
                self._signal_group(service.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in live:
            assert service.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            # Always: the leader may be gone while a child (a gunicorn worker) is not.
            self._kill_and_reap(service)

    # -- helpers for scenarios and tests -------------------------------------------------------

    def sender(self, **kwargs: Any) -> SlackSender:
        """A SlackSender that signs like Slack and posts to control's ``/extensions/slack/``."""
        return SlackSender(
            fake=self.slack_url, signing_secret=self.signing_secret, target_url=self.slack_request_url, **kwargs
        )

    def install_links(self, organizations: Collection[str]) -> dict[str, str]:
        """``{organization slug: install link}``, each made by its organization's region silo.

        Runs ``install_url(organization_id)`` of :mod:`silo_router.region.installs` in a
        management shell of the region (one per region, in parallel), as a region's page
        would when an admin asks to connect Slack.
        """
        return self._collect_links(self._start_link_jobs(organizations))

    def _start_link_jobs(self, organizations: Collection[str]) -> dict[str, subprocess.Popen[str]]:
        """One region shell per region of ``organizations``, printing their install links."""
        by_region: dict[str, dict[str, str]] = {}
        for slug in organizations:
            organization_id, region = ORGANIZATIONS[slug]
            by_region.setdefault(region, {})[slug] = organization_id
        return {
            region: subprocess.Popen(
                [self.python, "-m", "example_project.manage", "shell", "-c", install_links_script(orgs)],
                env=self.silo_env(region),
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                preexec_fn=self._death_signal,
            )
            for region, orgs in by_region.items()
        }

    def _collect_links(self, running: Mapping[str, subprocess.Popen[str]]) -> dict[str, str]:
        """What the region shells printed, ``{slug: link}``; ``ClusterError`` if one failed."""
        links: dict[str, str] = {}
        try:
            for region, process in running.items():
                out, err = process.communicate(timeout=self.startup_timeout)
                line = next((line for line in out.splitlines() if line.startswith(INSTALL_LINKS_MARKER)), None)
                if process.returncode != 0 or line is None:
                    raise ClusterError(f"region {region} made no install links ({process.returncode}):\n{err[-2000:]}")
                links.update(json.loads(line.removeprefix(INSTALL_LINKS_MARKER)))
        finally:
            for process in running.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return links

    def install(self, team_id: str, organization: str, *, link: str | None = None) -> PageSeen:
        """Install workspace ``team_id`` for ``organization`` through the OAuth flow; control's last page.

        An install link from the organization's region, Slack's consent (the fake plays the
        user choosing ``team_id``), the redirect back to control. ``ClusterError`` unless
        control then holds an active installation of ``team_id`` linked to ``organization``.
        """
        link = link or self.install_links([organization])[organization]
        with self.sender().authorize(link, team_id=team_id) as answer:
            page = PageSeen(answer.status_code, answer.url, answer.text)
        installed = self.installation(team_id)
        if not page.ok or installed is None or not installed.active or organization not in installed.organizations:
            raise ClusterError(
                f"installing {team_id} for {organization}: HTTP {page.status}, {installed}; {page.text[-400:]!r}"
            )
        return page

    def install_all(self, links: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """Install every workspace for each of its organizations; ``(team id, organization)`` in order."""
        if links is None:
            links = self.install_links(self._installed_organizations())
        installs = [(team_id, slug) for team_id, ws in self.workspaces.items() for slug in ws.organizations]
        for team_id, slug in installs:
            self.install(team_id, slug, link=links[slug])
        return installs

    def _installed_organizations(self) -> set[str]:
        """Every organization a workspace is installed for."""
        return {slug for workspace in self.workspaces.values() for slug in workspace.organizations}

    def uninstall(self, team_id: str) -> Sent:
        """Uninstall the app from workspace ``team_id``: Slack revokes its tokens and sends ``app_uninstalled``."""
        self.fake.revoke(team_id)
        return self.sender().app_uninstalled(team_id=team_id)

    def admin_login(self, session: requests.Session, *, username: str = OPERATOR, password: str | None = None) -> None:
        """Log ``session`` in to control's admin as the operator, like a browser (CSRF from the form)."""
        login_url = self.control_url + "/admin/login/"
        page = session.get(login_url, params={"next": "/admin/"}, timeout=10)
        page.raise_for_status()
        answer = session.post(
            login_url + "?next=/admin/",
            data={
                "csrfmiddlewaretoken": form_csrf_token(page.text),
                "username": username,
                "password": self.operator_password if password is None else password,
                "next": "/admin/",
            },
            headers={"Referer": login_url},
            allow_redirects=False,
            timeout=10,
        )
        if answer.status_code != 302 or not answer.headers.get("Location", "").endswith("/admin/"):
            raise ClusterError(f"admin login failed: HTTP {answer.status_code}")

    def issue_status(self, region: str, organization_id: str, number: int) -> str | None:
        """An issue's status read straight from region ``region``'s database (``None``: no such issue)."""
        with contextlib.closing(sqlite3.connect(self.region_db(region), timeout=10)) as db:
            row = db.execute(
                "SELECT status FROM issues_issue WHERE organization_id = ? AND number = ?", (organization_id, number)
            ).fetchone()
        return None if row is None else str(row[0])

    def control_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (``?`` placeholders) on control's database, SQLite or PostgreSQL, as committed now."""
        if self.control_database_url is None:
            with contextlib.closing(sqlite3.connect(self.control_db, timeout=10)) as db:
                return db.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.control_database_url, autocommit=True, connect_timeout=10) as connection:
            return list(connection.execute(sql.replace("?", "%s"), params).fetchall())

    def installation(self, team_id: str) -> Installed | None:
        """Workspace ``team_id``'s installation as control's database holds it, or ``None``."""
        rows = self.control_rows(
            "SELECT i.id, i.active, i.deactivation_reason, s.encrypted_bot_token, s.bot_token_expires_at "
            "FROM silo_router_control_integration i "
            "LEFT JOIN silo_router_control_slackinstallation s ON s.integration_id = i.id "
            "WHERE i.provider = 'slack' AND i.external_id = ?",
            (team_id,),
        )
        if not rows:
            return None
        [(integration_id, active, reason, encrypted, expires_at)] = rows
        slugs = self.control_rows(
            "SELECT o.slug FROM silo_router_control_organizationmapping o "
            "JOIN silo_router_control_integration_organizations io ON io.organizationmapping_id = o.id "
            "WHERE io.integration_id = ? ORDER BY o.slug",
            (integration_id,),
        )
        return Installed(
            installation_id=str(integration_id),
            active=bool(active),
            deactivation_reason=str(reason or ""),
            organizations=tuple(str(slug) for (slug,) in slugs),
            encrypted_bot_token=str(encrypted or ""),
            bot_token_expires_at=_timestamp(expires_at),
        )

    def open_issues(self, region: str, organization_id: str) -> list[tuple[int, str]]:
        """``(number, title)`` of an organization's open issues, from the region's database."""
        with contextlib.closing(sqlite3.connect(self.region_db(region), timeout=10)) as db:
            rows = db.execute(
                "SELECT number, title FROM issues_issue WHERE organization_id = ? AND status = 'open' ORDER BY number",
                (organization_id,),
            ).fetchall()
        return [(int(number), str(title)) for number, title in rows]

    def service_of(self, pid: int) -> str | None:
        """The service whose process group ``pid`` belongs to (a gunicorn worker's is its master's), or ``None``.

        Every service runs in a session of its own, so its process group id is its
        leader's pid. Read from ``/proc`` (Linux), while the process runs.
        """
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        group = int(stat.rsplit(")", 1)[1].split()[2])  # after "pid (comm)": state, ppid, pgrp
        for name, service in self.services.items():
            if service.process is not None and service.process.pid == group:
                return name
        return None

    def log_tails(self, lines: int = 15) -> Iterator[tuple[str, str]]:
        """``(service, last lines of its log)`` for every service."""
        for name, service in self.services.items():
            yield name, service.log_tail(lines)
