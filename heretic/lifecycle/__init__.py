"""Lifecycle of an unattended run: state on disk, signals, upload, notification, shutdown.

Everything here works with or without the container. The state lives in the study folder
(progress.json, heretic.log, DONE.json next to the Optuna journal), so a restarted process on
the same folder can tell what happened and resume; nothing here prints or exits.
"""
