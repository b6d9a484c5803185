"""The checked-in protobuf and gRPC modules match proto/scheduler.proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from z4j_scheduler.wire import generate
from z4j_scheduler.wire import scheduler_pb2 as pb


def test_generated_modules_up_to_date(tmp_path: Path) -> None:
    stale = generate.find_stale_files(tmp_path)

    assert stale == [], (
        f"{', '.join(stale)} in z4j_scheduler/wire/ differ from proto/scheduler.proto;"
        " run `python -m z4j_scheduler.wire.generate`"
    )


def test_changed_proto_detected(tmp_path: Path) -> None:
    proto_dir = tmp_path / "proto"
    proto_dir.mkdir()
    source = (generate.PROTO_DIR / generate.PROTO_FILE).read_text()
    edited = source.replace("bytes hmac = 9;", "bytes hmac = 9;\n  string comment = 10;")
    assert edited != source
    (proto_dir / generate.PROTO_FILE).write_text(edited)
    package_dir = tmp_path / "package"
    package_dir.mkdir()
    generate.generate(package_dir, proto_dir)

    stale = generate.find_stale_files(tmp_path / "scratch-dir", package_dir)

    assert stale == list(generate.GENERATED_FILES)


def test_edited_module_detected(tmp_path: Path) -> None:
    package_dir = tmp_path / "package"
    package_dir.mkdir()
    for name in generate.GENERATED_FILES:
        shutil.copy(generate.PACKAGE_DIR / name, package_dir / name)
    grpc_module = package_dir / "scheduler_pb2_grpc.py"
    grpc_module.write_text(grpc_module.read_text() + "\n# edited by hand\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    assert generate.find_stale_files(scratch, package_dir) == ["scheduler_pb2_grpc.py"]


def test_missing_module_detected(tmp_path: Path) -> None:
    package_dir = tmp_path / "package"
    package_dir.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    assert generate.find_stale_files(scratch, package_dir) == list(generate.GENERATED_FILES)


def test_message_classes_name_package_module() -> None:
    assert pb.FireFrame.__module__ == "z4j_scheduler.wire.scheduler_pb2"


def test_unexpected_generated_shape_raises() -> None:
    with pytest.raises(RuntimeError, match=r"expected one match .* found 0"):
        generate.adjust_grpc_module("print('no import here')\n")


def test_embedded_descriptor_missing_raises() -> None:
    with pytest.raises(ValueError, match="no AddSerializedFile"):
        generate.embedded_descriptor("x = 1\n")


def test_protoc_failure_raises(tmp_path: Path) -> None:
    proto_dir = tmp_path / "proto"
    proto_dir.mkdir()
    (proto_dir / generate.PROTO_FILE).write_text('syntax = "proto3";\nmessage {\n')
    output = tmp_path / "out"
    output.mkdir()

    with pytest.raises(RuntimeError, match="protoc failed with exit code"):
        generate.generate(output, proto_dir)
