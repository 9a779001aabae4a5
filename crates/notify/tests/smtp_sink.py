"""A real SMTP server (aiosmtpd) for cohort-notify's email tests.

It listens on 127.0.0.1 on a port the OS picks, prints that port on its first line of output,
and saves each message it accepts to OUT_DIR/<n>.json (envelope, login, decoded headers and
body). Binding port 0 here rather than handing it a port picked by the test leaves no window
for another process to take the port in between.

Usage: smtp_sink.py OUT_DIR [--user U --password P] [--fail-first N]
  --user/--password  advertise AUTH and accept only these credentials (PLAIN or LOGIN)
  --fail-first N     answer the first N messages with a transient 451
"""

import argparse
import asyncio
import email
import email.policy
import json
import pathlib

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Saver:
    def __init__(self, out, fail_first):
        self.out = out
        self.fail_first = fail_first
        self.seen = 0
        self.saved = 0

    async def handle_DATA(self, server, session, envelope):
        self.seen += 1
        if self.seen <= self.fail_first:
            return "451 4.3.0 try again later"
        self.saved += 1
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        login = session.auth_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login.decode() if isinstance(login, bytes) else login,
            "from": str(message["from"]),
            "to": str(message["to"]),
            "subject": str(message["subject"]),
            "content_type": message.get_content_type(),
            "body": message.get_content(),
        }
        # Written aside and renamed, so a reader never sees half a file.
        partial = self.out / f".{self.saved}.json"
        partial.write_text(json.dumps(record))
        partial.rename(self.out / f"{self.saved}.json")
        return "250 2.0.0 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        ):
            return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)

    return check


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()

    handler = Saver(args.out_dir, args.fail_first)
    options = {}
    if args.user is not None:
        # Loopback only, so AUTH without TLS is what the test wants, not a risk.
        options = dict(
            authenticator=authenticator(args.user, args.password),
            auth_required=True,
            auth_require_tls=False,
        )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, **options), host="127.0.0.1", port=0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
