"""README.md's quickstart, taken from README.md itself, run in a project made by ``startproject``.

The blocks marked ``<!-- quickstart:... -->`` are applied in order in a fresh virtualenv
that has only the built wheel and what its core requires (no Celery, no broker, no
sentry-sdk): ``shell`` blocks run in bash (``pip install django-silo-router`` installs
the wheel, as it will install the release), ``append`` and ``create`` write the file
they name, ``serve`` starts the server on a free port. Then a signed Slack click is sent
and must reach the README's handler, whose reply arrives at the click's ``response_url``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.signature import SignatureVerifier

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- (?P<set>\w+):(?P<action>\w+)(?: (?P<target>\S+))? -->\n```\w*\n(?P<text>.*?)```", re.S)
#: The ports README.md's control + regions blocks name; each run replaces them with free ones.
README_PORTS = ("127.0.0.1:8000", "127.0.0.1:8001")
#: The workspace the README's map command names.
TEAM_ID = "T0123ABCD"
PACKAGE = "django-silo-router"


@dataclasses.dataclass(frozen=True)
class Block:
    action: str
    target: str | None
    text: str


def quickstart(readme: str, name: str = "quickstart") -> list[Block]:
    """The README's blocks of set-up ``name`` (``quickstart``, ``regions``), in order."""
    return [Block(m["action"], m["target"], m["text"]) for m in BLOCK.finditer(readme) if m["set"] == name]


class Hook:
    """A ``response_url`` on loopback: records what is posted to it."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/actions/T0123ABCD/1/hook"

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.posts and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.posts


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A new virtualenv with nothing installed, and the wheel built from this checkout."""
    root = tmp_path_factory.mktemp("quickstart")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = dist.glob("django_silo_router-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv, wheel


@dataclasses.dataclass
class Project:
    """What a set-up made: where it is, the environment its blocks left, its servers (Slack talks to the last)."""

    cwd: Path
    env: dict[str, str]
    urls: list[str]
    servers: list[subprocess.Popen[bytes]]
    log: Path

    @property
    def url(self) -> str:
        return self.urls[-1]

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        python = Path(self.env["VIRTUAL_ENV"]) / "bin" / "python"
        return subprocess.run(
            [str(python), "manage.py", *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shell(block: str, *, cwd: Path, env: dict[str, str], wheel: Path, state: Path) -> tuple[Path, dict[str, str]]:
    """Run a shell block in bash; return the directory and environment it leaves."""
    script = block.replace(f"pip install {PACKAGE}", f"pip install {shlex.quote(str(wheel))}")
    script = f"set -euo pipefail\n{script}\npwd > {state}.pwd\nenv -0 > {state}.env\n"
    done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"a quickstart shell block failed:\n{block}\n{done.stdout}\n{done.stderr}"
    left = dict(item.split("=", 1) for item in Path(f"{state}.env").read_text().split("\0") if "=" in item)
    return Path(Path(f"{state}.pwd").read_text().strip()), left


def run_quickstart(
    blocks: list[Block],
    *,
    workdir: Path,
    venv: Path,
    wheel: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Project:
    """Apply ``blocks`` as a new user would, in ``workdir`` (or ``cwd`` and ``env``, to go on), ``venv`` active."""
    cwd = cwd or workdir
    env = env or {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(venv),
        "HOME": os.environ.get("HOME", str(workdir)),
        "LANG": "C.UTF-8",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    servers: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    log = workdir / f"server-{time.monotonic_ns()}.log"
    output = log.open("wb")
    ports = {address: f"127.0.0.1:{free_port()}" for address in README_PORTS}
    for number, block in enumerate(blocks):
        for address, instead in ports.items():
            block = dataclasses.replace(block, text=block.text.replace(address, instead))
        if block.action == "shell":
            cwd, env = _shell(block.text, cwd=cwd, env=env, wheel=wheel, state=workdir / f"block{number}")
        elif block.action == "append":
            assert block.target, "an append block names its file"
            with (cwd / block.target).open("a") as file:
                file.write("\n" + block.text)
        elif block.action == "create":
            assert block.target, "a create block names its file"
            (cwd / block.target).write_text(block.text)
        elif block.action == "serve":
            command = block.text.strip()
            address = re.search(r"127\.0\.0\.1:\d+", command)
            if address is None:  # the quickstart's plain runserver: on a free port here
                command += f" 127.0.0.1:{free_port()}"
                address = re.search(r"127\.0\.0\.1:\d+", command)
            assert address is not None
            urls.append(f"http://{address.group()}")
            servers.append(subprocess.Popen(
                ["bash", "-c", command], cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            ))  # fmt: skip
        else:
            raise AssertionError(f"unknown quickstart block {block.action!r}")
    output.close()  # the servers have their own copy
    assert servers, "the set-up starts a server"
    return Project(cwd=cwd, env=env, urls=urls, servers=servers, log=log)


def stop(project: Project, *, signum: int = signal.SIGTERM) -> None:
    for server in project.servers:
        with_group = os.getpgid(server.pid)
        os.killpg(with_group, signum)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)
            server.wait(timeout=10)


def click(project: Project, hook: Hook, *, action_id: str = "resolve_dialog") -> tuple[int, float]:
    """A signed block_actions click on ``action_id`` from the README's workspace: (status, seconds)."""
    payload = {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "acme"},
        "user": {"id": "U0USER001", "team_id": TEAM_ID},
        "api_app_id": "A0APP0001",
        "trigger_id": "1337.42.abcdef",
        "response_url": hook.url,
        "channel": {"id": "C0CHAN001", "name": "general"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0CHAN001"},
        "actions": [{"type": "button", "action_id": action_id, "block_id": "b1", "value": "1"}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(project.env["SLACK_SIGNING_SECRET"]).generate_signature(
        timestamp=timestamp, body=body
    )
    request = urllib.request.Request(
        project.url + "/extensions/slack/",
        data=body.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        },
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, time.monotonic() - started


def wait_for_server(project: Project, timeout: float = 60.0) -> None:
    """Until every server of ``project`` answers HTTP."""
    deadline = time.monotonic() + timeout
    for server, url in zip(project.servers, project.urls, strict=True):
        while True:
            assert server.poll() is None, "a server exited:\n" + project.log.read_text()
            assert time.monotonic() < deadline, "a server did not answer:\n" + project.log.read_text()
            try:
                urllib.request.urlopen(url + "/admin/login/", timeout=2).close()
                break
            except urllib.error.HTTPError as exc:  # answered: the server is up
                exc.close()
                break
            except OSError:
                time.sleep(0.2)


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.server.shutdown()
    server.server.server_close()


def handled_click(project: Project, hook: Hook) -> dict[str, Any]:
    """Once the servers answer, a signed click: answered 200 within Slack's 3 s, and the handler's
    private reply at its response_url; that reply."""
    wait_for_server(project)
    status, seconds = click(project, hook)
    assert status == 200, project.log.read_text()
    assert seconds < 3.0, f"answered in {seconds:.2f} s"
    posts = hook.wait(timeout=30)
    assert posts, "the handler's reply never reached the response_url:\n" + project.log.read_text()
    assert posts[0]["text"].startswith("Resolved for organization ")
    assert posts[0]["response_type"] == "ephemeral"
    return posts[0]


def code_lines(blocks: list[Block]) -> int:
    """Lines of settings and code a set-up has its user write (not blank, not comments)."""
    code = [line.strip() for b in blocks if b.action in ("append", "create") for line in b.text.splitlines()]
    return len([line for line in code if line and not line.startswith("#")])


def test_the_readme_has_a_quickstart_of_shell_settings_handler_and_server() -> None:
    blocks = quickstart(README.read_text())
    assert [b.action for b in blocks] == ["shell", "append", "create", "shell", "serve"]
    assert code_lines(blocks) <= 25


def test_the_readmes_control_and_region_set_up_has_at_most_ten_steps() -> None:
    blocks = quickstart(README.read_text(), "regions")
    assert len(blocks) + 1 <= 10  # and pointing Slack at control
    assert [b.action for b in blocks].count("serve") == 2


def test_the_quickstart_delivers_a_signed_click_to_its_handler_in_one_process_with_no_broker(
    fresh_venv: tuple[Path, Path], tmp_path: Path, hook: Hook
) -> None:
    venv, wheel = fresh_venv
    project = run_quickstart(quickstart(README.read_text()), workdir=tmp_path, venv=venv, wheel=wheel)
    try:
        reply = handled_click(project, hook)
        assert "None" not in reply["text"]
        # The reply can reach Slack a moment before control records the receipt: wait for the row.
        show = "from silo_router.control.models import Payload as P; print(list(P.objects.values_list('state', flat=True)))"  # noqa: E501
        deadline = time.monotonic() + 30
        while "['delivered']" not in project.manage("shell", "-c", show).stdout:
            assert time.monotonic() < deadline, "the click's payload was never marked delivered"
            time.sleep(0.2)
    finally:
        stop(project)
    # A replay from the shell, with no server running, is delivered before the command exits.
    replayed = project.manage("silo_router_replay", "--state", "delivered")
    assert "replayed 1 payloads" in replayed.stdout, replayed.stdout + replayed.stderr
    show = (
        "from silo_router.control.models import Payload as P; "
        "print([(p.state, p.replays, p.attempts) for p in P.objects.all()])"
    )
    rows = project.manage("shell", "-c", show)
    assert "[('delivered', 1, 1)]" in rows.stdout, rows.stdout + rows.stderr
    # What was installed is the core alone: the default needs no Celery, broker or Sentry.
    python = str(Path(project.env["VIRTUAL_ENV"]) / "bin" / "python")
    for module in ("celery", "sentry_sdk"):
        found = subprocess.run([python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}))"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert found.stdout.strip() == "None", f"{module} was installed with the core: {found.stdout}"
    checked = project.manage("check")
    assert checked.returncode == 0, checked.stderr
    said = checked.stdout + checked.stderr
    assert "silo_router.I001" in said and "embedded runner" in said
    assert "WARNINGS" not in said and "ERRORS" not in said, said


@pytest.mark.parametrize(
    ("broken", "instead"),
    [
        ('MIDDLEWARE.insert(0, "silo_router.control.middleware.SiloRouterMiddleware")  # first\n', ""),
        ('"HANDLER_MODULES": ["mysite.slack_handlers"]', '"HANDLER_MODULES": ["mysite.slack_handler"]'),
    ],
    ids=["no-middleware", "handler-module-misspelt"],
)
def test_a_broken_quickstart_block_fails_the_quickstart(
    fresh_venv: tuple[Path, Path], tmp_path: Path, hook: Hook, broken: str, instead: str
) -> None:
    readme = README.read_text()
    assert broken in readme
    venv, wheel = fresh_venv
    project = run_quickstart(quickstart(readme.replace(broken, instead)), workdir=tmp_path, venv=venv, wheel=wheel)
    try:
        wait_for_server(project)
        status, _ = click(project, hook)
        assert status != 200 or not hook.wait(timeout=8), "a broken quickstart still reached the handler"
    finally:
        stop(project)


SLOW_HANDLER = """
import pathlib
import time

STARTED = pathlib.Path(__file__).with_name("slow-started")


@slack.action("slow_resolve")
def slow_resolve(request):
    if not STARTED.exists():  # the first run: say so, then hang until the process is killed
        STARTED.write_text("started")
        time.sleep(600)
    request.respond("Resolved after the restart.")
"""
#: A short lease, so the restarted process's sweep takes the killed attempt back within seconds.
SHORT_LEASE = '\nSILO_ROUTER.update({"DELIVERY_TIMEOUT": 2.0, "LEASE_MARGIN": 0.5, "SWEEP_INTERVAL": 0.5})\n'


def test_the_quickstart_monolith_killed_mid_delivery_delivers_after_a_restart(
    fresh_venv: tuple[Path, Path], tmp_path: Path, hook: Hook
) -> None:
    venv, wheel = fresh_venv
    blocks = quickstart(README.read_text())
    blocks = [
        dataclasses.replace(b, text=b.text + SLOW_HANDLER) if b.action == "create" else b
        for b in blocks
    ]  # fmt: skip
    blocks.insert(2, Block("append", "mysite/settings.py", SHORT_LEASE))
    project = run_quickstart(blocks, workdir=tmp_path, venv=venv, wheel=wheel)
    started = project.cwd / "mysite" / "slow-started"
    try:
        wait_for_server(project)
        status, _ = click(project, hook, action_id="slow_resolve")
        assert status == 200
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline, "the handler never started:\n" + project.log.read_text()
            time.sleep(0.05)
    finally:
        stop(project, signum=signal.SIGKILL)  # mid-delivery: the row is in flight, its lease held
    assert not hook.posts
    serve = next(b for b in blocks if b.action == "serve")
    restarted = run_quickstart([serve], workdir=tmp_path, venv=venv, wheel=wheel, cwd=project.cwd, env=project.env)
    try:
        wait_for_server(restarted)  # no request is sent: the restarted process resumes on its own
        posts = hook.wait(timeout=60)
        assert posts, "the killed delivery was not resumed:\n" + restarted.log.read_text()
        assert posts[0]["text"] == "Resolved after the restart."
    finally:
        stop(restarted)


def test_the_getting_started_page_shows_the_readme_quickstart_as_it_is() -> None:
    page = (ROOT / "docs" / "getting-started.md").read_text()
    for block in quickstart(README.read_text()) + quickstart(README.read_text(), "regions"):
        assert block.text in page, f"docs/getting-started.md differs from README.md's quickstart block:\n{block.text}"


def test_the_readmes_control_and_region_set_up_delivers_a_click_over_http_to_the_regions_handler(
    fresh_venv: tuple[Path, Path], tmp_path: Path, hook: Hook
) -> None:
    venv, wheel = fresh_venv
    project = run_quickstart(quickstart(README.read_text(), "regions"), workdir=tmp_path, venv=venv, wheel=wheel)
    try:
        handled_click(project, hook)
        assert "POST /silo-router/envelopes/" in project.log.read_text()  # it crossed to the region's server
    finally:
        stop(project)
