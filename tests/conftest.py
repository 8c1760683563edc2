"""Shared setup: offline, quiet, seeded, tiny encoders only; the runners every test file uses.

The environment is set at import time, before any test module imports transformers: several of
these variables (HF_MODULES_CACHE above all) are read once when transformers is first imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_MODULES_CACHE = tempfile.mkdtemp(prefix="hydrahead-test-modules-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["WANDB_MODE"] = "offline"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_MODULES_CACHE"] = _MODULES_CACHE  # remote code of reloaded exports goes here
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads
# spin-waiting for a descheduled sibling make every op up to 100x slower. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
hf_logging.set_verbosity_error()

# -- runners: a training run as the CLI, the Python API or a fresh process gives it ----------------
FAST = [
    "backbone=tiny_bert",
    "data=synthetic_sequences",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "data.num_train=64",
    "data.num_validation=32",
    "data.num_test=32",
    "data.batch_size=16",
    "callbacks.rich_progress_bar=false",
    "logger=none",
]
DATA_FOR_LEVEL = {
    "sequence": "synthetic_sequences",
    "token": "synthetic_tokens",
    "positions": "synthetic_positions",
}


def _latest(args: list[str]) -> list[str]:
    """A later override of a key replaces an earlier one."""
    latest = {arg.split("=", 1)[0]: arg for arg in args}
    return [arg for arg in args if latest[arg.split("=", 1)[0]] is arg]


def run_job(args: list[str], run_dir: Path):
    """``hydrahead.run(compose(ARGS))`` in this process, writing into ``run_dir``: the Python API."""
    from hydrahead import compose, run

    return run(compose([*_latest(args), f"paths.root_dir={run_dir}"], output_dir=run_dir))


def run_train(args: list[str], run_dir: Path, monkeypatch, multirun: bool = False):
    """``hydrahead-train ARGS`` (the CLI: preflight, Hydra, run) in this process, writing into ``run_dir``."""
    from hydrahead.cli.train import main

    where = f"hydra.sweep.dir={run_dir}" if multirun else f"hydra.run.dir={run_dir}"
    argv = [
        "hydrahead-train",
        *(["-m"] if multirun else []),
        *_latest(args),
        where,
        f"paths.root_dir={run_dir}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    return main()


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def train_cli(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m hydrahead.cli.train *args`` in a fresh process, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "hydrahead.cli.train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


# -- tiny models -----------------------------------------------------------------------------
FAMILIES = ("bert", "roberta", "distilbert", "electra", "deberta-v2")
TEXTS = ["the big cat runs to the river", "a dog eats"]


def pytest_unconfigure(config):
    shutil.rmtree(_MODULES_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def modules_cache() -> str:
    """The session's HF_MODULES_CACHE (a temporary directory, removed at the end)."""
    return _MODULES_CACHE


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


def encode(tokenizer, texts=TEXTS) -> dict:
    """A padded batch as a plain dict of tensors."""
    return dict(tokenizer(list(texts), padding=True, return_tensors="pt"))


def head_input(model, **inputs) -> torch.Tensor:
    """What the head receives (the selected, combined and pooled/gathered representation), eval mode."""
    seen = []
    handle = model.head.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]


def hidden_states(model, **inputs) -> tuple[torch.Tensor, ...]:
    """The (possibly truncated) backbone's hidden_states in eval mode."""
    inputs = {k: v for k, v in inputs.items() if k not in ("labels", "mask_indices")}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.backbone(**inputs, output_hidden_states=True).hidden_states
    finally:
        model.train(was_training)


@pytest.fixture(scope="session")
def local_bert_dir(tmp_path_factory):
    """A tiny BERT saved with save_pretrained (weights + tokenizer), like a downloaded checkpoint.

    Seeded differently from build_model's default seed, so its weights cannot coincide with a
    random initialisation.
    """
    from transformers import AutoModel

    from hydrahead.backbones import tiny_config, tiny_tokenizer

    path = tmp_path_factory.mktemp("local-bert")
    tokenizer = tiny_tokenizer("bert")
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        backbone = AutoModel.from_config(tiny_config("bert", tokenizer))
    backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def count_backbone_calls(monkeypatch):
    """Every BERT forward call (tiny backbones are BERTs): how many encoder passes a test made."""
    from transformers.models.bert import modeling_bert

    calls = []
    real = modeling_bert.BertModel.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(modeling_bert.BertModel, "forward", counting)
    return calls


# -- the local SLURM cluster (scripts/local_slurm.sh) ------------------------------------------
LOCAL_SLURM = Path(__file__).resolve().parents[1] / "scripts" / "local_slurm.sh"


@pytest.hookimpl(tryfirst=True)  # before pytest's -m selection, so `-m "not slow"` leaves them out
def pytest_collection_modifyitems(config, items):
    """``slurm`` tests are slow tests too: they run in ``make test-slow``, never in ``make test``."""
    for item in items:
        if item.get_closest_marker("slurm") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


class SlurmCluster:
    """The running single-node cluster: its partition and a few squeue/scontrol helpers."""

    partition = "debug"
    done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")

    def launcher(self) -> list[str]:
        """The ``hydrahead-train -m`` overrides of a sweep on this cluster: one CPU and 2 GB a task."""
        return [
            "hydra/launcher=slurm",
            f"hydra.launcher.partition={self.partition}",
            "hydra.launcher.gpus_per_node=0",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2",
        ]

    def sbatch(self, *args: str) -> str:
        """``sbatch --parsable -p <partition> ARGS``: the job id."""
        out = subprocess.run(
            ["sbatch", "--parsable", "-p", self.partition, *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip().split(";")[0]

    def jobs(self) -> list[dict[str, str]]:
        """Every job squeue still knows (finished ones stay MinJobAge=300 s): id (``12`` or ``12_3``),
        array (the array's job id, else the id), state, reason, name."""
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i|%F|%T|%r|%j"], capture_output=True, text=True, check=True
        )
        keys = ("id", "array", "state", "reason", "name")
        return [dict(zip(keys, line.split("|", 4))) for line in out.stdout.splitlines() if line]

    def release(self, job_id: str) -> None:
        """Start a pending job now: SLURM holds a requeued job for 120 s (BeginTime)."""
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, str]:
        """Poll until the job (every task of an array) has finished: ``{id: state}``."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            states = {j["id"]: j["state"] for j in self.jobs() if job_id in (j["id"], j["array"])}
            if states and all(state in self.done for state in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"SLURM job {job_id} not finished after {timeout} s: {states}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM cluster, started once per session by scripts/local_slurm.sh (reused when up).

    Skips where there is no SLURM to start (not root, no packages and no apt to install them); fails
    when the packages are there but the cluster does not come up. Stopped at the end only if started here.
    """
    if shutil.which("bash") is None or not LOCAL_SLURM.exists():
        pytest.skip(f"no SLURM: needs bash and {LOCAL_SLURM}")
    script = ["bash", str(LOCAL_SLURM)]
    running = subprocess.run([*script, "status"], capture_output=True, text=True).returncode == 0
    if not running:
        start = subprocess.run([*script, "start"], capture_output=True, text=True, timeout=900)
        if start.returncode == 2:
            reason = (start.stderr.strip().splitlines() or ["(no output)"])[-1]
            pytest.skip(f"no SLURM: scripts/local_slurm.sh start failed: {reason}")
        if start.returncode != 0:
            pytest.fail(
                f"scripts/local_slurm.sh start failed (exit {start.returncode}):\n{start.stdout}{start.stderr}"
            )
    conf = subprocess.run([*script, "env"], capture_output=True, text=True, check=True).stdout
    with pytest.MonkeyPatch.context() as mp:
        # The script also links /etc/slurm/slurm.conf; SLURM_CONF covers a HYDRAHEAD_SLURM_DIR elsewhere.
        mp.setenv("SLURM_CONF", conf.strip().removeprefix("export SLURM_CONF="))
        yield SlurmCluster()
    if not running:
        subprocess.run([*script, "stop"], capture_output=True, text=True, timeout=120)
