"""Generate the gRPC code from ``proto/`` at build time (``make install``)
or, failing that, on first import, into ``services/proto_gen`` (git-ignored)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services" / "proto_gen"


def generate() -> None:
    from grpc_tools import protoc

    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "__init__.py").write_text(
        '"""Generated from proto/ by services.cluster.protogen."""\n'
    )
    protos = sorted(str(p.name) for p in PROTO_DIR.glob("*.proto"))
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={OUT_DIR}",
            f"--pyi_out={OUT_DIR}",
            f"--grpc_python_out={OUT_DIR}",
            *protos,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    # grpc's generator imports siblings as top-level modules; make them relative
    for f in OUT_DIR.glob("*_grpc.py"):
        text = f.read_text()
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
        f.write_text(text)


def _stale() -> bool:
    newest = max((p.stat().st_mtime for p in PROTO_DIR.glob("*.proto")), default=0.0)
    outs = list(OUT_DIR.glob("*_pb2*.py"))
    return not outs or min(p.stat().st_mtime for p in outs) < newest


def load() -> tuple[ModuleType, ModuleType]:
    """The generated ``xmppd_pb2`` and ``xmppd_pb2_grpc`` modules."""
    if _stale():
        generate()
        for name in ("services.proto_gen.xmppd_pb2", "services.proto_gen.xmppd_pb2_grpc"):
            sys.modules.pop(name, None)
    pb2 = importlib.import_module("services.proto_gen.xmppd_pb2")
    grpc_mod = importlib.import_module("services.proto_gen.xmppd_pb2_grpc")
    return pb2, grpc_mod


if __name__ == "__main__":
    generate()
    print(f"generated into {OUT_DIR}")
