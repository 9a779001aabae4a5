"""A git server over HTTPS for cohort's tests: git's smart HTTP protocol from the real
`git http-backend`, behind TLS with the certificate it is given.

It listens on 127.0.0.1 (or the address in GIT_SERVER_BIND, e.g. a bridge's address that pods
can reach) on a port the OS picks and prints that port on its first line of output (binding
port 0 here leaves no window for another process to take the port).

With GIT_SERVER_AUTH=USER:SECRET every request must carry that basic authentication (401
otherwise), and pushes are taken from that user; without it, pushes are refused unless a
repository's config says `http.receivepack true`, as with git's own server.

Usage: git_https_server.py ROOT [CERT KEY]
  ROOT  the directory holding the bare repositories served (https://127.0.0.1:PORT/NAME.git)
  CERT  the server's certificate chain (PEM); KEY its private key (PEM); without them it
        speaks plain HTTP
"""

import base64
import http.server
import os
import ssl
import subprocess
import sys


class GitBackend(http.server.BaseHTTPRequestHandler):
    # Content-Length on every answer keeps connections alive and ends each body cleanly.
    protocol_version = "HTTP/1.1"
    root = ""

    def answer(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        user = ""
        auth = os.environ.get("GIT_SERVER_AUTH")
        if auth:
            expected = "Basic " + base64.b64encode(auth.encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            user = auth.split(":", 1)[0]
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=self.root,
            GIT_HTTP_EXPORT_ALL="1",
            PATH_INFO=path,
            QUERY_STRING=query,
            REQUEST_METHOD=self.command,
            CONTENT_TYPE=self.headers.get("Content-Type") or "",
            CONTENT_LENGTH=str(len(body)),
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding") or "",
            HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol") or "",
            REMOTE_ADDR="127.0.0.1",
            REMOTE_USER=user,
        )
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True
        ).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    do_GET = answer
    do_POST = answer

    def log_message(self, format, *args):
        pass


def main():
    root = sys.argv[1]
    GitBackend.root = os.path.abspath(root)
    bind = os.environ.get("GIT_SERVER_BIND", "127.0.0.1")
    server = http.server.ThreadingHTTPServer((bind, 0), GitBackend)
    if len(sys.argv) >= 4:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
