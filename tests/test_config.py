"""Settings and the process environment: importing rag changes nothing; the entry points set the
defaults before torch loads (OMP_WAIT_POLICY is read only then)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from rag.env import ENV_DEFAULTS

# Runs `entry` in a fresh interpreter where importing torch records the environment and stops
# the run: what matters is what torch would have seen, and no model needs to load.
PROBE = r"""
import json, os, sys
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print(json.dumps({k: os.environ.get(k) for k in %r}))
            sys.stdout.flush()
            os._exit(0)
        return None
sys.meta_path.insert(0, Probe())
import rag.config
assert all(k not in os.environ for k in %r), "importing rag.config changed the environment"
%s
print("torch was never imported")
"""


def probe(entry: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DEFAULTS}
    env["PYTHONPATH"] = str(REPO)
    code = PROBE % (list(ENV_DEFAULTS), list(ENV_DEFAULTS), entry)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "entry",
    [
        "from rag.pipeline import Pipeline; Pipeline().embedder.encode(['warm'])",  # rag.answer() and the app
        "from rag.llm import make_generator; from rag.config import Settings; make_generator(Settings().model).warm_up()",
        "from rag.serve.cli import main; main(['ask', 'hello'])",
    ],
    ids=["pipeline", "generator", "cli"],
)
def test_env_defaults_are_set_before_torch_loads(entry):
    import json

    seen = json.loads(probe(entry))
    assert seen == ENV_DEFAULTS


def test_an_explicit_value_wins(monkeypatch):
    from rag.env import apply_env_defaults

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    apply_env_defaults()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_importing_rag_leaves_the_environment_alone():
    assert probe("import rag.pipeline, rag.serve.ui, rag.serve.cli, rag.eval.bench") == "torch was never imported"
