"""gunicorn's access log, the same lines for less work: gunicorn.conf.py names it as `logger_class`.

gunicorn builds each access line from a dictionary of every header and environ entry, then passes
it through Python's logging: tens of microseconds a request, which `make bench` measures. Where
the log has gunicorn's default format and goes to stdout, AccessLogger writes the same line itself;
any other log setting (a format, a file, syslog, a logging config) gets gunicorn's own way,
unchanged. Error logs are gunicorn's in every case.
"""

import sys
import threading
import time

from gunicorn.glogging import Logger

# gunicorn's default access_log_format, Apache's "combined" log: the one format written here.
COMBINED = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def quoted(value: str) -> str:
    """A value as gunicorn writes it: a double quote escaped, so that it cannot end a quoted field."""
    return value.replace('"', '\\"')


class AccessLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        self.writes_itself = (
            cfg.accesslog == "-"
            and cfg.access_log_format == COMBINED
            and not (cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json or cfg.syslog)
        )
        # The timestamp changes once a second: formatted then, not for every line.
        self.second, self.timestamp = None, ""
        # A line is one write; the lock keeps a threaded worker's lines whole.
        self.lock = threading.Lock()

    def access(self, resp, req, environ, request_time):
        if not self.writes_itself:
            return super().access(resp, req, environ, request_time)
        now = int(time.time())
        if now != self.second:
            self.second, self.timestamp = now, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        sent = getattr(resp, "sent", None)
        request = f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
        fields = (
            quoted(environ.get("REMOTE_ADDR", "-")),
            "-",
            quoted(self._get_user(environ) or "-"),
            self.timestamp,
            f'"{quoted(request)}"',
            quoted(status) if isinstance(status, str) else status,
            "-" if sent is None else sent,
            f'"{quoted(environ.get("HTTP_REFERER", "-"))}"',
            f'"{quoted(environ.get("HTTP_USER_AGENT", "-"))}"',
        )
        line = " ".join(map(str, fields)) + "\n"
        try:
            with self.lock:
                sys.stdout.write(line)
                sys.stdout.flush()
        except Exception:
            # As gunicorn does: a log that cannot be written is reported, and the request is not failed.
            self.exception("Could not write the access log.")
