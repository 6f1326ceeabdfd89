"""A stand-in for the CI provider's runner API (GitHub's shape) for scripts/check-ansible.sh.

Serves on 127.0.0.1 (port in argv[1], 0 for any), writes the port to argv[2], logs each
request as "METHOD PATH" to argv[3], and answers only requests carrying argv[4] as bearer token.
Runners at start: a stale registration of ours (offline), someone else's offline runner and a
busy one of ours; a registration-token request makes the runner "auditflow-k3s" appear online
and idle, as a real runner would after registering.
"""

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, PORT_FILE, LOG, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
RUNNERS = [
    {"id": 1, "name": "auditflow-k3s-old", "status": "offline", "busy": False},
    {"id": 2, "name": "someone-else", "status": "offline", "busy": False},
    {"id": 3, "name": "auditflow-k3s-2", "status": "online", "busy": True},
]
BASE = "/repos/owner/repo/actions/runners"


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(f"{self.command} {self.path}\n")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"message": "Bad credentials"})
        path = self.path.split("?")[0]
        if self.command == "GET" and path == BASE:
            return self.reply(200, {"total_count": len(RUNNERS), "runners": RUNNERS})
        if self.command == "POST" and path == BASE + "/registration-token":
            if not any(r["name"] == "auditflow-k3s" for r in RUNNERS):
                RUNNERS.append({"id": 10, "name": "auditflow-k3s", "status": "online", "busy": False})
            return self.reply(201, {"token": "REGTOKEN-FOR-TEST", "expires_at": "2099-01-01T00:00:00Z"})
        match = re.fullmatch(BASE + r"/(\d+)", path)
        if self.command == "DELETE" and match:
            RUNNERS[:] = [r for r in RUNNERS if r["id"] != int(match.group(1))]
            return self.reply(204)
        return self.reply(404, {"message": "Not Found"})

    do_GET = do_POST = do_DELETE = handle_any

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(PORT_FILE, "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
