"""Structured logs from a real `comments-api serve`: JSON lines, request ids, no user data."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from .authkit import AUDIENCE, ISSUER, hs_signer
from .support import VENV_BIN, ServiceProcess, free_port, wait_until

SALT = "test-salt-not-a-secret"
VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("logging")
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'comments.db'}",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "CLIENT_IP_HASH_SALT": SALT,
        "RATELIMIT_ENABLED": "false",
    }
    with ServiceProcess(env, workdir, workers=2) as svc:
        yield svc


def records(svc: ServiceProcess) -> list[dict]:
    return [json.loads(line) for line in svc.log().splitlines() if line.strip()]


def access_for(svc: ServiceProcess, request_id: str) -> list[dict]:
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [
            r
            for r in records(svc)
            if r.get("logger") == "comments_api.access" and r.get("request_id") == request_id
        ]
        return bool(found)

    assert wait_until(seen, 10), f"no access line for request {request_id}"
    return found


def test_every_line_is_json_including_gunicorns_own(service: ServiceProcess) -> None:
    requests.get(f"{service.base}/healthz", timeout=10)
    lines = [line for line in service.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)  # raises on any non-JSON line
        assert {"time", "level", "logger", "message"} <= record.keys()
    loggers = {r["logger"] for r in records(service)}
    assert "gunicorn.error" in loggers  # "Booting worker ..." and friends
    assert "comments_api.access" in loggers
    # gunicorn's own access log would repeat raw paths: the app's line replaces it.
    assert "gunicorn.access" not in loggers


def test_one_line_per_request_with_the_documented_fields(service: ServiceProcess) -> None:
    rid = f"test-{uuid.uuid4().hex}.ok_1"
    response = requests.get(
        f"{service.base}/api/v1/contents/article-9/comments",
        headers={"X-Request-ID": rid},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == rid
    assert len(response.raw.headers.getlist("X-Request-ID")) == 1
    lines = access_for(service, rid)
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "info"
    assert datetime.fromisoformat(line["time"].replace("Z", "+00:00")).tzinfo is not None
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/contents/<content_id>/comments"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float)
    assert line["duration_ms"] >= 0
    assert line["identity_id"] is None  # anonymous
    # HMAC-SHA256(CLIENT_IP_HASH_SALT, ip), first 16 hex digits (README, log format).
    expected = hmac.new(SALT.encode(), b"127.0.0.1", hashlib.sha256).hexdigest()[:16]
    assert line["client_ip_hash"] == expected
    assert "127.0.0.1" not in json.dumps(line)
    assert "article-9" not in json.dumps(line)  # the template, never the raw path


@pytest.mark.parametrize(
    "sent",
    ["has space", "x" * 129, "ümlaut", "semi;colon", "new\\nline", "<script>"],
)
def test_invalid_request_id_is_replaced(service: ServiceProcess, sent: str) -> None:
    response = requests.get(f"{service.base}/healthz", headers={"X-Request-ID": sent}, timeout=10)
    rid = response.headers["X-Request-ID"]
    assert rid != sent
    assert VALID_ID.fullmatch(rid)
    assert len(access_for(service, rid)) == 1
    assert sent not in service.log()


def test_request_id_generated_when_absent_and_longest_valid_kept(
    service: ServiceProcess,
) -> None:
    generated = [requests.get(f"{service.base}/healthz", timeout=10) for _ in range(2)]
    ids = [r.headers["X-Request-ID"] for r in generated]
    assert all(VALID_ID.fullmatch(i) for i in ids)
    assert ids[0] != ids[1]
    longest = "A" * 120 + uuid.uuid4().hex[:8]
    response = requests.get(
        f"{service.base}/healthz", headers={"X-Request-ID": longest}, timeout=10
    )
    assert response.headers["X-Request-ID"] == longest
    assert len(access_for(service, longest)) == 1


def test_error_responses_carry_the_request_id_too(service: ServiceProcess) -> None:
    rid = f"err-{uuid.uuid4().hex}"
    response = requests.get(f"{service.base}/nope", headers={"X-Request-ID": rid}, timeout=10)
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == rid
    (line,) = access_for(service, rid)
    assert line["status"] == 404
    assert line["route"] == "<unmatched>"


def test_no_email_or_comment_text_in_logs(service: ServiceProcess) -> None:
    email = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    text = f"my private opinion {uuid.uuid4().hex}"
    ok = requests.post(
        f"{service.base}/api/comment/new",
        json={"email": email, "comment": text, "content_id": 42},
        timeout=10,
    )
    assert ok.status_code == 200
    bad = requests.post(
        f"{service.base}/api/comment/new",
        json={"email": email, "comment": text},  # no content_id: 400
        timeout=10,
    )
    assert bad.status_code == 400
    listed = [
        requests.get(f"{service.base}/api/comment/list/{key}", timeout=10) for key in (email, "42")
    ]
    # Each worker writes its held access lines when it next waits for work: one line per
    # request, not one worker's last line, says they are all out.
    for response in [ok, bad, *listed]:
        access_for(service, response.headers["X-Request-ID"])
    log = service.log()
    assert email not in log
    assert text not in log


def test_a_signed_in_readers_lines_name_their_subject_and_nothing_else_of_them(
    tmp_path: Path,
) -> None:
    """What an erasure leaves in the logs (docs/operations.md, "What stays"): the token's
    subject, in clear, as ``identity_id``; never its address, name or the text."""
    signer = hs_signer()
    subject = f"sub-{uuid.uuid4().hex[:8]}"
    email, name = f"{subject}@readers.example", f"Reader {uuid.uuid4().hex[:8]}"
    text = f"my private opinion {uuid.uuid4().hex}"
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_LEVEL": "info",
        "CLIENT_IP_HASH_SALT": SALT,
        "RATELIMIT_ENABLED": "false",
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }
    with ServiceProcess(env, tmp_path, workers=1) as svc:
        posted = requests.post(
            f"{svc.base}/api/v1/contents/a/comments",
            json={"body": text},
            headers={"Authorization": f"Bearer {signer.token(subject, email=email, name=name)}"},
            timeout=10,
        )
        assert posted.status_code == 201
        assert posted.json()["author"]["name"] == name  # the token's claims were used
        (line,) = access_for(svc, posted.headers["X-Request-ID"])
        assert line["identity_id"] == subject
        log = svc.log()
    for personal in (email, name, text):
        assert personal not in log


def test_no_credentials_in_logs(service: ServiceProcess) -> None:
    secret = uuid.uuid4().hex
    refused = requests.get(
        f"{service.base}/api/v1/contents/a/comments?access_token=tok-{secret}", timeout=10
    )
    assert refused.status_code == 400  # a token in the URL is refused, not used
    unknown_key = requests.get(
        f"{service.base}/api/v1/moderation/comments",
        headers={
            "Authorization": f"Bearer cak_{secret}",
            "Cookie": f"session=cookie-{secret}",
            "X-Api-Key": f"key-{secret}",
        },
        timeout=10,
    )
    assert unknown_key.status_code == 401
    for response in (refused, unknown_key):
        # Waited for one by one: another worker's later line does not mean these are out.
        access_for(service, response.headers["X-Request-ID"])
    assert secret not in service.log()


def test_text_format_for_humans(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "text",
        # A host in another zone: the log's times are UTC and say so all the same.
        "TZ": "America/New_York",
    }
    with ServiceProcess(env, tmp_path, workers=1) as svc:
        before = datetime.now(UTC)
        rid = requests.get(f"{svc.base}/healthz", timeout=10).headers["X-Request-ID"]
        assert wait_until(lambda: f"request_id={rid}" in svc.log(), 10)
    line = next(x for x in svc.log().splitlines() if f"request_id={rid}" in x)
    assert "comments_api.access: request" in line
    assert "route=/healthz" in line
    assert "status=200" in line
    stamp = line.split(" ", 1)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), line
    logged = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((logged - before).total_seconds()) < 10


@pytest.mark.parametrize(
    "subject",
    [
        "x status=200 route=/healthz",
        # A subject holds no control character, but may hold U+2028 (where splitlines()
        # and JavaScript end a line: written raw inside the quotes, the line read back as
        # two, the second starting "status=200") and a bidi override (which reorders the
        # rest of the line on screen).
        "x\u2028status=200 route=/healthz",
        "x\u202eroute=/healthz",
        # The Arabic letter mark is a bidi control too (an invisible right-to-left mark, as
        # U+200F is): written bare, the value shown was not the value logged.
        "x\u061croute=/healthz",
    ],
)
def test_a_text_line_holds_only_the_fields_we_wrote(tmp_path: Path, subject: str) -> None:
    """A token's subject is the issuer's (a site's login backend may use the reader's own
    user name): written bare, "x status=200 route=/healthz" gave the access line a second
    status and route, which the reader of the line (or a key=value parser, last one wins)
    took for the request's."""
    signer = hs_signer()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "text",
        "RATELIMIT_ENABLED": "false",
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }
    with ServiceProcess(env, tmp_path, workers=1) as svc:
        answer = requests.post(
            f"{svc.base}/api/v1/contents/a/comments",
            json={"body": "my comment"},
            headers={"Authorization": f"Bearer {signer.token(subject)}"},
            timeout=10,
        )
        assert answer.status_code == 201
        rid = answer.headers["X-Request-ID"]
        assert wait_until(lambda: f"request_id={rid}" in svc.log(), 10)
    line = next(x for x in svc.log().splitlines() if f"request_id={rid}" in x)
    assert not {"\u2028", "\u202e", "\u061c"} & set(line), line
    # key=value pairs as logfmt reads them: a value is bare, or a quoted JSON string.
    pairs = re.findall(r'(?:^| )([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ ]*)', line.split(": request", 1)[1])
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), line
    fields = {key: json.loads(v) if v.startswith('"') else v for key, v in pairs}
    assert fields["status"] == "201"
    assert fields["route"] == "/api/v1/contents/<content_id>/comments"
    assert fields["identity_id"] == subject


def test_application_logs_in_a_request_carry_its_id(make_app) -> None:
    import io
    import logging

    from comments_api.telemetry.log_format import JsonFormatter

    app = make_app()

    def noisy() -> str:
        logging.getLogger("comments_api.test").warning("something odd")
        return "ok"

    app.add_url_rule("/_test/noisy", "noisy", noisy)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("comments_api.test")
    logger.addHandler(handler)
    try:
        response = app.test_client().get("/_test/noisy", headers={"X-Request-ID": "trace-42"})
    finally:
        logger.removeHandler(handler)
    assert response.headers["X-Request-ID"] == "trace-42"
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["message"] == "something odd"
    assert line["level"] == "warning"
    assert line["request_id"] == "trace-42"


def test_gunicorn_logger_interface() -> None:
    # GunicornLogger overrides gunicorn's public logger-class interface (checked against
    # gunicorn 27.0.1): if a new gunicorn renames access() or access_log_enabled, or its
    # workers stop calling access(), our override would silently stop suppressing
    # gunicorn's own (path-leaking) access lines. Fail here instead.
    import inspect

    from gunicorn import glogging
    from gunicorn.config import Config
    from gunicorn.workers import sync

    from comments_api.telemetry import GunicornLogger

    params = list(inspect.signature(glogging.Logger.access).parameters)
    assert params == ["self", "resp", "req", "environ", "request_time"]
    assert isinstance(inspect.getattr_static(glogging.Logger, "access_log_enabled"), property)
    assert "self.log.access(" in inspect.getsource(sync.SyncWorker)

    # Building one configures gunicorn's loggers and captures warnings in this process:
    # put back as found, for the tests after this one.
    loggers = [logging.getLogger(name) for name in ("gunicorn.error", "gunicorn.access")]
    before = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    capturing = warnings.showwarning.__module__ == "logging"  # captureWarnings(True) is on
    try:
        cfg = Config()
        cfg.set("accesslog", None)
        ours = GunicornLogger(cfg)
        assert ours.access_log_enabled is False
        assert ours.access(None, None, {}, None) is None
    finally:
        for lg, handlers, level, propagate in before:
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
        logging.captureWarnings(capturing)


def test_fields_give_the_same_line_as_extra() -> None:
    # The access line passes its fields as one Fields argument (cheaper than extra=);
    # both spellings must produce the same JSON line.
    import logging

    from comments_api.telemetry.log_format import Fields, JsonFormatter

    fields = {"method": "GET", "route": "/x", "status": 200, "identity_id": None}
    via_extra = logging.LogRecord("comments_api.access", logging.INFO, "p", 1, "request", (), None)
    via_extra.__dict__.update(fields)
    via_fields = logging.LogRecord(
        "comments_api.access", logging.INFO, "p", 1, "request", (Fields(fields),), None
    )
    via_fields.created = via_extra.created
    via_fields.process = via_extra.process
    formatter = JsonFormatter()
    assert formatter.format(via_fields) == formatter.format(via_extra)
    assert list(json.loads(formatter.format(via_fields)))[-4:] == list(fields)


def test_the_access_lines_shortcut_writes_what_the_formatter_would() -> None:
    # The access line skips the LogRecord and the logger tree when one JSON handler would
    # take it anyway (JsonLinesHandler.write_info): the same line, time aside.
    import io
    import logging
    import os

    from comments_api.telemetry.log_format import Fields, JsonFormatter, JsonLinesHandler

    fields = Fields(method="GET", route="/x", status=200, request_id="r-1", identity_id=None)
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    handler.write_info("comments_api.access", "request", fields)
    direct = json.loads(stream.getvalue())
    record = logging.LogRecord(
        "comments_api.access", logging.INFO, "", 0, "request", (fields,), None
    )
    via_logging = json.loads(JsonFormatter().format(record))
    assert stream.getvalue().count("\n") == 1
    assert stream.getvalue().endswith("\n")
    assert direct["pid"] == os.getpid()
    assert datetime.fromisoformat(direct.pop("time")) >= datetime.fromisoformat(
        via_logging.pop("time")
    ).replace(microsecond=0)
    assert list(direct.items()) == list(via_logging.items())


def test_the_access_lines_shortcut_only_when_nothing_else_would_see_the_line() -> None:
    import io
    import logging
    import logging.config

    from comments_api.settings import Settings
    from comments_api.telemetry.log_format import direct_handler, logging_config

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    access = logging.getLogger("comments_api.access")
    try:
        logging.config.dictConfig(logging_config(Settings(log_format="json")))
        (handler,) = root.handlers
        assert direct_handler(access) is handler
        extra = logging.StreamHandler(io.StringIO())  # e.g. pytest's caplog
        root.addHandler(extra)
        assert direct_handler(access) is None
        root.removeHandler(extra)
        access.addHandler(extra)
        assert direct_handler(access) is None
        access.removeHandler(extra)
        handler.setLevel(logging.WARNING)
        assert direct_handler(access) is None
        handler.setLevel(logging.NOTSET)
        handler.setFormatter(logging.Formatter("%(message)s"))
        assert direct_handler(access) is None
        logging.config.dictConfig(logging_config(Settings(log_format="text")))
        assert direct_handler(access) is None
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_held_access_lines_are_written_in_order_in_batches_and_on_flush() -> None:
    import io
    import logging

    from comments_api.telemetry.log_format import Fields, JsonLinesHandler

    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    handler.hold()

    def access(n: int) -> None:
        handler.write_info("comments_api.access", "request", Fields(n=n))

    def written() -> list[object]:
        return [json.loads(line).get("n", "other") for line in stream.getvalue().splitlines()]

    access(1)
    access(2)
    assert written() == []
    assert handler.holding() == 2
    # Any other line goes out after the held ones: the log keeps the order of events.
    handler.handle(logging.LogRecord("x", logging.WARNING, "", 0, "odd", (), None))
    assert written() == [1, 2, "other"]
    for n in range(3, 3 + JsonLinesHandler.HOLD_LINES):
        access(n)
    assert written() == [1, 2, "other", *range(3, 3 + JsonLinesHandler.HOLD_LINES)]
    access(99)
    handler.flush()
    assert written()[-1] == 99
    assert handler.holding() == 0
    access(100)
    stream.close()
    handler.flush()  # a closed stdout loses the line, and does not stop the worker's loop
    assert handler.holding() == 0


def test_a_graceful_stop_writes_every_held_access_line(tmp_path: Path) -> None:
    """Under load a sync worker holds access lines and writes them in batches; SIGTERM must
    still leave the line of every request that got an answer."""
    import threading

    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "RATELIMIT_ENABLED": "false",
        "SHUTDOWN_DELAY": "0",
    }
    answered: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        with requests.Session() as session:
            for i in range(2000):
                if stop.is_set():
                    return
                rid = f"held-{n}-{i}"
                try:
                    r = session.get(
                        f"{service.base}/api/comment/list/held",
                        headers={"X-Request-ID": rid},
                        timeout=10,
                    )
                except requests.RequestException:
                    return  # the server stopped listening
                assert r.status_code == 404  # no such content: a cheap, answered request
                answered.append(rid)

    service = ServiceProcess(env, tmp_path, workers=2).start()
    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(answered) >= 300, 20)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(30) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        service.stop()
    logged = {
        r.get("request_id") for r in records(service) if r.get("logger") == "comments_api.access"
    }
    missing = [rid for rid in answered if rid not in logged]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no line"


def test_a_database_errors_traceback_names_the_statement_not_its_values(make_app) -> None:
    """An unexpected SQLAlchemy error is logged with its traceback; SQLAlchemy's message
    would carry the statement's parameters (readers' emails, comment text) into it."""
    import io
    import logging

    from sqlalchemy import text

    from comments_api.telemetry.log_format import JsonFormatter, TextFormatter
    from comments_api.web.common import EXTENSION_KEY

    app = make_app()
    engine = app.extensions[EXTENSION_KEY].repo.engine
    secret = f"reader-{uuid.uuid4().hex[:8]}@example.com"

    def broken() -> str:
        # A real statement the real database refuses (a bug's IntegrityError, not the
        # outage that app.py answers with a 503).
        with engine.connect() as conn:
            conn.execute(text("CREATE TEMPORARY TABLE readers_seen (email TEXT PRIMARY KEY)"))
            for _ in range(2):
                conn.execute(text("INSERT INTO readers_seen (email) VALUES (:e)"), {"e": secret})
        return "unreachable"

    app.add_url_rule("/_test/broken", "broken", broken)
    streams = {fmt: io.StringIO() for fmt in (JsonFormatter, TextFormatter)}
    logger = logging.getLogger("comments_api.web.errors")
    handlers = []
    for fmt, stream in streams.items():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(fmt())
        handlers.append(handler)
        logger.addHandler(handler)
    try:
        response = app.test_client().get("/_test/broken", headers={"X-Request-ID": "db-err-1"})
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert response.status_code == 500
    (line,) = [json.loads(x) for x in streams[JsonFormatter].getvalue().splitlines()]
    assert line["level"] == "error"
    assert line["request_id"] == "db-err-1"
    assert "IntegrityError" in line["exc_info"]
    assert "INSERT INTO readers_seen" in line["exc_info"]  # the statement says what failed
    assert secret not in line["exc_info"]
    assert "INSERT INTO readers_seen" in streams[TextFormatter].getvalue()
    assert secret not in streams[TextFormatter].getvalue()


@contextlib.contextmanager
def database_down(workdir: Path, **env: str) -> Iterator[ServiceProcess]:
    """`comments-api serve` whose database is unreachable (by default a PostgreSQL where
    nothing listens, port 1), answering /healthz: stopped on leaving, its log still
    readable."""
    svc = ServiceProcess(
        {
            "DATABASE_URL": "postgresql+psycopg://app:pw@127.0.0.1:1/comments",
            "MIGRATE_ON_START": "false",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "RATELIMIT_ENABLED": "false",
            "SHUTDOWN_DELAY": "0",
            **env,
        },
        workdir,
        workers=1,
    )
    # Not svc.start(): it waits for /readyz, which this instance never passes.
    svc._log = open(svc.log_path, "ab")  # noqa: SIM115 - closed by svc.stop()
    svc.proc = subprocess.Popen(
        [str(VENV_BIN / "comments-api"), "serve"],
        env=svc.env,
        cwd=workdir,
        stdout=svc._log,
        stderr=subprocess.STDOUT,
    )
    try:

        def answers() -> bool:
            try:
                return requests.get(f"{svc.base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(answers, 30), svc.log()
        yield svc
    finally:
        svc.stop()


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_line_quoting_bytes_that_are_not_utf8_is_written_escaped(
    tmp_path: Path, log_format: str
) -> None:
    """DATABASE_URL names a directory that is not UTF-8 (byte 0xFF; Python reads it from
    the environment as a lone surrogate) and cannot be made: its error line could not be
    encoded, so it was lost, and logging printed '--- Logging error ---' and two
    tracebacks to stderr instead."""
    (tmp_path / "a-file").write_text("")
    unmakeable = tmp_path / "a-file" / "db-\udcff" / "comments.db"
    with database_down(tmp_path, DATABASE_URL=f"sqlite:///{unmakeable}", LOG_FORMAT=log_format):
        pass
    (path,) = tmp_path.glob("serve-*.log")
    log = path.read_bytes().decode("utf-8")  # strictly UTF-8, every byte of it
    assert "Logging error" not in log
    assert "Traceback" not in log
    (line,) = [x for x in log.splitlines() if "cannot create the database directory" in x]
    if log_format == "json":
        assert all(json.loads(x) for x in log.splitlines() if x.strip())
        assert json.loads(line)["level"] == "error"
        line = json.loads(line)["message"]
    assert "db-\\udcff" in line  # the byte, escaped


def test_a_warning_repeated_by_every_probe_is_logged_once_a_minute(tmp_path: Path) -> None:
    """With the database down, every /readyz probe and every /metrics scrape warns
    "readiness: database unreachable": one line, then silence, not one per probe."""
    with database_down(tmp_path) as svc:
        for _ in range(5):
            assert requests.get(f"{svc.base}/readyz", timeout=10).status_code == 503
        requests.get(f"{svc.base}/metrics", timeout=10)
        rid = requests.get(f"{svc.base}/healthz", timeout=10).headers["X-Request-ID"]
        access_for(svc, rid)  # every earlier line is written by now
    warnings = [r for r in records(svc) if r["message"].startswith("readiness: database")]
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "warning"
    probes = [
        r
        for r in records(svc)
        if r.get("logger") == "comments_api.access" and r.get("route") == "/readyz"
    ]
    assert [r["status"] for r in probes] == [503] * 5  # every probe still has its line


def test_a_5xx_request_line_is_an_error_and_a_4xx_is_not(tmp_path: Path) -> None:
    """An operator searches "level":"error": every request we failed is there, with the
    request id its other error lines carry, even under LOG_LEVEL=warning; client
    mistakes are not."""
    with database_down(tmp_path, LOG_LEVEL="warning") as svc:
        failed = requests.get(
            f"{svc.base}/api/v1/contents/a/comments",
            headers={"X-Request-ID": "ingress-5xx-1"},
            timeout=10,
        )
        assert failed.status_code == 503
        assert failed.headers["X-Request-ID"] == "ingress-5xx-1"
        refused = requests.get(f"{svc.base}/api/v1/contents/a/comments?limit=x", timeout=10)
        assert refused.status_code == 400
        (line,) = access_for(svc, "ingress-5xx-1")
    assert line["level"] == "error"
    assert line["status"] == 503
    by_id = [r for r in records(svc) if r.get("request_id") == "ingress-5xx-1"]
    assert {r["logger"] for r in by_id} == {"comments_api.app", "comments_api.access"}
    assert all(r["level"] == "error" for r in by_id)
    assert not [r for r in records(svc) if r.get("status") == 400]


def test_repeated_warnings_count_what_they_left_out_and_never_hold_back_errors() -> None:
    import logging
    import time

    from comments_api.telemetry.log_format import Fields, RepeatedWarnings

    repeats = RepeatedWarnings()
    repeats.WINDOW = 0.3

    def record(level: int, msg: str, *args: object, **fields: object) -> logging.LogRecord:
        made = logging.LogRecord("comments_api.x", level, "", 0, msg, args, None)
        made.__dict__.update(fields)
        return made

    def down(rid: str) -> logging.LogRecord:
        return record(logging.WARNING, "storage down: %s", "Timeout", request_id=rid)

    assert repeats.filter(down("r1"))
    # The same warning in other requests: left out for the window.
    assert [repeats.filter(down(f"r{n}")) for n in range(2, 5)] == [False] * 3
    # Other arguments or fields are another warning; errors and info lines always pass.
    assert repeats.filter(record(logging.WARNING, "storage down: %s", "Refused"))
    assert repeats.filter(record(logging.WARNING, "refused", status=408))
    assert repeats.filter(record(logging.WARNING, "refused", status=413))
    assert all(repeats.filter(record(logging.ERROR, "failed", request_id="e")) for _ in "ab")
    access = logging.LogRecord(
        "comments_api.access", logging.INFO, "", 0, "request", (Fields(status=200),), None
    )
    assert all(repeats.filter(access) for _ in "ab")
    time.sleep(0.35)
    again = down("r9")
    assert repeats.filter(again)
    assert again.repeated == 3  # type: ignore[attr-defined]
    assert not repeats.filter(down("r10"))


def test_lines_stay_whole_on_a_shared_pipe_read_slowly(tmp_path: Path) -> None:
    """A container's stdout is a pipe shared by every worker, read by the runtime or a log
    shipper that may fall behind. A write of more than PIPE_BUF bytes to a full pipe goes
    in pieces, and another worker's line can land between them: held access lines written
    32 at a time (about 11 KB) came out cut in two."""
    import threading
    import time

    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "RATELIMIT_ENABLED": "false",
        "SHUTDOWN_DELAY": "0",
    }
    svc = ServiceProcess(env, tmp_path, workers=4)
    proc = subprocess.Popen(
        [str(VENV_BIN / "comments-api"), "serve"],
        env=svc.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    out = proc.stdout
    chunks: list[bytes] = []
    slow = threading.Event()
    slow.set()

    def reader() -> None:  # about 130 KB/s while the clients run: the pipe fills up
        while chunk := out.read1(4096):
            chunks.append(chunk)
            if slow.is_set():
                time.sleep(0.03)

    reading = threading.Thread(target=reader, daemon=True)
    reading.start()
    answered = []
    try:

        def ready() -> bool:
            try:
                return requests.get(f"{svc.base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(ready, 30)
        until = time.monotonic() + 5

        def client() -> None:
            with requests.Session() as session:
                while time.monotonic() < until:
                    r = session.get(
                        f"{svc.base}/healthz", headers={"X-Request-ID": "p" * 100}, timeout=10
                    )
                    answered.append(r.status_code)

        clients = [threading.Thread(target=client) for _ in range(12)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(30)
    finally:
        slow.clear()
        proc.terminate()
        proc.wait(30)
        reading.join(10)
    lines = b"".join(chunks).decode("utf-8").splitlines()
    broken = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            broken.append(line)
    assert len(answered) > 500  # enough traffic that the pipe was full
    assert not broken, f"{len(broken)} of {len(lines)} lines broken, e.g. {broken[0][:300]}"
    assert sum('"route":"/healthz"' in line for line in lines) == len(answered)


def test_an_unhandled_errors_line_names_the_route_as_its_access_line_does(make_app) -> None:
    import io
    import logging

    from comments_api.telemetry.log_format import JsonFormatter

    app = make_app()

    def boom(n: int) -> str:
        raise RuntimeError(f"bug for item {n}")

    app.add_url_rule("/_test/boom/<int:n>", "boom", boom)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("comments_api")  # the error's logger and the access line's
    logger.addHandler(handler)
    try:
        response = app.test_client().get("/_test/boom/7", headers={"X-Request-ID": "boom-7"})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "boom-7"
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    (error,) = [x for x in lines if x["logger"] == "comments_api.web.errors"]
    (access,) = [x for x in lines if x["logger"] == "comments_api.access"]
    assert error["level"] == access["level"] == "error"
    assert error["request_id"] == access["request_id"] == "boom-7"
    assert (error["method"], error["route"]) == (access["method"], access["route"])
    assert access["route"] == "/_test/boom/<n>"
    assert "RuntimeError: bug for item 7" in error["exc_info"]


def test_a_request_aborted_by_the_worker_timeout_keeps_its_request_id(tmp_path: Path) -> None:
    """A create stuck past WORKER_TIMEOUT (SQLite's write lock held by the test): the
    worker's 500, its "request aborted" line and the app's request line carry one id, the
    one the ingress sent. The 500 and the error line used to get a new one, so the
    client's report and the server's lines could not be put together."""
    import sqlite3

    database_file = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{database_file}",
        "LOG_FORMAT": "json",
        "RATELIMIT_ENABLED": "false",
        "WORKER_TIMEOUT": "2",
        "DB_STATEMENT_TIMEOUT": "30",
        # The sync worker: a threaded one is not aborted (its main loop still beats).
        "THREADS": "1",
    }
    rid = f"ingress-{uuid.uuid4().hex}"
    with ServiceProcess(env, tmp_path, workers=1) as svc:
        held = sqlite3.connect(database_file, timeout=5)
        try:
            held.execute("BEGIN IMMEDIATE")  # the write lock, until rollback
            answer = requests.post(
                f"{svc.base}/api/v1/contents/stuck/comments",
                json={"body": "stuck"},
                headers={"X-Request-ID": rid},
                timeout=20,
            )
        finally:
            held.rollback()
            held.close()
        assert answer.status_code == 500, answer.text
        assert answer.headers["X-Request-ID"] == rid
        aborted: list[dict] = []

        def logged() -> bool:
            aborted[:] = [r for r in records(svc) if r.get("message", "").startswith("request ab")]
            return bool(aborted)

        assert wait_until(logged, 10)
        assert [r["request_id"] for r in aborted] == [rid]
        assert [r["status"] for r in access_for(svc, rid)] == [500]


def test_debug_lines_never_quote_a_requests_path(tmp_path: Path) -> None:
    """At LOG_LEVEL=debug gunicorn's default pre_request hook logged every request's raw
    path: an email in a legacy list's path, a token someone put in a URL."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
        "RATELIMIT_ENABLED": "false",
    }
    marker = f"reader-{uuid.uuid4().hex[:8]}@example.com"
    rid = f"debug-{uuid.uuid4().hex}"
    with ServiceProcess(env, tmp_path, workers=1) as svc:
        answer = requests.get(
            f"{svc.base}/api/comment/list/{marker}", headers={"X-Request-ID": rid}, timeout=5
        )
        assert answer.status_code in (200, 400, 404)
        assert access_for(svc, rid)  # the request was logged, by its route
        assert any(r.get("level") == "debug" for r in records(svc))  # debug is on
        assert marker not in svc.log()


def test_plain_gunicorn_logs_python_warnings_as_json_lines(tmp_path: Path) -> None:
    """`gunicorn -c python:comments_api.gunicorn_conf comments_api.wsgi:app` (no `serve`):
    a Python warning in a worker is a JSON line like every other, as under `serve`, not
    unstructured text on stderr. The warning is raised by a sitecustomize in each worker
    right after its fork (nothing in the app warns on purpose)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, warnings\n"
        "os.register_at_fork(after_in_child=lambda: warnings.warn('odd-worker-warning'))\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "1",
        "LOG_LEVEL": "info",
        "LOG_FORMAT": "json",
        "RATELIMIT_ENABLED": "false",
    }
    subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"], env=env, check=True, capture_output=True
    )
    out = tmp_path / "gunicorn.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "gunicorn"),
                "-c",
                "python:comments_api.gunicorn_conf",
                "comments_api.wsgi:app",
            ],
            env={**env, "PYTHONPATH": str(site)},
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
                except requests.RequestException:
                    return False

            assert wait_until(ready, 30), out.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    lines = out.read_text().splitlines()
    warned = [line for line in lines if "odd-worker-warning" in line]
    assert warned, lines
    for line in warned:
        record = json.loads(line)  # not stderr's "file:line: UserWarning: ..." text
        assert record["level"] == "warning"
        assert record["logger"] == "py.warnings"
