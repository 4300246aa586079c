"""Test only (make compose-check): docker-compose.yml as the engine here can run it.

Compose cannot combine `network_mode: host` (tests/compose/override.yml) with the
`networks:` of the user's file, and Compose v1 has no `!reset` to drop them in an
override. So this writes a copy without them: every service's `networks` and
`ports` (host networking publishes nothing) and the top-level `networks`; the
build context becomes the absolute path of the repository. All else is kept as is.

    python host_network.py docker-compose.yml OUT.yml
"""
import sys
from pathlib import Path

import yaml


def host_network(compose: dict, root: Path) -> dict:
    """The compose mapping without networks or published ports; build contexts absolute."""
    out = {k: v for k, v in compose.items() if k != "networks"}
    services = {}
    for name, service in compose["services"].items():
        s = {k: v for k, v in service.items() if k not in ("networks", "ports")}
        if isinstance(s.get("build"), str):
            s["build"] = str((root / s["build"]).resolve())
        services[name] = s
    out["services"] = services
    return out


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    data = host_network(yaml.safe_load(source.read_text()), source.resolve().parent)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
