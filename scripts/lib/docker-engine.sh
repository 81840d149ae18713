# shellcheck shell=bash
# A Docker engine for the scripts that need one (image-test.sh, pipeline-test.sh, deploy.sh):
# sourced, not run.
#
#   . scripts/lib/docker-engine.sh
#   trap docker_engine_stop EXIT         # or call it from the script's own EXIT trap
#   docker_engine_up DATA_ROOT LOG_FILE PID_FILE
#
# docker_engine_up uses an engine that answers `docker info`; otherwise it starts dockerd
# with no bridge and no iptables (containers get host or no networking, never NAT) and
# waits up to 30 s for it. DOCKER_ENGINE_PID is then that dockerd's PID (empty when an
# engine was already running), and docker_engine_stop stops that one only, by PID.

DOCKER_ENGINE_PID=""

docker_engine_up() {
  local data_root=$1 log=$2 pidfile=$3
  if docker info >/dev/null 2>&1; then
    echo "using the running Docker engine"
    return 0
  fi
  if ! command -v dockerd >/dev/null; then
    echo "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)" >&2
    return 1
  fi
  mkdir -p "$data_root" "$(dirname "$log")" "$(dirname "$pidfile")"
  dockerd --data-root "$data_root" --bridge=none --iptables=false --ip6tables=false \
    --pidfile "$pidfile" >"$log" 2>&1 &
  DOCKER_ENGINE_PID=$!
  for _ in $(seq 1 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  if ! docker info >/dev/null 2>&1; then
    tail -n 30 "$log" >&2
    return 1
  fi
  echo "started dockerd (pid $DOCKER_ENGINE_PID, data root $data_root)"
}

# shellcheck disable=SC2329 # called by the caller's EXIT trap
docker_engine_stop() {
  if [ -n "$DOCKER_ENGINE_PID" ] && kill -0 "$DOCKER_ENGINE_PID" 2>/dev/null; then
    echo "stopping the Docker engine this script started (pid $DOCKER_ENGINE_PID)"
    kill "$DOCKER_ENGINE_PID"
    for _ in $(seq 1 100); do kill -0 "$DOCKER_ENGINE_PID" 2>/dev/null || break; sleep 0.2; done
    # Left running, it would hold the data root and the socket the next run starts on.
    if kill -0 "$DOCKER_ENGINE_PID" 2>/dev/null; then
      echo "warning: the Docker engine (pid $DOCKER_ENGINE_PID) is still running 20 s after SIGTERM; stop it: kill -KILL $DOCKER_ENGINE_PID" >&2
    fi
  fi
}
