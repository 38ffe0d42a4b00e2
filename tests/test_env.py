"""netlab.env: what this machine can do, and setup(), the first call of every notebook."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netlab import env
from netlab.servers import NetlabError
from netlab.supervisor import python_env

LOW = 256          # macOS's default soft limit; most Linux desktops give 1024

SETUP_UNDER_A_LOW_LIMIT = f"""
import resource, netlab
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW}, hard))
netlab.setup()
print("LIMIT", resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
"""


@pytest.mark.skipif(env.fd_limit() is None or env.fd_limit()[1] <= LOW,
                    reason="needs a hard open-file limit above 256 (ulimit -Hn)")
def test_setup_raises_a_laptops_soft_fd_limit_to_the_hard_one():
    out = subprocess.run([sys.executable, "-c", SETUP_UNDER_A_LOW_LIMIT], capture_output=True,
                         text=True, env=python_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    soft, hard = map(int, out.stdout.split("LIMIT", 1)[1].split())
    assert soft == hard and soft != LOW
    assert f"raised this process's open-file limit from {LOW}" in out.stdout


def test_need_names_the_install_command(monkeypatch):
    monkeypatch.setattr(env.shutil, "which", lambda name: None)
    with pytest.raises(NetlabError, match=r"wrk is not installed: apt-get install wrk \(x\)"):
        env.need("wrk", "x")
