"""Check the samsvc.v1 contract with Buf (pinned in scripts/buf/package.json): its lint rules and
the breaking-change check against the last released contract, both configured in protos/buf.yaml.

    npm ci --prefix scripts/buf                   # once
    uv run python scripts/check_contract.py       # lint + breaking; exit 1 naming each problem
    uv run python scripts/check_contract.py --release   # at a release: the contract becomes the baseline

Buf reads the descriptor set scripts/generate.py writes (generated/samsvc/v1/descriptor_set.pb),
which holds googleapis' files as well, so nothing is fetched from Buf's registry.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "scripts" / "buf" / "node_modules" / ".bin" / "buf"
CONFIG = ROOT / "protos" / "buf.yaml"
DESCRIPTOR_SET = ROOT / "generated" / "samsvc" / "v1" / "descriptor_set.pb"
#: The contract as last released (made by --release, without source info: names and numbers only).
RELEASED = ROOT / "protos" / "released" / "samsvc_v1.binpb"
#: What Buf checks: our files only (the googleapis files in the set are imports).
TARGET = "samsvc/v1"


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        raise SystemExit(f"Buf is not installed: run `npm ci --prefix {BUF.parents[2].relative_to(ROOT)}`")
    return subprocess.run([str(BUF), *args], capture_output=True, text=True, check=False)


def image(descriptor_set: Path) -> str:
    return f"{descriptor_set}#format=binpb"


def lint(descriptor_set: Path = DESCRIPTOR_SET, config: Path = CONFIG) -> list[str]:
    """Buf's lint findings, one `file:line:column:message` line each (empty when clean)."""
    done = buf("lint", image(descriptor_set), "--config", str(config), "--path", TARGET)
    return _findings(done)


def breaking(descriptor_set: Path = DESCRIPTOR_SET, against: Path = RELEASED) -> list[str]:
    """What `descriptor_set` breaks for code generated from the released contract."""
    done = buf("breaking", image(descriptor_set), "--against", str(against), "--config", str(CONFIG), "--path", TARGET)
    return _findings(done)


def release(descriptor_set: Path = DESCRIPTOR_SET, out: Path = RELEASED) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = buf("build", image(descriptor_set), "--path", TARGET, "--exclude-source-info", "-o", str(out))
    if done.returncode:
        raise SystemExit(done.stderr.strip())


def _findings(done: subprocess.CompletedProcess[str]) -> list[str]:
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode and not lines:  # Buf itself failed (a bad input or config), not a finding
        raise RuntimeError(done.stderr.strip() or f"buf exited {done.returncode}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", action="store_true", help="record the contract as the released baseline")
    if parser.parse_args().release:
        release()
        print(f"wrote {RELEASED.relative_to(ROOT)}")
        return 0
    found = lint() + breaking()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
