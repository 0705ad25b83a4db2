"""gunicorn settings for the production and secure images, all read from the environment."""

import settings

bind = f"0.0.0.0:{settings.PORT}"
workers = settings.WEB_CONCURRENCY
threads = settings.THREADS
# gthread serves `threads` requests at once per worker; with one thread, use the plain sync worker.
worker_class = "gthread" if settings.THREADS > 1 else "sync"
timeout = settings.TIMEOUT
graceful_timeout = settings.GRACEFUL_TIMEOUT

# Workers touch a heartbeat file every second; /dev/shm is memory, and writable on a read-only root.
worker_tmp_dir = "/dev/shm"
# gunicorn 25.1 opens a control socket under $HOME or $XDG_RUNTIME_DIR; nothing here uses it,
# and it cannot be created on a read-only root.
control_socket_disable = True

# Restart each worker after about ten thousand requests, staggered, so a slow leak cannot grow
# forever. Much lower costs throughput: at a thousand, a busy worker re-imports the app every second.
max_requests = 10000
max_requests_jitter = 1000

# Logs go to stdout and stderr, where `docker logs` and every log collector look.
accesslog = "-"
errorlog = "-"
