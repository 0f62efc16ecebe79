"""A real HAProxy (Debian's) on 127.0.0.1, run with deploy/haproxy.cfg, its replicas'
names and ports replaced by the test's own relay processes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.smtp import free_port

DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
_SERVER = re.compile(r"^(\s*server (\S+)) \S+:8080 (.*)$", re.MULTILINE)


def config_for(ports: list[int], listen_port: int) -> str:
    """Return deploy/haproxy.cfg pointed at 127.0.0.1: one server line per port."""
    text = DEPLOY_CONFIG.read_text(encoding="utf-8")
    text = text.replace("    bind :8080", f"    bind 127.0.0.1:{listen_port}")
    template = _SERVER.search(text)
    assert template is not None, "deploy/haproxy.cfg has no server line"
    lines = "\n".join(
        f"    server relay{n} 127.0.0.1:{port} {template.group(3)}" for n, port in enumerate(ports)
    )
    return _SERVER.sub("", text).rstrip() + "\n" + lines + "\n"


@dataclass
class HAProxy:
    workdir: Path
    backend_ports: list[int]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HAProxy:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        config = self.workdir / "haproxy.cfg"
        config.write_text(config_for(self.backend_ports, self.port), encoding="utf-8")
        check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True)
        assert check.returncode == 0, check.stderr.decode()
        log = (self.workdir / "haproxy.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("haproxy did not listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
