# comments-api container image. Build with `make image` (public bases) or
# `make image-test` (local stand-in bases, offline); see README, "Container image".
#
# The base images come in as build args so CI can substitute local stand-ins built from
# Debian packages. Both must carry Debian 12's Python 3.11 at /usr/bin/python3.11: the
# venv made in the build stage links to that interpreter, and distroless provides it.
ARG BUILD_BASE=debian:12-slim
ARG RUNTIME_BASE=gcr.io/distroless/python3-debian12:nonroot

# ---------------------------------------------------------------------------------------
FROM ${BUILD_BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# debian:12-slim has neither Python nor strip; a base that already has both (the offline
# stand-in) skips apt, which could not reach a mirror from a `--network none` build.
RUN if ! { /usr/bin/python3.11 -c 'import ensurepip, venv' && command -v strip; } >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3-venv=3.11.2-1+b1 binutils=2.40-2 \
      && rm -rf /var/lib/apt/lists/*; \
    fi

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INDEX=1 \
    PYTHONDONTWRITEBYTECODE=1
# Wheels are downloaded on the host by scripts/image-build.sh (hash-checked against the
# lock here again), so the build itself needs no network.
COPY requirements.lock /build/requirements.lock
COPY build/wheels/ /build/wheels/
COPY scripts/image_pack_venv.py /build/pack_venv.py
# Trim the venv to what runs (issue #5: <= 80 MB): pip and setuptools are build tools;
# debug symbols in extension modules are dead weight (auditwheel's bundled libraries in
# *.libs/ and psycopg_binary are not stripped: stripping patchelf-edited files can break
# them); SQLAlchemy's test harness, its MySQL/MSSQL/Oracle dialects and its asyncio
# extension (we are synchronous; only TYPE_CHECKING blocks and docstrings name it) are never
# used, nor Alembic's test fixtures, redis-py's Redis Stack module clients (search, JSON,
# time series, Bloom, vector sets: imported only inside r.ft()/r.json()/..., which limits
# never calls; checked against redis 8.1.0), nor Swagger UI's unbundled builds and
# template (/docs serves the bundle and CSS only).
# psycopg-binary bundles its own OpenSSL (6.9 MB) although libpq and libldap only use
# symbols of version OPENSSL_3.0.0 (checked here), which the base image's libssl3
# provides: the bundled files become links to it. So do its MIT Kerberos, keyutils,
# com_err and libcrypt (1.7 MB), which Debian 12's Python needs too (libpython3.11-stdlib
# -> libnsl2 -> libtirpc3 -> libgssapi-krb5-2), so distroless python3-debian12 carries
# them; loading libpq with every symbol bound (LD_BIND_NOW) proves the links here, and
# scripts/image_warm_bytecode.py proves them again on the runtime base. Then every module is compiled once
# and shipped sourceless, pure-Python packages in a compressed zip (see the script).
RUN /usr/bin/python3.11 -m venv /venv \
    && /venv/bin/pip install --no-index --find-links /build/wheels \
         --require-hashes -r /build/requirements.lock \
    && /venv/bin/pip install --no-index --no-deps /build/wheels/comments_api-*.whl \
    && /venv/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -f /venv/bin/activate* /venv/bin/Activate.ps1 \
    && site=/venv/lib/python3.11/site-packages \
    && find /venv -name __pycache__ -prune -exec rm -rf {} + \
    && find "$site" \( -path '*.libs' -o -path '*/psycopg_binary' \) -prune \
         -o -name '*.so' -type f -exec strip --strip-unneeded {} + \
    && find "$site" \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' -o -name '*.h' \) -delete \
    && rm -rf "$site"/sqlalchemy/testing "$site"/sqlalchemy/dialects/mysql \
         "$site"/sqlalchemy/dialects/mssql "$site"/sqlalchemy/dialects/oracle \
         "$site"/sqlalchemy/ext/asyncio "$site"/alembic/testing \
         "$site"/redis/commands/search "$site"/redis/commands/json \
         "$site"/redis/commands/timeseries "$site"/redis/commands/bf \
         "$site"/redis/commands/vectorset \
         "$site"/flask_swagger_ui/templates "$site"/flask_swagger_ui/dist/swagger-ui.js \
         "$site"/flask_swagger_ui/dist/swagger-ui-standalone-preset.js \
    && libs="$site"/psycopg_binary.libs \
    && needs=$(find "$libs" "$site"/psycopg_binary -name '*.so*' ! -name 'libcrypto-*' ! -name 'libssl-*' \
         -exec objdump -T {} + | grep -oE 'OPENSSL_[0-9.]+' | sort -u) \
    && if [ "$needs" != OPENSSL_3.0.0 ]; then echo "psycopg-binary needs: $needs" >&2; exit 1; fi \
    && for lib in crypto ssl; do \
         bundled=$(find "$libs" -name "lib${lib}-*.so.3") \
         && test -f "/usr/lib/x86_64-linux-gnu/lib${lib}.so.3" \
         && ln -sf "/usr/lib/x86_64-linux-gnu/lib${lib}.so.3" "$bundled"; \
       done \
    && for pair in krb5:krb5.so.3 gssapi_krb5:gssapi_krb5.so.2 k5crypto:k5crypto.so.3 \
         krb5support:krb5support.so.0 keyutils:keyutils.so.1 com_err:com_err.so.2 crypt:crypt.so.1; do \
         system="/usr/lib/x86_64-linux-gnu/lib${pair#*:}" && test -f "$system" \
         && find "$libs" -name "lib${pair%%:*}-*.so*" -exec ln -sf "$system" {} \; ; \
       done \
    && LD_BIND_NOW=1 PSYCOPG_IMPL=binary /venv/bin/python -I -B -c 'import psycopg; print(psycopg.pq.version())' \
    && /venv/bin/python -I /build/pack_venv.py "$site" \
    && mkdir -p /rootfs/data

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE}
COPY --from=build /venv /venv
# Bytecode for the standard-library modules the server imports (see the script),
# compiled by this image's own interpreter into /usr/lib/python311.zip: a read-only root
# cannot cache it, and compiling at every boot tripled the start time. Root only for this
# step: it writes beside the root-owned standard library.
COPY scripts/image_warm_bytecode.py /tmp/warm_bytecode.py
USER 0
RUN ["/venv/bin/python", "-E", "-B", "/tmp/warm_bytecode.py"]
# The SQLite data directory, owned by the runtime user; a volume in production.
COPY --from=build --chown=65532:65532 /rootfs/data /data

# Configuration is environment only (README, Configuration). HOST=0.0.0.0 so that
# `docker run -p 8000:8000 -e PORT=8000 comments-api` keeps working as documented.
# Runtime files (drain flag, multiprocess metrics) go to /tmp: mount a tmpfs there.
ENV PATH=/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000

# distroless "nonroot": a fixed UID/GID that exists in the image's /etc/passwd.
USER 65532:65532
# From /, the app's default DATABASE_URL (sqlite:///./data/comments.db) is the /data
# volume's file. No DATABASE_URL in ENV: the app refuses it beside DATABASE_URL_FILE, so
# an image default would make every run that reads the URL from a secret file unset it.
WORKDIR /
VOLUME ["/data"]
EXPOSE 8000
# Exec form: no shell in the image. Probes /readyz on this container's own PORT.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/venv/bin/comments-api", "healthcheck"]
# Exec form, so PID 1 is the gunicorn master and SIGTERM starts its graceful stop.
ENTRYPOINT ["/venv/bin/comments-api"]
CMD ["serve"]

# Build metadata last: it changes with every build, so no layer above is rebuilt for it.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/example/comments-api
LABEL org.opencontainers.image.title="comments-api" \
      org.opencontainers.image.description="Comments backend of a news site (Flask + gunicorn)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV GIT_REVISION=${REVISION}
