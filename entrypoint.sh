#!/bin/sh
# Container entrypoint (PID 1 is tini, which runs this script and reaps zombies).
#   no arguments, or a first argument starting with "-"  ->  heretic run ARGS...
#   a heretic command (run, demo, preflight, profiles,    ->  heretic ARGS...
#   status, upload, cloud, version, health)
#   anything else (bash, python, heretic ...)             ->  run as given
# Every branch `exec`s, so the final program replaces this shell and receives SIGTERM from
# `docker stop` (through tini) directly: heretic then stops after the current trial.
set -eu

if [ "$#" -eq 0 ]; then
    set -- heretic run
else
    case "$1" in
        -*) set -- heretic run "$@" ;;
        run | demo | preflight | profiles | status | upload | cloud | version | health)
            set -- heretic "$@" ;;
        *) ;;
    esac
fi

exec "$@"
