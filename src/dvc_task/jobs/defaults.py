"""Default values that the job API shares with workers and schedules.

Constants only, so that the API can name them in its signatures without
importing the modules that use them.
"""

from __future__ import annotations

#: Name of the first detached worker; the next ones get ``-2``, ``-3``...
WORKER_NAME = "dvc-task-worker"
#: Seconds a detached worker waits for work before it exits.
IDLE_TIMEOUT_S = 10.0
#: The time zone name of "this machine's zone".
LOCAL = "local"
