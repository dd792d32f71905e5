"""Re-make the expected data under tests/expected/ by running the REAL peers.

Only the peers' outputs are committed (trees, normalised records, NDJSON outcomes),
never their code. This script runs installed binaries; it does not build them.

    python tests/expected/make_expected.py rx SET...   # rx-repack 1.0.3 (RX_REPACK=path)
    python tests/expected/make_expected.py px SET...   # px-repack 3.12.6 (PX_REPACK=path)

SET is a generated corpus (helpers.GENERATED_CORPORA: mr-explicit, mr-implicit), a
shared corpus (SAG-anon, example-dicom-structural; from ../shared/data), ``hostile``
(helpers.write_hostile), ``bench-default`` (``dicom-repack corpus`` with the
bench's default generator, helpers.BENCH_DEFAULT_ARGS) or ``dropin`` (helpers.write_dropin:
character sets, empty and absent elements).

How each peer is run (tests/expected/README.md says the same):

* rx-repack: once per instance, in file-name order, ``--xcrdir IN --xcrfile NAME
  --datadir /jail/data --logdir /jail/log --log-ndjson``, inside a chroot (a
  throw-away root holding only the binary and its libraries): its log paths use
  tag values unsanitised, so a hostile PatientID like ``/etc/passwd`` would
  otherwise write ``/etc/passwd.json`` on this machine. Everything it wrote
  anywhere in that root is listed, relative to the root.
* px-repack: once per instance, in file-name order, ``--xcrdir IN --xcrfile NAME
  --datadir D --logdir L``.

Normalisation of records: parsed and re-written with sorted keys (rx-repack's
HashMaps print in a random order) and sorted StudyList; the data folder becomes
``{datadir}``; px-repack's imageObj stat keeps ``size``, ``nlink`` and
``FSlocation`` (the rest is this machine's os.stat).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import helpers  # noqa: E402
from helpers import canonical, normalise_record  # noqa: E402
from helpers import write_set as inputs  # noqa: E402

RX_REPACK = os.environ.get("RX_REPACK", "/opt/peers/pypx-listener/target/release/rx-repack")
PX_REPACK = os.environ.get("PX_REPACK", "/opt/peers/pxvenv/bin/px-repack")
SCRATCH_CORPORA = Path("/work/scratch/corpora")

#: where rx-repack's folders are inside its chroot (deep, so '../..' escapes stay inside)
JAIL = "/r/a/b/c/jail"


def write_common(out: Path, files: list[Path], name: str) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if name not in helpers.SHARED_CORPORA:  # shared inputs are pinned by ../shared itself
        helpers.write_tree_tsv(
            {f.name: (f.stat().st_size, helpers.sha256(f)) for f in files}, out / "inputs.tsv"
        )


def save_records(log: Path, out: Path, datadir: str, prefix: str = "") -> None:
    for f in sorted(log.rglob("*")):
        if f.is_file():
            rel = prefix + f.relative_to(log).as_posix()
            dst = out / "log" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                dst.write_text(canonical(normalise_record(f.read_text(), datadir)))
            except (json.JSONDecodeError, UnicodeDecodeError):
                shutil.copyfile(f, dst)


def make_chroot(root: Path) -> str:
    """A root holding only rx-repack and the libraries ldd lists; returns its path inside."""
    listed = subprocess.run(["ldd", RX_REPACK], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        for word in line.split():
            if word.startswith("/") and Path(word).exists():
                dst = root / word.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(word, dst)
    shutil.copy2(RX_REPACK, root / "rx-repack")
    return "/rx-repack"


def run_rx(name: str) -> None:
    out = HERE / "rx-repack" / name
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        exe = make_chroot(root)
        infolder = root / "in"
        files = inputs(name, infolder)
        write_common(out, files, name)
        before = {p for p in root.rglob("*")}
        lines = []
        for f in files:
            argv = ["chroot", str(root), exe, "--xcrdir", "/in", "--xcrfile", f.name]
            argv += ["--datadir", f"{JAIL}/data", "--logdir", f"{JAIL}/log", "--log-ndjson"]
            done = subprocess.run(argv, capture_output=True, text=True)
            line = json.loads(done.stdout) if done.stdout.strip() else {}
            line = json.loads(json.dumps(line).replace(f"{JAIL}/data", "{datadir}"))
            line["exit"] = done.returncode
            lines.append(json.dumps(line, sort_keys=True, ensure_ascii=False))
        (out / "outcomes.ndjson").write_text("\n".join(lines) + "\n")
        jail = root / JAIL.lstrip("/")
        data = jail / "data"
        helpers.write_tree_tsv(helpers.tree(data) if data.exists() else {}, out / "data-tree.tsv")
        if (jail / "log").exists():
            save_records(jail / "log", out, f"{JAIL}/data")
        # what it wrote outside its two folders (tag values in log paths)
        escaped = sorted(
            p
            for p in root.rglob("*")
            if p not in before
            and p.is_file()
            and not p.is_relative_to(data)
            and not p.is_relative_to(jail / "log")
        )
        listing = {p.relative_to(root).as_posix(): p for p in escaped}
        (out / "outside.txt").write_text("".join(f"/{rel}\n" for rel in listing))
        for rel, p in listing.items():
            dst = out / "outside" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(canonical(normalise_record(p.read_text(), f"{JAIL}/data")))
    print(f"rx-repack {name}: {len(files)} instances -> {out.relative_to(HERE.parent.parent)}")


def run_px(name: str) -> None:
    out = HERE / "px-repack" / name
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        base = Path(tmp)
        files = inputs(name, base / "in")
        write_common(out, files, name)
        data, log = base / "data", base / "log"
        lines = []
        for f in files:
            argv = [PX_REPACK, "--xcrdir", str(f.parent), "--xcrfile", f.name]
            argv += ["--datadir", str(data), "--logdir", str(log)]
            done = subprocess.run(argv, capture_output=True, text=True)
            lines.append(json.dumps({"src": f.name, "exit": done.returncode}))
        (out / "outcomes.ndjson").write_text("\n".join(lines) + "\n")
        helpers.write_tree_tsv(helpers.tree(data), out / "data-tree.tsv")
        save_records(log, out, str(data))
    print(f"px-repack {name}: {len(files)} instances -> {out.relative_to(HERE.parent.parent)}")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("rx", "px"):
        print(__doc__)
        return 2
    for name in argv[1:]:
        (run_rx if argv[0] == "rx" else run_px)(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
