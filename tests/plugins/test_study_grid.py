"""``uqeval study``: the grid's steps, the manifest, and a small study run twice."""

from __future__ import annotations

import itertools
import json
import shlex
import signal
import sys
import threading
import time

import pytest
from helpers import run_cli

from uqeval.errors import UQEvalError
from uqeval_torch.study import StudyOptions, critical_path, plan_study, run_locally, study_grid, training_epochs

TINY = ["--size", "tiny", "--epochs", "2", "--batch-size", "8", "--samples", "2", "--members", "2", "--device", "cpu"]
TINY_DATA = ["--data-option", "size=16", "--data-option", "n_train=12"]
TINY_DATA += ["--data-option", "n_calibration=4", "--data-option", "n_test=4"]


def test_the_default_grid_is_the_studys_19_combinations():
    grid = study_grid()
    assert len(grid) == 19
    assert ("softmax", "none") not in grid
    plan = plan_study("out")
    assert len(plan.phase("predict")) == len(plan.phase("score")) == 19
    # none, swag and swag_diag share one SWAG run: 4 AU methods × 3 families.
    assert len(plan.phase("train")) == 12
    assert plan.phase("compare")[0].needs == tuple(step.name for step in plan.phase("score"))


def test_sharing_and_dependencies():
    plan = plan_study("out", au=["ssn"], eu=["none", "swag_diag", "ensemble"], seeds=2)
    trains = {step.name: step for step in plan.phase("train")}
    assert set(trains) == {f"train-ssn+{family}-seed-{s}" for family in ("swag", "ensemble") for s in (0, 1)}
    for step in plan.phase("predict"):
        eu = step.command[step.command.index("--eu") + 1]
        family = "ensemble" if eu == "ensemble" else "swag"
        seed = step.name.rsplit("-", 1)[1]
        assert step.needs == (f"train-ssn+{family}-seed-{seed}",)
    seeds = {step.command[step.command.index("--seed") + 1] for step in plan.phase("train")}
    assert seeds == {"0", "100"}  # study seeds far apart: ensembles share no member


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"au": ["cnn"]}, "au"),
        ({"eu": ["bayes"]}, "eu"),
        ({"seeds": 0}, "seeds"),
        ({"au": ["softmax"], "eu": ["none"]}, "eu"),
        ({"eu": ["none"], "options": StudyOptions(epochs=0)}, "epochs"),
        ({"eu": ["swag"], "options": StudyOptions(epochs=1)}, "epochs"),
    ],
)
def test_bad_grids_are_refused(options, parameter):
    with pytest.raises(UQEvalError) as raised:
        plan_study("out", **options)
    assert raised.value.parameter == parameter


@pytest.mark.parametrize(
    ("eu", "epochs", "refused"),
    [
        (["none", "swag"], 1, "ssn+swag, softmax+swag"),
        (["swag_diag", "dropout"], 1, "ssn+swag_diag, softmax+swag_diag"),
        (["none", "dropout", "ensemble"], 1, None),  # the SWAG run of `none` finishes with 1 epoch
        (["none", "swag", "swag_diag"], 2, None),
    ],
)
def test_a_grid_asking_for_swag_with_too_few_epochs_is_refused_when_planned(eu, epochs, refused):
    options = StudyOptions(size="tiny", epochs=epochs)
    if refused is None:
        assert plan_study("out", au=["ssn", "softmax"], eu=eu, options=options).phase("train")
        return
    with pytest.raises(UQEvalError) as raised:
        plan_study("out", au=["ssn", "softmax"], eu=eu, options=options)
    assert raised.value.parameter == "epochs"
    assert f"1 epoch is too few for {refused}: " in str(raised.value)
    assert "at least 2 epochs" in str(raised.value) and "pass --epochs 2 or more" in str(raised.value)


def test_the_epochs_a_study_trains_come_from_epochs_the_profile_or_trains_default():
    assert training_epochs(StudyOptions(epochs=3, profile="cpu")) == 3
    assert training_epochs(StudyOptions(profile="cpu")) == 30
    assert training_epochs(StudyOptions()) == 100


@pytest.mark.cli
def test_the_command_line_refuses_swag_with_one_epoch_in_one_line_before_training(tmp_path):
    out = tmp_path / "study"
    arguments = ["study", str(out), "--au", "ssn", "--eu", "none,swag", *TINY, *TINY_DATA, "--quiet"]
    arguments[arguments.index("--epochs") + 1] = "1"
    result = run_cli(*arguments)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --epochs: 1 epoch is too few for ssn+swag: EU method swag needs runs of at least 2 epochs "
        "to collect its moments; pass --epochs 2 or more, or leave swag out of --eu"
    )
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.cli
def test_manifest_lists_every_step_as_a_complete_command(tmp_path):
    manifest = tmp_path / "steps.txt"
    result = run_cli("study", str(tmp_path / "study"), "--data", "synthetic", "--manifest", str(manifest), *TINY)
    assert result.returncode == 0, result.stderr
    lines = manifest.read_text().splitlines()
    plan = plan_study(
        tmp_path / "study",
        options=StudyOptions(size="tiny", epochs=2, batch_size=8, samples=2, members=2, device="cpu"),
    )
    assert len(lines) == len(plan.steps) == 12 + 19 + 19 + 1
    combinations = set()
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "uqeval" and words[1] in ("train", "predict", "score", "compare")
        if words[1] == "predict":
            run = words[2]
            au = run.split("/runs/")[1].split("+")[0]
            combinations.add((au, words[words.index("--eu") + 1]))
    assert combinations == set(study_grid())
    assert "train lines 1–12" in result.stderr and "compare lines 51–51" in result.stderr
    assert not (tmp_path / "study").exists()  # a manifest runs nothing


@pytest.mark.cli
def test_a_two_combination_study_runs_to_a_comparison_and_resumes(tmp_path):
    out = tmp_path / "study"
    arguments = ["study", str(out), "--au", "ssn", "--eu", "none,swag_diag", *TINY, *TINY_DATA, "--quiet"]
    started = time.monotonic()
    result = run_cli(*arguments)
    first = time.monotonic() - started
    assert result.returncode == 0, result.stderr + "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    comparison = json.loads((out / "comparison" / "comparison.json").read_text())
    assert {run["group"] for run in comparison["runs"]} == {"ssn+none (tiny)", "ssn+swag_diag (tiny)"}
    assert [path.name for path in (out / "runs").iterdir()] == ["ssn+swag"]  # one run served both
    started = time.monotonic()
    again = run_cli(*arguments)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < first / 2  # every step was done: nothing reran


@pytest.mark.cli
def test_none_and_dropout_with_one_epoch_run_to_a_comparison_and_resume(tmp_path):
    """Issue 33's sub-grid: `none` shares the SWAG run, which finishes with its 1 snapshot;
    predicting that run as swag_diag is what refuses, in one line."""
    out = tmp_path / "study"
    arguments = ["study", str(out), "--au", "ssn", "--eu", "none,dropout", *TINY, *TINY_DATA, "--quiet"]
    arguments[arguments.index("--epochs") + 1] = "1"
    started = time.monotonic()
    result = run_cli(*arguments)
    first = time.monotonic() - started
    assert result.returncode == 0, result.stderr + "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    comparison = json.loads((out / "comparison" / "comparison.json").read_text())
    assert sorted(run["group"] for run in comparison["runs"]) == ["ssn+dropout (tiny)", "ssn+none (tiny)"]
    assert all((out / "scores" / name / "seed-0" / "scores.json").is_file() for name in ("ssn+none", "ssn+dropout"))
    assert "too few to predict as swag or swag_diag" in (out / "logs" / "train-ssn+swag-seed-0.log").read_text()
    started = time.monotonic()
    again = run_cli(*arguments)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < first / 2  # every step was done: nothing reran
    run, store = out / "runs" / "ssn+swag" / "seed-0", tmp_path / "swag_diag.zarr"
    refused = run_cli("predict", str(run), "--out", str(store), "--eu", "swag_diag", "--device", "cpu", "--quiet")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: EU method 'swag_diag' needs at least 2 epochs to collect its moments; the run has 1 snapshot(s): "
        "train with --epochs 2 or more"
    )
    assert not store.exists()


@pytest.mark.cli
def test_a_failed_step_is_reported_with_its_log_and_the_rest_goes_on(tmp_path):
    out = tmp_path / "study"
    # The SWAG run's folder holds a stray file, so its training refuses to start; dropout's trains.
    blocked = out / "runs" / "ssn+swag" / "seed-0"
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("not a run\n")
    arguments = ["study", str(out), "--au", "ssn", "--eu", "dropout,swag_diag", *TINY, *TINY_DATA, "--quiet"]
    arguments += ["--workers", "2"]  # the two trainings run at once
    result = run_cli(*arguments)
    assert result.returncode == 2
    assert "failed: train-ssn+swag-seed-0 (log: " in result.stderr
    log = out / "logs" / "train-ssn+swag-seed-0.log"
    assert "is a folder with other files in it" in log.read_text()
    assert (out / "done" / "score-ssn+dropout-seed-0").exists()  # the dropout branch finished
    assert not (out / "comparison").exists()  # compare needs every score


def test_a_study_runs_on_a_dask_cluster_with_its_dependencies(tmp_path):
    from distributed import LocalCluster

    from uqeval_torch.study import run_on_cluster

    options = StudyOptions(
        size="tiny",
        epochs=2,
        batch_size=8,
        samples=2,
        members=2,
        device="cpu",
        data_options=tuple(TINY_DATA[1::2]),
    )
    plan = plan_study(tmp_path / "study", au=["ssn"], eu=["none", "swag_diag"], options=options)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        outcomes = run_on_cluster(plan, cluster.scheduler_address)
    assert [outcome.status for outcome in outcomes] == ["done"] * len(plan.steps)
    assert (tmp_path / "study" / "comparison" / "comparison.json").is_file()
    # Every step succeeded, and a step fails without what it needs (predict refuses an
    # unfinished run, score a missing store), so the order held; the marks agree.
    finished = {step.name: plan.done_path(step).stat().st_mtime for step in plan.steps}
    for step in plan.steps:
        assert all(finished[needed] <= finished[step.name] for needed in step.needs), step.name


FAKE_UQEVAL = """
import json, sys, time
record = {"command": sys.argv[1:], "start": time.monotonic()}
time.sleep(0.3)
record["end"] = time.monotonic()
with open(sys.argv[0] + ".log", "a") as log:
    log.write(json.dumps(record) + "\\n")
sys.exit(3 if "dropout" in sys.argv else 0)
"""


def test_local_workers_run_steps_at_once_after_what_they_need(tmp_path):
    """Two workers: independent steps overlap, none starts before the steps it needs end,
    and a failed training skips only its own branch."""
    fake = tmp_path / "fake_uqeval.py"
    fake.write_text(FAKE_UQEVAL)
    plan = plan_study(tmp_path / "study", au=["ssn", "prob_unet"], eu=["none", "swag_diag", "dropout"])
    outcomes = run_locally(plan, workers=2, executable=[sys.executable, str(fake)])
    status = {outcome.step.name: outcome.status for outcome in outcomes}
    assert [outcome.step.name for outcome in outcomes] == [step.name for step in plan.steps]
    assert status["train-ssn+dropout-seed-0"] == "failed"
    assert status["predict-ssn+dropout-seed-0"] == status["score-ssn+dropout-seed-0"] == "skipped"
    assert status["compare"] == "skipped"
    assert status["score-prob_unet+swag_diag-seed-0"] == "done"
    records = [json.loads(line) for line in (tmp_path / "fake_uqeval.py.log").read_text().splitlines()]
    times = {step.name: record for step in plan.steps for record in records if record["command"] == list(step.command)}
    assert len(times) == len(records) == sum(value != "skipped" for value in status.values())
    for step in plan.steps:
        for need in step.needs if step.name in times else ():
            assert times[need]["end"] <= times[step.name]["start"]
    spans = sorted((record["start"], record["end"]) for record in records)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), "no two steps overlapped"
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 2, "more than two steps at once"


def test_ready_steps_start_longest_path_first(tmp_path):
    """With one worker the steps run in order of their estimated path to the end: the
    diffusion runs, whose predictions cost 10 network passes per sample, start first."""
    fake = tmp_path / "fake_uqeval.py"
    fake.write_text(FAKE_UQEVAL)
    plan = plan_study(tmp_path / "study", au=["softmax", "diffusion"], eu=["none", "ensemble"])
    remaining = critical_path(plan)
    predicts = {step.name: step.cost for step in plan.phase("predict")}
    # 10 members x 10 samples x 10 passes of diffusion + none against 5 x 1 x 1 of softmax + ensemble.
    assert predicts["predict-diffusion+none-seed-0"] == 1 * 10 * 10 / 50
    assert predicts["predict-softmax+ensemble-seed-0"] == 5 * 1 * 1 / 50
    assert remaining["compare"] == 0.05
    assert remaining["train-diffusion+swag-seed-0"] == pytest.approx(1 + 2 + 0.05 + 0.05)
    run_locally(plan, workers=1, executable=[sys.executable, str(fake)])
    records = [json.loads(line) for line in (tmp_path / "fake_uqeval.py.log").read_text().splitlines()]
    names = {step.command: step.name for step in plan.steps}
    order = [names[tuple(record["command"])] for record in sorted(records, key=lambda record: record["start"])]
    # 5 + 10 + 0.05 + 0.05, then 10.1, then the softmax ensemble's 5 + 0.1 + 0.05 + 0.05.
    expected = ["train-diffusion+ensemble-seed-0", "predict-diffusion+ensemble-seed-0", "train-softmax+ensemble-seed-0"]
    assert order[:3] == expected, order
    assert order[-1] == "compare"
    assert [remaining[name] for name in order[:3]] == sorted((remaining[name] for name in order[:3]), reverse=True)


@pytest.mark.cli
def test_the_cpu_profile_predicts_5_members_and_5_samples(tmp_path):
    manifest = tmp_path / "steps.txt"
    arguments = ["study", str(tmp_path / "study"), "--profile", "cpu", "--manifest", str(manifest)]
    assert run_cli(*arguments).returncode == 0
    predicts = [shlex.split(line) for line in manifest.read_text().splitlines() if " predict " in line]
    assert len(predicts) == 19
    for words in predicts:
        assert words[words.index("--samples") + 1] == "5"
        assert ("--members" in words) == (words[words.index("--eu") + 1] != "none")
        if "--members" in words:
            assert words[words.index("--members") + 1] == "5"
    chosen = run_cli(*arguments, "--members", "3", "--samples", "2")
    assert chosen.returncode == 0
    assert " --samples 2" in manifest.read_text() and " --members 3" in manifest.read_text()
    unknown = run_cli("study", str(tmp_path / "study"), "--profile", "gpu", "--manifest", str(manifest))
    assert unknown.returncode == 2 and "unknown profile 'gpu'" in unknown.stderr


def test_cluster_tasks_carry_their_path_to_the_end_as_dask_priority(tmp_path, monkeypatch):
    import distributed

    from uqeval_torch.study import run_on_cluster

    submitted = {}

    class RecordingClient:
        def __init__(self, address):
            assert address == "tcp://scheduler:8786"

        def submit(self, function, plan, step, needed, executable, **options):
            submitted[step.name] = options
            return step.name

        def gather(self, futures):
            return futures

        def close(self):
            pass

    monkeypatch.setattr(distributed, "Client", RecordingClient)
    plan = plan_study(tmp_path / "study", au=["softmax", "diffusion"], eu=["none", "ensemble"])
    run_on_cluster(plan, "tcp://scheduler:8786")
    remaining = critical_path(plan)
    assert {name: options["priority"] for name, options in submitted.items()} == {
        name: round(1000 * value) for name, value in remaining.items()
    }
    assert submitted["train-diffusion+ensemble-seed-0"]["priority"] == 15100  # 5 + 10 + 0.05 + 0.05
    assert submitted["compare"]["priority"] == 50


def test_a_stopped_study_stops_its_running_steps(tmp_path):
    """Ctrl-C or SIGTERM in the study process (here a real SIGINT, which, unlike
    ``_thread.interrupt_main``, wakes a main thread that waits on its steps) sends SIGTERM
    to the running step at once, instead of waiting the step out, and starts no other step.

    The SIGINT goes to the main thread (``pthread_kill``: a signal sent to the process may
    land on a thread that is not waiting), and Python's own Ctrl-C handler is put in place
    for the test, whatever a test before it in the same process left behind."""
    fake = tmp_path / "slow_uqeval.py"
    fake.write_text("import pathlib, sys, time\npathlib.Path(sys.argv[0] + '.started').touch()\ntime.sleep(120)\n")
    plan = plan_study(tmp_path / "study", au=["ssn"], eu=["none"])
    started = []

    def interrupt_once_the_step_runs():
        for _ in range(1200):
            if (tmp_path / "slow_uqeval.py.started").exists():
                break
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_once_the_step_runs, daemon=True).start()
        begun = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            run_locally(
                plan,
                workers=1,
                on_update=lambda outcome, step: started.append(step.name if step else outcome.status),
                executable=[sys.executable, str(fake)],
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - begun < 60, "the study waited for its step to finish"
    assert started == [plan.steps[0].name]
    assert not any(plan.done_path(step).exists() for step in plan.steps)


def test_a_cluster_without_distributed_names_the_extra(tmp_path, monkeypatch):
    """``uqeval study --scheduler`` in an install without the ``cluster`` extra."""
    from uqeval_torch.study import run_on_cluster

    monkeypatch.setitem(sys.modules, "distributed", None)
    plan = plan_study(tmp_path / "study", au=["ssn"], eu=["none"])
    with pytest.raises(UQEvalError, match=r"pip install 'uqeval-torch\[cluster\]'"):
        run_on_cluster(plan, "tcp://127.0.0.1:1")
