"""mama-ssh: a GIT_SSH_COMMAND wrapper that adds per-host SSH multiplexing and keepalives.

It adds only what the user has not configured, pre-warms one master per host so parallel git
operations authenticate once, keeps cross-process state under file locks, and on any failure of
its own runs plain ssh with the original arguments.
"""

__version__ = "0.1.0"
