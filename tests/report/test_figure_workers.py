import numpy as np
import pytest

from uqeval.report.figure_workers import FIGURE_FORMATS, FigureJob, FigureWorkers, draw_figures, useful_workers


def _roc_job(stem: str, domains: list[str]) -> FigureJob:
    fpr = np.linspace(0.0, 1.0, 5)
    curves = {domain: {"au": (fpr, fpr), "eu": (fpr, np.sqrt(fpr))} for domain in domains}
    aurocs = {domain: {"au": 0.5, "eu": 0.7} for domain in domains}
    return FigureJob(stem, "plots:roc_figure", (curves, aurocs), {"aggregation": "mean"})


def test_workers_draw_the_same_bytes_as_this_process_and_raise_a_job_s_error():
    jobs = [_roc_job("one", ["blur"]), _roc_job("two", ["blur", "noise"])]
    here = draw_figures(jobs)
    assert list(here) == ["one", "two"] and all(list(files) == list(FIGURE_FORMATS) for files in here.values())
    assert here["one"]["png"].startswith(b"\x89PNG") and b"<svg" in here["one"]["svg"]
    with FigureWorkers(2) as workers:
        assert draw_figures(jobs, workers=workers) == here
        with pytest.raises(ValueError, match="no OOD domain to plot"):
            workers.draw([_roc_job("none", [])])
        assert workers.draw(jobs[:1], ("png",)) == {"one": {"png": here["one"]["png"]}}  # still serving


def test_useful_workers_are_none_on_a_busy_machine(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.3, 0.3, 0.3))
    assert useful_workers() == 2
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 0.3, 0.3))
    assert useful_workers() == 0
