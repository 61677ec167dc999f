"""A small live page of what runs: nodes, workers, actors, tasks and objects.

``init(dashboard=True)`` starts it in the driver; ``actorkit dashboard`` starts
it for the node ``actorkit start`` started.  It is the standard library's
HTTP server on loopback, in a daemon thread, and every request must carry
the token printed once at start (``http://127.0.0.1:PORT/?token=...``), so
other users of the machine cannot read it.  The page fetches
``/api/state?token=...`` (the state API's rows, as JSON) every two seconds
and redraws its tables; it needs no JavaScript library.
"""

from __future__ import annotations

import hmac
import html
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

KINDS = ("nodes", "workers", "actors", "tasks", "objects")
MAX_ROWS = 200  # per table: the page stays light on a busy node

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>actorkit</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.4em; }
 table { border-collapse: collapse; width: 100%%; }
 th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px; }
 th { background: #f3f3f3; } .muted { color: #888; }
 .ALIVE, .RUNNING, .FINISHED { color: #17803d; } .DEAD, .FAILED { color: #b42318; }
</style></head>
<body><h1>actorkit <span class="muted" id="summary">%(summary)s</span></h1>
%(tables)s
<script>
const token = new URLSearchParams(location.search).get("token");
const columns = %(columns)s;
function cell(v) { const td = document.createElement("td"); const s = v === null ? "" : (typeof v === "object" ? JSON.stringify(v) : String(v)); td.textContent = s; td.className = s; return td; }
async function refresh() {
  try {
    const state = await (await fetch("/api/state?token=" + encodeURIComponent(token))).json();
    for (const kind of Object.keys(columns)) {
      const body = document.getElementById(kind);
      body.replaceChildren(...state[kind].map(row => { const tr = document.createElement("tr"); columns[kind].forEach(c => tr.appendChild(cell(row[c]))); return tr; }));
      document.getElementById(kind + "-count").textContent = state[kind].length;
    }
    document.getElementById("summary").textContent = new Date().toLocaleTimeString();
  } catch (e) { document.getElementById("summary").textContent = "node not answering"; }
}
setInterval(refresh, 2000);
</script></body></html>
"""

COLUMNS = {
    "nodes": ["node_id", "state", "node_name", "node_ip", "resources_total", "resources_available"],
    "workers": ["worker_id", "pid", "worker_type", "current_task", "actor_id", "lent"],
    "actors": ["class_name", "name", "state", "pid", "pending_calls", "num_restarts", "actor_id"],
    "tasks": ["name", "state", "type", "worker_pid", "required_resources", "task_id"],
    "objects": ["object_id", "object_size", "reference_count", "type", "task_status"],
}


class Dashboard:
    """The page's server: ``url`` (with its token) once started; ``stop()`` ends it."""

    def __init__(self, client: Any, port: int = 0) -> None:
        self._client = client
        self.token = secrets.token_urlsafe(16)
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.requests = 0
        self._thread = threading.Thread(target=self._server.serve_forever, name="actorkit-dashboard", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def __repr__(self) -> str:
        return f"<Dashboard http://127.0.0.1:{self.port}/ requests={self.requests}>"

    def state(self) -> dict[str, list[dict[str, Any]]]:
        state = {kind: self._client.request("state", kind) for kind in KINDS}
        state["tasks"] = state["tasks"][-MAX_ROWS:]  # the newest
        return {kind: rows[:MAX_ROWS] for kind, rows in state.items()}

    def page(self) -> str:
        state = self.state()
        tables = "".join(_table(kind, state[kind]) for kind in KINDS)
        summary = f"{len(state['nodes'])} node(s), {len(state['workers'])} workers, {len(state['actors'])} actors"
        return _PAGE % {"summary": html.escape(summary), "tables": tables, "columns": json.dumps(COLUMNS)}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _table(kind: str, rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS[kind])
    body = "".join(
        "<tr>" + "".join(f'<td class="{html.escape(str(row.get(c)))}">{html.escape(_text(row.get(c)))}</td>' for c in COLUMNS[kind]) + "</tr>"
        for row in rows
    )
    return (
        f'<h2>{kind} (<span id="{kind}-count">{len(rows)}</span>)</h2>'
        f'<table><thead><tr>{head}</tr></thead><tbody id="{kind}">{body}</tbody></table>'
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        url = urlparse(self.path)
        token = parse_qs(url.query).get("token", [""])[0]
        self.dashboard.requests += 1
        if not hmac.compare_digest(token, self.dashboard.token):
            self._send(403, "text/plain", b"forbidden: open the URL with the token printed when the dashboard started\n")
            return
        try:
            if url.path == "/":
                self._send(200, "text/html; charset=utf-8", self.dashboard.page().encode())
            elif url.path == "/api/state":
                self._send(200, "application/json", json.dumps(self.dashboard.state()).encode())
            else:
                self._send(404, "text/plain", b"not found\n")
        except Exception as e:  # the node went away: say so, do not kill the server
            self._send(503, "text/plain", f"the node does not answer: {e}\n".encode())

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: a page refreshing every 2 s would fill the driver's output
