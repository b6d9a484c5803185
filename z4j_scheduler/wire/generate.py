"""Regenerate the checked-in protobuf and gRPC modules from ``proto/scheduler.proto``.

Run ``python -m z4j_scheduler.wire.generate`` from a source checkout after
editing the proto; it needs grpcio-tools. The output of protoc is adjusted in
three ways. The gRPC module imports the message module through this package.
The generated classes report this package as their module. The runtime
version checks accept the oldest protobuf and grpcio releases that the
project supports instead of the versions grpcio-tools bundles.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parent.parent / "proto"
PROTO_FILE = "scheduler.proto"
MODULE = "z4j_scheduler.wire.scheduler_pb2"
GENERATED_FILES = ("scheduler_pb2.py", "scheduler_pb2.pyi", "scheduler_pb2_grpc.py")

# The lower bounds of protobuf and grpcio in pyproject.toml.
# NOTE: the generated modules were checked by hand against protobuf 5.27.0
# (upb and pure-Python backends) with grpcio 1.66.0; no test runs them there.
MIN_PROTOBUF = (5, 27, 0)
MIN_GRPCIO = "1.66.0"

_VERSION_COMMENT = re.compile(r"^# Protobuf Python Version: (.*)$", re.MULTILINE)
_RUNTIME_CHECK = re.compile(
    r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*)"
    r"\d+,\s*\d+,\s*\d+,"
)
_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.MULTILINE)
_GRPC_IMPORT = re.compile(r"^import scheduler_pb2 as scheduler__pb2$", re.MULTILINE)
_MODULE_NAME = re.compile(r"BuildTopDescriptorsAndMessages\(DESCRIPTOR, 'scheduler_pb2',")


def generate(output_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc on ``proto_dir/scheduler.proto`` into ``output_dir`` and adjust the output.

    Returns the written files. Raises RuntimeError with protoc's output when
    it fails, or when its output no longer has the shape adjusted here.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    _run_protoc(proto_dir, output_dir)
    paths = [output_dir / name for name in GENERATED_FILES]
    pb2, _, grpc_module = paths
    pb2.write_text(adjust_message_module(pb2.read_text()))
    grpc_module.write_text(adjust_grpc_module(grpc_module.read_text()))
    return paths


def find_stale_files(scratch_dir: Path, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Regenerate into ``scratch_dir`` and return the names of checked-in files that differ.

    The embedded file descriptor is always compared. The full text is compared
    only when the checked-in modules come from the same protobuf release as
    the installed grpcio-tools, because other releases format their output
    differently.
    """
    generate(scratch_dir)
    missing = [name for name in GENERATED_FILES if not (package_dir / name).is_file()]
    if missing:
        return missing
    old = {name: (package_dir / name).read_text() for name in GENERATED_FILES}
    new = {name: (scratch_dir / name).read_text() for name in GENERATED_FILES}
    pb2 = GENERATED_FILES[0]
    if _descriptor_or_none(old[pb2]) != embedded_descriptor(new[pb2]):
        # The other two files are generated from the same descriptor.
        return list(GENERATED_FILES)
    if _protobuf_release(old[pb2]) != _protobuf_release(new[pb2]):
        return []
    return [name for name in GENERATED_FILES if old[name] != new[name]]


def adjust_message_module(source: str) -> str:
    """Make the message module load on the oldest supported protobuf and name its package."""
    major, minor, patch = MIN_PROTOBUF
    source = _substitute_once(_RUNTIME_CHECK, rf"\g<1>{major},\n    {minor},\n    {patch},", source)
    return _substitute_once(
        _MODULE_NAME, f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{MODULE}',", source
    )


def adjust_grpc_module(source: str) -> str:
    """Import the message module through this package and accept the oldest supported grpcio."""
    source = _substitute_once(
        _GRPC_IMPORT, "from z4j_scheduler.wire import scheduler_pb2 as scheduler__pb2", source
    )
    return _substitute_once(_GRPC_VERSION, f"GRPC_GENERATED_VERSION = '{MIN_GRPCIO}'", source)


def embedded_descriptor(source: str) -> bytes:
    """Return the serialized FileDescriptorProto that a generated message module registers."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise ValueError("no AddSerializedFile(b'...') call found in the generated message module")


def _run_protoc(proto_dir: Path, output_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--python_out={output_dir}",
        f"--pyi_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        str(proto_dir / PROTO_FILE),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"protoc failed with exit code {result.returncode} on {proto_dir / PROTO_FILE}:\n"
            f"{result.stdout}{result.stderr}"
        )


def _substitute_once(pattern: re.Pattern[str], replacement: str, source: str) -> str:
    adjusted, count = pattern.subn(replacement, source)
    if count != 1:
        raise RuntimeError(
            f"expected one match of {pattern.pattern!r} in the generated code, found {count};"
            " update z4j_scheduler/wire/generate.py for this grpcio-tools release"
        )
    return adjusted


def _descriptor_or_none(source: str) -> bytes | None:
    try:
        return embedded_descriptor(source)
    except (SyntaxError, ValueError):
        return None


def _protobuf_release(source: str) -> str | None:
    match = _VERSION_COMMENT.search(source)
    return match.group(1) if match else None


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        written = generate(Path(scratch))
        for path in written:
            (PACKAGE_DIR / path.name).write_bytes(path.read_bytes())
            print(f"wrote {PACKAGE_DIR / path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
