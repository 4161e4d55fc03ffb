#!/bin/sh
# Container entrypoint (PID 1 is tini, which runs this script and reaps zombies).
#   no arguments, or a first argument starting with "-"  ->  heretic run ARGS...
#   run | status | upload | preflight ...                 ->  heretic ARGS...
#   anything else (bash, python, heretic ...)             ->  run as given
# Every branch `exec`s, so the final program replaces this shell and receives SIGTERM from
# `docker stop` (through tini) directly: heretic then stops after the current trial.
set -eu

if [ "$#" -eq 0 ]; then
    set -- heretic run
else
    case "$1" in
        -*) set -- heretic run "$@" ;;
        run | status | upload | preflight) set -- heretic "$@" ;;
        *) ;;
    esac
fi

exec "$@"
