"""A throwaway Dovecot for tests: a generated config in a scratch directory, IMAP on a free
loopback port, one passwd-file user with a Maildir; stopped and removed afterwards.

Needs Debian's ``dovecot-imapd`` (``/usr/sbin/dovecot``). Tests skip without it, unless
``LANEDESK_REQUIRE_DOVECOT`` is set (CI): then they fail.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

DOVECOT = Path("/usr/sbin/dovecot")
USERNAME = "desk@example.test"
PASSWORD = "correct horse battery"
START_SECONDS = 10.0

CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = lanedesk-test-{port}
log_path = {dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def require_dovecot() -> None:
    """Skip the calling test when Dovecot is not installed (fail instead in CI)."""
    if DOVECOT.exists():
        return
    reason = f"Dovecot is not installed ({DOVECOT}; Debian: apt-get install dovecot-imapd)"
    if os.environ.get("LANEDESK_REQUIRE_DOVECOT"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class Dovecot:
    host: str
    port: int
    username: str
    password: str
    directory: Path

    def client(self) -> Any:
        """A logged-in IMAPClient (use it in ``with``)."""
        client = IMAPClient(self.host, self.port, ssl=False, timeout=10)
        client.login(self.username, self.password)
        return client

    def log(self) -> str:
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_dovecot(*, extra_config: str = "") -> Iterator[Dovecot]:
    """Start Dovecot (``dovecot -F -c <generated config>``) and stop it after the block."""
    require_dovecot()
    # Not pytest's tmp_path: its 0700 parents would lock out Dovecot's unprivileged processes.
    directory = Path(tempfile.mkdtemp(prefix="lanedesk-dovecot-"))
    try:
        directory.chmod(0o755)
        if os.geteuid() == 0:  # mail and services run as Debian's dovecot users, never as root
            mail_user, login_user = pwd.getpwnam("dovecot"), "dovenull"
        else:  # unprivileged: everything runs as us
            mail_user = pwd.getpwuid(os.getuid())
            login_user = mail_user.pw_name
        home = directory / "mail"
        home.mkdir()
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        (directory / "users").write_text(
            f"{USERNAME}:{{PLAIN}}{PASSWORD}:{mail_user.pw_uid}:{mail_user.pw_gid}::{home}\n"
        )
        port = _free_port()
        config = directory / "dovecot.conf"
        config.write_text(
            CONFIG.format(
                dir=directory,
                port=port,
                uid=mail_user.pw_uid,
                gid=mail_user.pw_gid,
                internal_user=mail_user.pw_name,
                internal_group=grp.getgrgid(mail_user.pw_gid).gr_name,
                login_user=login_user,
            )
            + extra_config
        )
        server = Dovecot("127.0.0.1", port, USERNAME, PASSWORD, directory)
        with open(directory / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            _wait_until_listening(process, server)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(process: subprocess.Popen[bytes], server: Dovecot) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection((server.host, server.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    stderr = (server.directory / "stderr.log").read_text(errors="replace")
    raise RuntimeError(f"Dovecot did not start (exit {process.poll()}):\n{stderr}\n{server.log()}")
