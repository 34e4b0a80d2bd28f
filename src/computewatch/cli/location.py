"""Location by signed round trips: `computewatch landmark serve`, `computewatch chip locate`,
`computewatch registry add-landmark | site | locate` (docs/registry.md, "Location").

Exit status: `registry locate` exits 0 when the chip is shown inside its declared facility's
radius, 1 on a finding, 2 on unusable input; the others 0 when done, 2 on unusable input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from computewatch.cli import chip as _chip
from computewatch.cli import registry as _registry
from computewatch.cli._common import (
    EXIT_FINDING,
    Command,
    Group,
    check_output_file,
    err,
    fail,
    guard,
    out,
    print_json,
    write_output,
)
from computewatch.cli.registry import DbOption, JsonOption, PubOption, with_registry

__all__ = ["landmark_app"]

landmark_app = typer.Typer(no_args_is_help=True, cls=Group)

LatOption = Annotated[float, typer.Option("--lat", help="Latitude in degrees (north positive).")]
LonOption = Annotated[float, typer.Option("--lon", help="Longitude in degrees (east positive).")]


@landmark_app.command("serve", cls=Command)
def serve(
    key: Annotated[Path, typer.Option("--key", help="The landmark's Ed25519 private key (PEM); it signs every record.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one).")] = 7470,
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=100, help="Round trips per measurement.")] = 5,
) -> None:
    """Run a landmark: send chips fresh nonces, time their signed answers, sign the records."""
    from computewatch.crypto.signing import SigningKey
    from computewatch.landmark import LandmarkServer

    with guard():
        signing = SigningKey.load(key)
    try:
        server = LandmarkServer(signing, host, port, rounds=rounds)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    out.print(f"landmark {signing.public_key.keyid[:16]}... listening on {server.url}", highlight=False)
    sys.stdout.flush()  # the URL line must reach a supervising process before the first chip does
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@_chip.app.command("locate", cls=Command)
def chip_locate(
    chip_dir: Annotated[Path, typer.Argument(help="The chip's state directory.")],
    landmark: Annotated[list[str], typer.Option("--landmark", help="A landmark's tcp://HOST:PORT (repeat for several).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the evidence (JSON).")],
    as_json: JsonOption = False,
) -> None:
    """Prove where the chip is. Boots the chip and appends to its log: it answers each landmark's
    nonces with its device key; each landmark's signed record goes into the evidence and the log."""
    from computewatch.landmark.locate import locate_chip

    check_output_file(out_file)
    if not (chip_dir / "sealed").is_dir():
        fail(f"{chip_dir} is not a chip state directory (no sealed state)", as_json=as_json)
    with guard(as_json=as_json):
        evidence = locate_chip(chip_dir, landmark)
    write_output(out_file, evidence)
    doc = {"out": str(out_file), "landmarks": len(landmark)}
    if as_json:
        print_json(doc)
    else:
        out.print(f"{len(landmark)} landmark record(s) written to {escape(str(out_file))}")


@_registry.app.command("add-landmark", cls=Command)
def add_landmark(name: str, pub: PubOption, lat: LatOption, lon: LonOption, db: DbOption = None,
                 as_json: JsonOption = False) -> None:
    """Register a landmark: its public key and declared coordinates."""
    doc = with_registry(db, as_json, lambda reg: reg.add_landmark(name, pub, lat, lon))
    _registry._done(doc, as_json, f"landmark {escape(name)} registered at {lat:g}, {lon:g} (key {doc['keyid'][:16]}...)")


@_registry.app.command("site", cls=Command)
def site(owner: str, facility: str, lat: LatOption, lon: LonOption, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Declare where an owner's facility is; its chips' location evidence is checked against it."""
    doc = with_registry(db, as_json, lambda reg: reg.set_facility_site(owner, facility, lat, lon))
    _registry._done(doc, as_json, f"{escape(owner)}/{escape(facility)} declared at {lat:g}, {lon:g}")


@_registry.app.command("locate", cls=Command)
def locate(
    serial: str,
    evidence: Annotated[Path, typer.Option("--evidence", help="The evidence file `computewatch chip locate` wrote.")],
    radius_km: Annotated[float | None, typer.Option("--radius-km", min=0.001, help="How far from its declared facility "
                                                       "the chip may be shown to be (default 500).")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a chip's location evidence (both signatures, the chip certificate, fresh nonces) and
    whether its declared facility lies inside every landmark's distance bound; stored in the register."""
    with guard(as_json=as_json):
        data = evidence.read_bytes()
    doc = with_registry(db, as_json, lambda reg: reg.locate(serial, data, radius_km=radius_km))
    if as_json:
        print_json(doc)
    else:
        for name, b in doc["bounds_km"].items():
            out.print(f"  {escape(name)}: RTT {b['rtt_ms']:.3f} ms -> within {b['fibre']:.1f} km (fibre), "
                      f"{b['vacuum']:.1f} km (vacuum)" + (f"; facility {b['facility_km']:.1f} km away" if "facility_km" in b else ""))
        verdict = "inside" if doc["inside"] else f"FINDING: {doc['finding']}"
        out.print(f"{serial} at {escape(str(doc['facility']))}: {escape(verdict)}")
    if not doc["inside"]:
        err.print(f"[red]error:[/red] {serial}: {escape(' '.join(str(doc['finding']).split()))}")
        raise typer.Exit(EXIT_FINDING)


