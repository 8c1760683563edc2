"""Launchers: the fast in-process launcher builds exactly Hydra's job configs; chunked submitit launchers."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus, setup_globals
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import hydrahead.cli.train  # noqa: F401  (registers the schema, the launchers and the resolvers)
from conftest import FAST, read_metrics, train_cli
from hydrahead.rundir import sweep_summary
from hydrahead.sweep.launchers import ChunkedLocalLauncher, InProcessLauncher, JobComposer
from hydrahead.utils.paths import config_dir

QUICK = [*FAST, "export=false"]

# Realistic sweep jobs: group choices, values, lists, quoted strings, ++/+ keys, presets, data levels.
JOBS = [
    ["head=mlp", "head.hidden_layers=[256]", "seed=1"],
    ["head=mlp", "head.hidden_layers=[256]", "seed=2"],  # same choices: a copy of the same composition
    ["head.layer=3", "backbone.freeze=true"],
    ["++trainer.limit_train_batches=2", "seed=3"],
    ["optimizer.lr=1e-4", "head=intermediate"],
    ["head=intermediate", "head.layer=[1,2]", "optimizer.lr=3e-3"],
    ["logger.wandb.project='my project, v2'", "logger.wandb.tags=[a,'b c']", "head.pooling=mean"],
    ["experiment=layer_sweep", "head.layer=2", "seed=0"],
    ["experiment=layer_sweep", "head.layer=5", "seed=0"],
    ["data=synthetic_tokens", "data.batch_size=8", "head=linear"],
    ["data=synthetic_positions", "head=mask_gather", "head.layer=4", "head.hidden_layers=[256]"],
    ["backbone.freeze=3", "head.dropout=0.25", "+trainer.extra_knob=1", "seed=1"],
    ["seed=4", "seed=5"],  # a later value wins, as in Hydra
    ["trainer={max_epochs:2}", "seed=1"],  # a dict on a group: composed in full
    ["+hydra.job.env_set.HH_TEST=1", "seed=1"],  # a hydra.* override: composed in full
]
BAD = [
    ["head.hiden_layers=[8]"],  # unknown key
    ["head.dropout=lots"],  # wrong type
    ["trainer.max_epochs=[1,2]"],  # wrong type, a list
    ["seed=1", "+seed=2"],  # + on a key that exists
    ["~head.nothing"],  # delete a key that does not exist
    ["head=nonexistent"],  # no such option (a compose override)
    ["head.layer=2", "+head.dropout@pkg=1"],  # a package on a value key
]


@pytest.fixture
def sweep_setup(tmp_path):
    """``make(*overrides)``: Hydra's config loader and the master config, as ``hydrahead-train -m`` has them."""
    saved = HydraConfig.instance().cfg
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra

        def make(*overrides, sweep_dir=tmp_path):
            setup_globals()
            master = hydra.compose_config(
                "train",
                overrides=[
                    f"hydra.sweep.dir={sweep_dir}",
                    f"paths.root_dir={tmp_path}",
                    "hydra/job_logging=none",
                    "hydra/hydra_logging=none",
                    *overrides,
                ],
                run_mode=RunMode.MULTIRUN,
            )
            HydraConfig.instance().set_config(master)
            return hydra.config_loader, master

        yield make
    HydraConfig.instance().cfg = saved


def resolved_task(cfg):
    """The non-hydra part, interpolations resolved (as the job would see it under HydraConfig)."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.hydra.job.id = cfg.hydra.job.num = 0
        cfg.hydra.runtime.output_dir = "/run/0"
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"}
    finally:
        HydraConfig.instance().cfg = saved


@pytest.mark.parametrize("copies", ["pickled", "deepcopied"])
def test_fast_configs_equal_hydras_full_composition(sweep_setup, monkeypatch, copies):
    import hydrahead.sweep.launchers

    if copies == "deepcopied":  # the fallback for a config that does not pickle
        monkeypatch.setattr(hydrahead.sweep.launchers, "_dumps", lambda cfg: pickle.dumps(lambda: cfg))
    loader, master = sweep_setup()
    composer = JobComposer(loader, master)
    for overrides in JOBS:
        want = loader.load_sweep_config(master, list(overrides))
        got = composer.load(overrides)
        unresolved = OmegaConf.to_container(got, resolve=False)
        assert unresolved == OmegaConf.to_container(want, resolve=False), overrides
        assert resolved_task(got) == resolved_task(want), overrides
        assert list(got.hydra.overrides.task) == [o for o in overrides if "hydra." not in o]
        assert got.hydra.job.override_dirname == want.hydra.job.override_dirname
        assert OmegaConf.is_readonly(got.hydra) is False and OmegaConf.is_struct(got) is True
    # one composition per distinct tuple of group choices; the two odd jobs in full
    assert composer.stats == {"composed": 6, "copied": 13, "full": 2}
    kinds = {type(base) for base in composer.bases.values()}
    assert kinds == ({bytes} if copies == "pickled" else {DictConfig})


def test_a_job_config_is_a_fresh_copy(sweep_setup):
    loader, master = sweep_setup()
    composer = JobComposer(loader, master)
    first = composer.load(["head=mlp", "seed=1"])
    first.head.dropout = 0.5  # what run_job and the task may do to their config
    second = composer.load(["head=mlp", "seed=2"])
    assert second.head.dropout == loader.load_sweep_config(master, ["head=mlp", "seed=2"]).head.dropout
    assert second.seed == 2 and composer.stats["composed"] == 1


@pytest.mark.parametrize("overrides", BAD, ids=" ".join)
def test_bad_overrides_raise_hydras_own_error(sweep_setup, overrides):
    loader, master = sweep_setup()
    composer = JobComposer(loader, master)
    composer.load(["head=mlp", "seed=0"])  # a warm composer, as mid-sweep
    with pytest.raises(Exception) as want:
        loader.load_sweep_config(master, list(overrides))
    with pytest.raises(Exception) as got:
        composer.load(overrides)
    assert type(got.value) is type(want.value)
    assert str(got.value) == str(want.value)
    assert type(got.value.__cause__) is type(want.value.__cause__)
    assert str(got.value.__cause__) == str(want.value.__cause__)


def _task(cfg):
    """A job that costs nothing: returns its seed and counts its runs in its run dir."""
    out = Path(HydraConfig.get().runtime.output_dir)
    with open(out / "runs.txt", "a") as fh:
        fh.write("run\n")
    if cfg.seed == 13:
        raise ValueError("seed 13 fails")
    return cfg.seed


def _launcher(launcher, loader, master):
    launcher.setup(
        hydra_context=HydraContext(config_loader=loader, callbacks=Callbacks(master)),
        task_function=_task,
        config=master,
    )
    return launcher


def test_in_process_launcher_writes_what_the_basic_launcher_writes(sweep_setup, tmp_path):
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    jobs = [
        ["head=mlp", "seed=0"],
        ["head=mlp", "head.hidden_layers=[8]", "seed=1"],
        ["head=linear", "seed=2"],
    ]
    returns = {}
    for name, launcher in (("basic", BasicLauncher()), ("fast", InProcessLauncher())):
        loader, master = sweep_setup(sweep_dir=tmp_path / name)
        returns[name] = _launcher(launcher, loader, master).launch(jobs, initial_job_idx=0)
    assert [r.return_value for r in returns["fast"]] == [r.return_value for r in returns["basic"]]
    for num in range(3):
        fast, basic = tmp_path / "fast" / str(num) / ".hydra", tmp_path / "basic" / str(num) / ".hydra"
        for name in ("config.yaml", "overrides.yaml"):
            assert (fast / name).read_text() == (basic / name).read_text(), (num, name)
        assert returns["fast"][num].overrides == returns["basic"][num].overrides
        hydra_fast = OmegaConf.load(fast / "hydra.yaml").hydra
        hydra_basic = OmegaConf.load(basic / "hydra.yaml").hydra
        assert hydra_fast.job == hydra_basic.job and hydra_fast.overrides.task == hydra_basic.overrides.task


def test_a_job_that_fails_to_compose_fails_alone_and_is_recorded(sweep_setup, tmp_path):
    loader, master = sweep_setup()
    want = None
    try:
        loader.load_sweep_config(master, ["head.dropout=lots"])
    except Exception as err:
        want = err
    launcher = _launcher(InProcessLauncher(), loader, master)
    jobs = [["seed=0"], ["head.dropout=lots", "seed=1"], ["seed=13"], ["seed=3"]]
    returns = launcher.launch(jobs, initial_job_idx=0)
    statuses = [r.status for r in returns]
    assert statuses == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.FAILED, JobStatus.COMPLETED]
    failed = returns[1]
    assert type(failed._return_value) is type(want) and str(failed._return_value) == str(want)
    assert failed.overrides == ["head.dropout=lots", "seed=1"]
    record = read_metrics(tmp_path / "1")
    assert record["status"] == "failed" and "head.dropout" in record["error"]
    failed_lines, _ = sweep_summary(tmp_path)  # what the sweep report prints
    assert any(line.startswith("1 (head.dropout=lots seed=1): failed:") for line in failed_lines)


class InlineExecutor:
    """submitit's map_array, run here: each chunk pickled (as submitit does) under its own job id."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.calls = []

    def map_array(self, fn, *iterables):
        import cloudpickle

        jobs = []
        for task, args in enumerate(zip(*iterables)):
            self.monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
            self.monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", f"77{task}")
            self.calls.append(args)
            result = cloudpickle.loads(cloudpickle.dumps(fn))(*cloudpickle.loads(cloudpickle.dumps(args)))
            jobs.append(SimpleNamespace(results=lambda result=result: [result]))
        return jobs


def _chunked(sweep_setup, monkeypatch, chunk_size):
    loader, master = sweep_setup("hydra/launcher=local", f"hydra.launcher.chunk_size={chunk_size}")
    params = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    assert params.pop("_target_") == "hydra_plugins.hydrahead_launchers.ChunkedLocalLauncher"
    launcher = _launcher(ChunkedLocalLauncher(**params), loader, master)
    executor = InlineExecutor(monkeypatch)
    monkeypatch.setattr(launcher, "_executor", lambda: executor)
    return launcher, executor


def test_chunks_run_consecutive_jobs_and_return_them_in_order(sweep_setup, monkeypatch, tmp_path):
    launcher, executor = _chunked(sweep_setup, monkeypatch, chunk_size=2)
    jobs = [["head=mlp", f"seed={s}"] for s in (0, 1, 13, 3)] + [["head=linear", "seed=4"]]
    returns = launcher.launch(jobs, initial_job_idx=10)
    assert [[len(chunk), first] for chunk, _, first, _ in executor.calls] == [[2, 10], [2, 12], [1, 14]]
    ok, failed = JobStatus.COMPLETED, JobStatus.FAILED
    assert [r.status for r in returns] == [ok, ok, failed, ok, ok]  # seed 13 fails, its chunk goes on
    assert [r.overrides for r in returns] == jobs
    assert [r.return_value for r in returns if r.status == JobStatus.COMPLETED] == [0, 1, 3, 4]
    names = sorted(p.name for p in tmp_path.iterdir() if (p / ".hydra").is_dir())
    assert names == ["10_770", "11_770", "12_771", "13_771", "14_772"]  # <num>_<the chunk's job id>


def test_a_requeued_chunk_runs_its_jobs_again_in_their_own_dirs(sweep_setup, monkeypatch, tmp_path):
    import cloudpickle

    launcher, executor = _chunked(sweep_setup, monkeypatch, chunk_size=2)
    launcher.launch([["seed=0"], ["seed=1"], ["seed=2"]], initial_job_idx=0)
    args = executor.calls[0]
    delayed = launcher.checkpoint(*args)  # what submitit calls on preemption / timeout
    assert delayed.function is launcher and delayed.args == args  # the same chunk, from its first job
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "770")  # a requeued SLURM task keeps its job id
    again = cloudpickle.loads(cloudpickle.dumps(delayed)).result()  # submitit's pickle
    assert [r.return_value for r in again] == [0, 1]
    runs = {p.name: (p / "runs.txt").read_text().count("run") for p in tmp_path.iterdir() if p.is_dir()}
    assert runs == {"0_770": 2, "1_770": 2, "2_771": 1}


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="hydra.launcher.chunk_size=0"):
        ChunkedLocalLauncher(chunk_size=0, submitit_folder="x")


def test_default_and_named_launchers():
    def target(*args):
        out = train_cli(*args, "--cfg", "hydra", timeout=60, check=True).stdout
        launcher = OmegaConf.create(out).hydra.launcher
        return launcher._target_, launcher.get("chunk_size")

    assert target() == ("hydra_plugins.hydrahead_launchers.HydraheadLauncher", None)
    assert target("hydra/launcher=basic")[0].endswith("basic_launcher.BasicLauncher")
    assert target("hydra/launcher=local", "hydra.launcher.chunk_size=16") == (
        "hydra_plugins.hydrahead_launchers.ChunkedLocalLauncher",
        16,
    )
    assert target("hydra/launcher=slurm")[0] == "hydra_plugins.hydrahead_launchers.ChunkedSlurmLauncher"
    out = train_cli("hydra/sweeper=hydrahead", "--cfg", "hydra", timeout=60, check=True).stdout
    assert OmegaConf.create(out).hydra.sweeper._target_ == "hydra_plugins.hydrahead_launchers.GridSweeper"


def _cli_sweep(args, sweep_dir, root, monkeypatch):
    from hydrahead.cli.train import main

    monkeypatch.setattr(
        "sys.argv", ["hydrahead-train", "-m", *args, f"hydra.sweep.dir={sweep_dir}", f"paths.root_dir={root}"]
    )
    main()


def test_default_sweep_runs_in_process_and_writes_what_basic_writes(tmp_path, monkeypatch):
    args = [*QUICK, "head=mlp", "head.hidden_layers=[8]", "seed=0,1,2"]
    _cli_sweep(args, tmp_path / "fast", tmp_path, monkeypatch)
    _cli_sweep([*args, "hydra/launcher=basic"], tmp_path / "basic", tmp_path, monkeypatch)
    for num in range(3):
        fast, basic = tmp_path / "fast" / str(num), tmp_path / "basic" / str(num)
        assert read_metrics(fast)["status"] == read_metrics(basic)["status"] == "completed"
        assert read_metrics(fast)["pid"] == os.getpid()  # in this process
        for name in ("config.yaml", "overrides.yaml"):
            assert (fast / ".hydra" / name).read_text() == (basic / ".hydra" / name).read_text()
        hydra = OmegaConf.load(fast / ".hydra" / "hydra.yaml").hydra
        assert hydra.runtime.choices["hydra/launcher"] == "hydrahead"
    fast, basic = read_metrics(tmp_path / "fast" / "2"), read_metrics(tmp_path / "basic" / "2")
    assert fast["metrics"] == basic["metrics"]  # same config, same seed: same run


@pytest.mark.slow
def test_chunked_local_sweep_runs_two_jobs_per_process(tmp_path):
    proc = train_cli(
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.chunk_size=2",
        *QUICK,
        "head.dropout=0.0,1.5,0.1,0.2",  # job 1 fails validation; its chunk goes on
        f"hydra.sweep.dir={tmp_path}",
        f"paths.root_dir={tmp_path}",
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed, completed = sweep_summary(tmp_path)
    assert len(failed) == 1 and len(completed) == 3 and "head.dropout=1.5" in failed[0]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / ".hydra").is_dir())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2", "3"]
    ids = [p.name.split("_", 1)[1] for p in jobs]
    assert ids[0] == ids[1] != ids[2] == ids[3]  # <num>_<job id>: two submitit tasks of two jobs
    records = [read_metrics(p) for p in jobs]
    assert [r["status"] for r in records] == ["completed", "failed", "completed", "completed"]
    assert records[0]["pid"] == records[1]["pid"] != records[2]["pid"] == records[3]["pid"]
    assert {ids[0], ids[2]} <= {p.name for p in (tmp_path / ".submitit").iterdir()}


def test_grid_sweeper_checks_each_batch_with_the_launchers_composer(sweep_setup, tmp_path):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hydra_plugins.hydrahead_launchers import GridSweeper

    loader, master = sweep_setup("hydra/sweeper=hydrahead")
    assert master.hydra.sweeper._target_ == "hydra_plugins.hydrahead_launchers.GridSweeper"
    context = HydraContext(config_loader=loader, callbacks=Callbacks(master))
    sweepers = {}
    for cls in (GridSweeper, BasicSweeper):
        sweepers[cls] = cls(max_batch_size=None, params=None)
        sweepers[cls].setup(hydra_context=context, task_function=_task, config=master)
    grid = sweepers[GridSweeper]
    grid.validate_batch_is_legal([["head=mlp", "seed=0"], ["head=mlp", "seed=1"], ["seed=2"]])
    assert grid.launcher.composer.stats == {"composed": 2, "copied": 3}  # the launcher reuses them
    errors = []
    for sweeper in sweepers.values():
        with pytest.raises(Exception) as err:
            sweeper.validate_batch_is_legal([["seed=0"], ["head.dropout=lots"]])
        errors.append((type(err.value), str(err.value), str(err.value.__cause__)))
    assert errors[0] == errors[1]
    returns = grid.sweep(arguments=["head=mlp", "seed=0,1,2"])
    assert [r.return_value for r in returns[0]] == [0, 1, 2]
    assert grid.launcher.composer.stats["composed"] == 2  # the batch's one set of choices, composed once
