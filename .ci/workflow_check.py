"""Run the README's GitHub Actions job, as written, in a fresh virtual environment.

The `run:` commands of the ```yaml block under "Gate a checkpoint in CI" run in order, in a clean
clone's copy of the working tree, with a new venv first on PATH (`python3`, `robustvit`). The gate
command may exit 1 (a rule failed: a verdict); every other command must exit 0, and the JUnit XML it
writes must hold no <error> (a rule that could not be evaluated).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

root = Path(__file__).resolve().parents[1]
text = (root / "README.md").read_text(encoding="utf-8")
section = re.search(r"^### Gate a checkpoint in CI$(.*?)(?=^##)", text, re.S | re.M).group(1)
job = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
steps = [s["run"] for j in job["jobs"].values() for s in j["steps"] if "run" in s]
work = Path(tempfile.mkdtemp(prefix="workflow-"))
subprocess.run(["git", "clone", "-q", str(root), str(work / "repo")], check=True)
repo = work / "repo"
subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
env = {**os.environ, "PATH": f"{work / 'venv' / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(work / "venv")}
env.pop("PYTHONPATH", None)
for command in steps:
    print(f"== {command}", flush=True)
    rc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=repo, env=env).returncode
    gate = command.lstrip().startswith("robustvit gate")
    if rc != 0 and not (gate and rc == 1):
        sys.exit(f"workflow step failed with exit code {rc}: {command}")
    if gate:
        junit = ET.parse(repo / "reports" / "gate.xml").getroot()
        errors = junit.findall(".//error")
        cases = junit.findall(".//testcase")
        if errors or not cases:
            sys.exit(f"the gate gave {len(errors)} rule errors and {len(cases)} verdicts")
        print(f"gate: {len(cases)} rules, {len(junit.findall('.//failure'))} failed, no errors (exit {rc})")
print("the README's workflow ran as written")
