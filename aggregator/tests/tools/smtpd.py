"""A real SMTP server for the notifier's e-mail test: aiosmtpd (PyPI, pinned in
scripts/services.sh) on 127.0.0.1 with STARTTLS required before anything else and AUTH
(PLAIN/LOGIN) required, only over TLS, with one user. Each accepted message is written to
OUT_DIR as <n>.eml; a failed login is answered 535 by aiosmtpd.

    python smtpd.py PORT CERT_PEM KEY_PEM USER PASSWORD OUT_DIR

Prints "ready" once it listens; runs until killed.
"""

import itertools
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main() -> None:
    port, cert, key, user, password, out_dir = sys.argv[1:7]
    counter = itertools.count(1)

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            path = os.path.join(out_dir, f"{next(counter)}.eml")
            with open(path + ".tmp", "wb") as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(path + ".tmp", path)
            return "250 Message accepted for delivery"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=int(port),
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
