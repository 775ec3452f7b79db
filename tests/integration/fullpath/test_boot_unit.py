"""`funcx-endpoint enable-on-boot`: the systemd user unit it writes is valid, and its
ExecStart, run as systemd runs it, brings the endpoint online and stops cleanly."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess

from waiting import wait_until


def test_enable_on_boot_writes_a_unit_that_runs_the_endpoint(tmp_path, make_stack):
    config_home = tmp_path / "xdg"
    stack = make_stack(env={"XDG_CONFIG_HOME": str(config_home)})
    stack.configure_endpoint("boot", {"max_workers_per_node": 1})
    stack.env["FUNCX_FLOWS_CA_BUNDLE"] = str(tmp_path / "ca.pem")  # kept for the unit
    out = stack.endpoint_cli("enable-on-boot", "boot")
    del stack.env["FUNCX_FLOWS_CA_BUNDLE"]
    unit = config_home / "systemd" / "user" / "funcx-endpoint-boot.service"
    assert str(unit) in out.stdout and "systemctl --user enable --now" in out.stdout
    env_file = stack.home / "endpoints" / "boot" / "environment"
    kept = env_file.read_text().splitlines()
    assert f"FUNCX_FLOWS_CA_BUNDLE={tmp_path / 'ca.pem'}" in kept
    assert not any(line.startswith("FUNCX_FLOWS_TOKEN") for line in kept)
    assert env_file.stat().st_mode & 0o077 == 0

    if shutil.which("systemd-analyze"):
        checked = subprocess.run(["systemd-analyze", "verify", str(unit)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr

    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read(unit)
    service = parsed["Service"]
    assert service["Restart"] == "on-failure" and service["KillMode"] == "mixed"
    env = {**stack.env, **dict([service["Environment"].split("=", 1)])}
    argv = shlex.split(service["ExecStart"])
    assert os.access(argv[0], os.X_OK)
    daemon = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        client = stack.client()
        wait_until(lambda: any(e["name"] == "boot" and e["state"] == "online"
                               for e in client.list_endpoints()), 60,
                   "the endpoint of the unit to come online")
        client.close()
        daemon.send_signal(signal.SIGTERM)  # systemctl stop
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert stack.endpoint_cli("disable-on-boot", "boot").returncode == 0
    assert not unit.exists()
    again = stack.endpoint_cli("disable-on-boot", "boot", check=False)
    assert again.returncode == 1 and "no systemd unit" in again.stderr
    assert "Traceback" not in again.stderr
