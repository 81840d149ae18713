# Examples for `semgrep --test .semgrep/`: each `ruleid:` line must be caught, each
# `ok:` line must not. Never imported or run.
import logging
import os
import pickle
import subprocess

import jwt
from flask import Flask, request
from sqlalchemy import text

log = logging.getLogger(__name__)
app = Flask(__name__)

# ruleid: no-werkzeug-debugger
from werkzeug.debug import DebuggedApplication

# ruleid: no-werkzeug-debugger
app.run(debug=True)
# ok: no-werkzeug-debugger
app.run(debug=False)

# ruleid: no-gunicorn-reload
reload = True
# ok: no-gunicorn-reload
reload = False


def sql(conn, name):
    # ruleid: no-sql-string-building
    conn.execute(f"SELECT * FROM comments WHERE author = '{name}'")
    # ruleid: no-sql-string-building
    conn.execute(text(f"SELECT * FROM comments WHERE author = '{name}'"))
    # ok: no-sql-string-building
    conn.execute(text("SELECT * FROM comments WHERE author = :name"), {"name": name})


def logs():
    # ruleid: no-raw-path-or-ip-in-logs
    log.error("unhandled error on %s %s", request.method, request.path)
    # ruleid: no-raw-path-or-ip-in-logs
    log.warning("from %s", request.remote_addr)
    # ok: no-raw-path-or-ip-in-logs
    log.error("unhandled error on %s", request.url_rule.rule)


def shell(name):
    # ruleid: no-shell-subprocess
    subprocess.run(f"echo {name}", shell=True)
    # ruleid: no-shell-subprocess
    os.system("echo hi")
    # ok: no-shell-subprocess
    subprocess.run(["echo", name])


def tokens(token, key):
    # ruleid: no-unverified-jwt
    jwt.decode(token, options={"verify_signature": False})
    # ok: no-unverified-jwt
    jwt.decode(token, key, algorithms=["RS256"])


def data(blob):
    # ruleid: no-unsafe-deserialisation
    return pickle.loads(blob)


_ = DebuggedApplication
