"""docker-compose.yml keeps the keys across restarts: every key file a service is told about lies
in a named volume that service mounts (a container's own filesystem goes with the container), and
the image makes those folders for the processes' user alone."""

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ledgerline.stack.anchor_key import PRIVATE_FILE, PUBLIC_FILE

REPO = Path(__file__).resolve().parents[2]
KEY_FILES = ("LEDGERLINE_ANCHOR_KEY_FILE", "LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE", "LEDGERLINE_ANCHOR_FILE",
             "LEDGERLINE_KEYRING")


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def _mounts(service: dict[str, Any], named: set[str]) -> dict[PurePosixPath, tuple[str, bool]]:
    """Folder -> (named volume, writable) of a service's named-volume mounts."""
    out = {}
    for mount in service.get("volumes", []):
        source, target, *mode = mount.split(":")
        assert source in named, f"{mount}: not a named volume"
        out[PurePosixPath(target)] = (source, mode != ["ro"])
    return out


def test_every_key_file_is_in_a_named_volume_its_service_mounts() -> None:
    compose = _compose()
    named = set(compose["volumes"])
    told = {}
    for name, service in compose["services"].items():
        mounts = _mounts(service, named)
        for variable in KEY_FILES:
            path = (service.get("environment") or {}).get(variable)
            if path is None:
                continue
            folder = PurePosixPath(path).parent
            assert folder in mounts, f"{name}: {variable}={path} is not in a volume it mounts"
            told[(name, variable)] = mounts[folder]
    # Who needs what: the processor signs, the command API seals, the projector opens.
    assert told[("processor", "LEDGERLINE_ANCHOR_KEY_FILE")] == ("chain-key", False)
    assert told[("processor", "LEDGERLINE_ANCHOR_FILE")][1]
    assert told[("command-api", "LEDGERLINE_KEYRING")] == ("keyring", True)
    assert told[("projector", "LEDGERLINE_KEYRING")] == ("keyring", True)  # the keyring's lock file
    assert {"chain-key", "anchors", "keyring"} <= named


def test_init_makes_the_signing_key_in_the_processor_s_volume() -> None:
    compose = _compose()
    init, processor = compose["services"]["init"], compose["services"]["processor"]
    key = PurePosixPath(processor["environment"]["LEDGERLINE_ANCHOR_KEY_FILE"])
    assert key.name == PRIVATE_FILE
    assert PurePosixPath(processor["environment"]["LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE"]).name == PUBLIC_FILE
    assert "kept_signing_key" in " ".join(init["entrypoint"]) and str(key.parent) in " ".join(init["entrypoint"])
    assert _mounts(init, set(compose["volumes"]))[key.parent] == ("chain-key", True)


def test_the_image_makes_the_key_folders_for_its_user_only() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    compose = _compose()
    folders = {str(target) for service in compose["services"].values()
               for target in _mounts(service, set(compose["volumes"]))
               if str(target).startswith("/var/lib/ledgerline/")}
    assert folders
    assert "-o ledgerline -g ledgerline -m 0700" in dockerfile
    for folder in folders:
        assert folder in dockerfile
