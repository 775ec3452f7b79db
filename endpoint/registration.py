"""An endpoint's registration with the service: who it is, and how it reaches it.

Written at ``funcx-endpoint configure``/``start`` (cli.py) and read by the
daemon before the agent starts: the endpoint's id, its CurveZMQ keypair (kept
0600 in its folder), the service's public key and ZeroMQ address, its HTTP(S)
origin and the token of its WebSocket link. Apart from the agent, which only
reads it: registering is the CLI's business.
"""

from __future__ import annotations

import json
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

import zmq

from funcx_flows.endpoint.config import EndpointConfig
from funcx_flows.home import write_secret


@dataclass(frozen=True)
class Registration:
    endpoint_id: str
    zmq_url: str
    service_public_key: str
    public_key: str
    secret_key: str
    service_url: str = ""  # the HTTP(S) origin it registered with
    link_token: str = ""  # its secret for the WebSocket link


def link_transport(config: EndpointConfig, reg: Registration) -> str:
    """``zmq`` or ``websocket``: ``auto`` takes the WebSocket when the service is
    reached over https:// (one port, through any proxy that passes HTTPS)."""
    if config.link != "auto":
        return str(config.link)
    return "websocket" if reg.service_url.startswith("https://") else "zmq"


def load_or_create_keys(folder: Path) -> tuple[str, str]:
    path = folder / "curve.json"
    try:
        data = json.loads(path.read_text())
        return str(data["public"]), str(data["secret"])
    except (OSError, ValueError, KeyError):
        public, secret = zmq.curve_keypair()
        write_secret(path, json.dumps({"public": public.decode(), "secret": secret.decode()}))
        return public.decode(), secret.decode()


def host_metadata() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "python": platform.python_version(),
            "platform": platform.platform()}
