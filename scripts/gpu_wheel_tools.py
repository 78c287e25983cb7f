"""Helpers of ``scripts/gpu_wheels.sh`` for the wheels it carries to a GPU machine.

``strip WHEEL...``: strip the debug information from the extension modules inside
wheels, in place.

spaCy's, thinc's and blis' Linux wheels ship their compiled modules with DWARF debug
sections: spaCy's wheel is 35 MB, 6 MB without them. ``scripts/gpu_wheels.sh`` carries
such wheels to a GPU machine with a 64 MiB limit on what travels, so it strips them:
``strip --strip-debug`` on every ``.so`` (code, data and symbol tables stay as they
are), then the wheel's RECORD gets the new hashes and sizes and the archive is written
again under the same name. Wheels without debug information are left untouched.

``check WHEEL_DIR NAME...``: every requirement of every wheel in WHEEL_DIR (for
CPython 3.12 on Linux, extras left out) is one of those wheels or one of the NAMEs, the
packages the GPU machine already has; exits 1 naming what is missing. (Their versions
there are checked on the machine itself, by ``scripts/gpu_check.sh``.)

    python scripts/gpu_wheel_tools.py strip .whl/*.whl
    python scripts/gpu_wheel_tools.py check .whl numpy typer ...

Standard library only, except ``check``, which needs ``packaging``.
"""

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _has_debug_info(data: bytes) -> bool:
    return data[:4] == b"\x7fELF" and b".debug_info" in data


def strip_wheel(path: Path, strip: str = "strip") -> int:
    """Strip the debug sections of the ``.so`` files in the wheel at ``path``.

    path (Path): The wheel, rewritten in place.
    strip (str): The ``strip`` program (GNU binutils).
    RETURNS (int): Bytes saved (0 when the wheel had nothing to strip).
    """
    before = path.stat().st_size
    with zipfile.ZipFile(path) as zin:
        infos = zin.infolist()
        contents = {info.filename: zin.read(info) for info in infos}
    targets = [name for name, data in contents.items() if name.endswith(".so") and _has_debug_info(data)]
    if not targets:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(targets):
            file = Path(tmp) / f"{i}.so"
            file.write_bytes(contents[name])
            subprocess.run([strip, "--strip-debug", str(file)], check=True)
            contents[name] = file.read_bytes()
    records = [name for name in contents if name.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise ValueError(f"{path}: expected one .dist-info/RECORD, found {records}.")
    record_name = records[0]
    lines: List[str] = []
    for line in contents[record_name].decode("utf8").splitlines():
        if not line.strip():
            continue
        name = line.split(",", 1)[0]
        if name in targets:
            data = contents[name]
            line = f"{name},{_record_hash(data)},{len(data)}"
        lines.append(line)
    contents[record_name] = ("\n".join(lines) + "\n").encode("utf8")
    tmp_path = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in infos:  # same order and file modes, RECORD last as before
            new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            new.external_attr = info.external_attr
            new.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(new, contents[info.filename])
    shutil.move(str(tmp_path), str(path))
    return before - path.stat().st_size


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_requirements(wheel_dir: Path, available: List[str]) -> List[str]:
    """Requirements of the wheels in ``wheel_dir`` that neither another of those wheels
    nor ``available`` provides, for CPython 3.12 on x86-64 Linux, without extras.

    wheel_dir (Path): Folder of ``.whl`` files.
    available (List[str]): Names of the packages the target machine has.
    RETURNS (List[str]): ``"wheel: requirement"`` for each one missing, sorted.
    """
    from packaging.requirements import Requirement

    environment = {
        "python_version": "3.12",
        "python_full_version": "3.12.3",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "extra": "",
    }
    wheels = sorted(wheel_dir.glob("*.whl"))
    provided = {_canonical(w.name.split("-", 1)[0]) for w in wheels} | {_canonical(n) for n in available}
    missing = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            text = z.read(metadata).decode("utf8")
        for line in text.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if _canonical(requirement.name) not in provided:
                missing.append(f"{wheel.name.split('-', 1)[0]}: {requirement}")
    return sorted(set(missing))


def main(argv: List[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("strip", "check"):
        print(__doc__)
        return 2
    if argv[0] == "check":
        missing = missing_requirements(Path(argv[1]), argv[2:])
        for line in missing:
            print(f"missing on the GPU machine: {line} (add its wheel to scripts/gpu_wheels.sh)", file=sys.stderr)
        return 1 if missing else 0
    if shutil.which("strip") is None:
        print("gpu_wheel_tools: 'strip' (GNU binutils) not found: install binutils.", file=sys.stderr)
        return 1
    for name in argv[1:]:
        saved = strip_wheel(Path(name))
        if saved:
            print(f"stripped {Path(name).name}: {saved / 2**20:.1f} MiB less")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
