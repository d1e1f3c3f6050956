"""Running from a session, without a browser: RunState on the real tiny model through a private
job queue (validation, progress, queue positions, cancel, failures, two sessions, the guided
ensemble shown before its O−B arrives), and ResultsState on the output (layers, selectors,
meteogram point, exports)."""

from __future__ import annotations

import dataclasses
import threading
import types

import numpy as np
import pytest
import xarray as xr
import yaml

from app import adapter
from app.jobs import Job, JobQueue
from app.state import AppState

TIMEOUT = 120


@pytest.fixture
def queue():
    q = JobQueue(workers=1)
    yield q
    q.shutdown(cancel=True, timeout=TIMEOUT)


def _state(truth, model, queue, *, seed: int = 0, steps: int = 2, members: int = 2) -> AppState:
    state = AppState(truth=truth, model=model, queue=queue)
    editor = state.editor
    assert editor.set_window(hours=12)
    editor.add_observer("stations")
    assert editor.add_stations([4.0, 100.0], [50.0, -10.0])
    state.run.param.update(members=members, steps=steps, seed=seed, sampler="ddim")
    return state


def _wait(predicate, what: str) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if predicate():
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_run_goes_from_queued_to_done_and_shows_the_results(tiny_store, tiny_package, queue):
    state = _state(tiny_store, tiny_package, queue)
    assert state.model.loaded and state.run.available and state.engine is adapter.load_engine(tiny_package)
    assert state.view == "truth" and not state.results.available
    statuses: list[str] = []
    state.run.param.watch(lambda e: statuses.append(e.new), ["status"])
    assert state.run.start()
    assert state.run.busy and state.run.status in ("queued", "running")
    state.run.wait(TIMEOUT)
    run = state.run
    assert statuses[-1] == "done" and run.status == "done" and not run.busy
    # two passes of 2 steps: the guided ensemble, then the prior one whose equivalents give O - B
    assert (run.step, run.total) == (4, 4) and run.status_text.startswith("Done in")
    assert run.notice.level == "success" and run.queue_position == 0
    # The output reached the results, and the globe switched to them.
    results = state.results
    assert results.available and state.view == "results" and results.revision == 1
    ds = results.output.dataset
    assert ds.sizes["member"] == 2 and ds.sizes["time"] == 3 and "obs_background" in ds
    assert results.output.scenario.seed == 0 and results.output.scenario.members == 2
    sc = results.output.scenario.observations["stations"]
    assert sc.values is not None and np.isfinite(sc.values).all()


def test_start_validates_and_says_why(tiny_store, tiny_package, queue):
    # No model.
    bare = AppState(truth=tiny_store, queue=queue)
    bare.editor.add_observer("stations")
    bare.editor.add_stations([4.0], [50.0])
    assert not bare.run.available and not bare.run.start()
    assert bare.run.notice.is_error and "No model is loaded" in bare.run.notice.text
    # A window outside the truth.
    state = _state(tiny_store, tiny_package, queue)
    assert state.editor.set_window(start="1990-01-01T00:00")
    assert not state.run.start() and "outside the truth" in state.run.notice.text
    assert "Hint:" in state.run.notice.text and state.run.job is None
    # A forecast lead shorter than the model's time step.
    assert state.editor.set_window(start=state.truth.times[0])
    state.run.param.update(task="forecast", lead_hours=3)
    assert not state.run.start() and "time step" in state.run.notice.text
    # No truth, and observers without values.
    no_truth = AppState(model=tiny_package, queue=queue)
    assert no_truth.editor.grid is not None and "2m_temperature" in no_truth.editor.variables
    no_truth.editor.add_observer("stations")
    no_truth.editor.add_stations([4.0], [50.0])
    assert not no_truth.run.start() and "no truth" in no_truth.run.notice.text
    assert len(queue) == 0


def test_editor_vocabulary_is_what_both_truth_and_model_have(tiny_store, tiny_package, queue):
    truth = adapter.open_truth(tiny_store).load()
    truth["v_component_of_wind"] = truth["u_component_of_wind"]  # a variable the model does not have
    truth = truth.reindex(level=[300, 500, 850])  # and a level
    state = AppState(truth=truth, model=tiny_package, queue=queue)
    assert "v_component_of_wind" in state.truth.param.variable.objects
    assert "v_component_of_wind" not in state.editor.variables and "temperature" in state.editor.variables
    assert state.editor.levels == [500.0, 850.0]


def test_second_start_is_refused_and_cancel_of_a_queued_run(tiny_store, tiny_package, queue):
    gate = threading.Event()
    blocker = queue.submit(lambda job: gate.wait(TIMEOUT), owner="someone else")
    _wait(lambda: blocker.status == "running", "the blocker to run")
    state = _state(tiny_store, tiny_package, queue)
    assert state.run.start()
    assert state.run.status == "queued" and state.run.queue_position == 1
    assert state.run.status_text == "Queued: 1 run ahead"
    assert not state.run.start() and "already queued" in state.run.notice.text
    state.run.cancel()
    assert state.run.status == "cancelled" and not state.run.busy and len(queue) == 1
    assert state.run.notice.level == "info" and not state.results.available
    gate.set()
    assert blocker.wait(TIMEOUT)


def test_cancel_a_running_run_stops_it(tiny_store, tiny_package, queue):
    state = _state(tiny_store, tiny_package, queue, steps=200)
    assert state.run.start()
    _wait(lambda: state.run.poll() and state.run.step >= 1, "the first step")
    assert state.run.status == "running" and state.run.total == 400  # guided pass + prior pass
    assert state.run.status_text.startswith(f"Step {state.run.step} / 400")
    state.run.cancel()
    state.run.wait(TIMEOUT)
    assert state.run.status == "cancelled" and state.run.step < 200
    assert state.run.status_text.startswith("Cancelled after") and not state.results.available
    assert isinstance(state.run.job.error, adapter.Cancelled)


def test_a_failing_run_reports_and_the_next_one_runs(tiny_store, tiny_package, queue):
    state = _state(tiny_store, tiny_package, queue)
    engine = state.engine
    small = dataclasses.replace(engine, assimilator=type(engine.assimilator)(engine.model, max_bytes=1000))
    state.run.set_engine(small)
    assert state.run.start()
    state.run.wait(TIMEOUT)
    assert state.run.status == "failed" and "guidance buffers" in state.run.notice.text
    assert "Hint:" in state.run.notice.text and not state.results.available
    state.run.set_engine(engine)
    assert state.run.start()
    state.run.wait(TIMEOUT)
    assert state.run.status == "done" and state.results.available


def test_two_sessions_share_the_queue(tiny_store, tiny_package, queue):
    a = _state(tiny_store, tiny_package, queue, seed=1, steps=6)
    b = _state(tiny_store, tiny_package, queue, seed=2, steps=2)
    assert a.engine is b.engine and a.run.owner != b.run.owner
    assert a.run.start()
    _wait(lambda: a.run.poll() and a.run.status == "running", "the first run to start")
    assert b.run.start()
    assert b.run.status == "queued" and b.run.queue_position == 1
    a.run.wait(TIMEOUT)
    b.run.wait(TIMEOUT)
    assert a.run.status == b.run.status == "done"
    assert a.results.output.scenario.seed == 1 and b.results.output.scenario.seed == 2
    ta = a.results.output.dataset["2m_temperature"].values
    tb = b.results.output.dataset["2m_temperature"].values
    assert ta.shape == tb.shape and not np.array_equal(ta, tb)
    # Each run's job ran after the other's: one device, one run at a time.
    assert a.run.job.finished <= b.run.job.started


def test_settings_round_trip_through_an_imported_scenario(tiny_store, tiny_package, queue):
    state = _state(tiny_store, tiny_package, queue)
    state.run.param.update(task="forecast", lead_hours=36, members=5, steps=17, sampler="pc", guidance="dps",
                           iterations=3, seed=9)
    data = state.editor.export_scenario("yaml", **state.run.settings())
    assert yaml.safe_load(data)["sampler"] == {"name": "pc", "steps": 17, "corrections": 2, "delta": 0.1}
    other = _state(tiny_store, tiny_package, queue)
    assert other.editor.import_scenario(data, "run.yaml")
    run = other.run
    assert (run.task, run.lead_hours, run.members, run.steps, run.sampler, run.guidance, run.iterations, run.seed) == (
        "forecast", 36, 5, 17, "pc", "dps", 3, 9)
    assert run.settings() == state.run.settings() and run.notice is None
    big = yaml.safe_load(data)
    big["members"] = 500
    assert other.editor.import_scenario(yaml.safe_dump(big).encode(), "big.yaml")
    assert run.members == 64 and run.notice.level == "warning" and "members 500 → 64" in run.notice.text


# -- two deliveries: the guided ensemble, then O - B -------------------------------------------


@pytest.fixture
def gate(monkeypatch):
    """Holds every job at the first step of its background pass until ``gate.open`` is set:
    progress is reported (the real ``Job.report``), then the worker waits."""

    gate = types.SimpleNamespace(reached=threading.Event(), open=threading.Event(), error=None)
    report = Job.report

    def gated(job, step, total):
        report(job, step, total)
        if step == total // 2 + 1:
            gate.reached.set()
            assert gate.open.wait(TIMEOUT)
            if gate.error is not None:
                raise gate.error

    monkeypatch.setattr(Job, "report", gated)
    yield gate
    gate.open.set()


def _events(obj, name: str) -> list:
    seen: list = []
    obj.param.watch(lambda e: seen.append(e.new), [name])
    return seen


def test_the_guided_ensemble_is_shown_while_the_background_pass_runs(tiny_store, tiny_package, queue, gate,
                                                                     tmp_path):
    state = _state(tiny_store, tiny_package, queue)
    run, results = state.run, state.results
    revisions, innovations = _events(results, "revision"), _events(results, "innovations_revision")
    assert run.start()
    assert gate.reached.wait(TIMEOUT)
    assert run.poll() and run.status == "running" and (run.step, run.total) == (3, 4)
    assert run.status_text.startswith("Step 3 / 4: O−B background pass (")
    # The guided ensemble is shown; O - B is not there yet.
    assert results.available and revisions == [1] and innovations == [] and run.notice is None
    partial = results.output
    assert "obs_background" not in partial.dataset and run.job.status == "running"
    table = results.innovations()
    assert table["o_minus_b"].isna().all() and np.isfinite(table["o_minus_a"]).all()
    # The user looks around meanwhile; that choice must survive the arrival of O - B.
    results.param.update(variable="temperature", level=850, layer="spread", time_index=2)
    assert results.select_point(100.0, -10.0)
    selection = (results.variable, results.level, results.layer, results.time_index, results.point)
    gate.open.set()
    run.wait(TIMEOUT)
    assert run.status == "done" and run.notice.level == "success"
    assert run.status_text.startswith("Done in") and "(the ensemble after " in run.status_text
    # O - B arrived without a new output: only the innovations were bumped.
    assert revisions == [1] and innovations == [1]
    assert (results.variable, results.level, results.layer, results.time_index, results.point) == selection
    ds = results.output.dataset
    assert results.output is not partial and results.output.truth is partial.truth
    xr.testing.assert_identical(ds.drop_vars("obs_background"), partial.dataset)
    table = results.innovations()
    np.testing.assert_allclose(table["o_minus_b"], ds["obs_value"].values - ds["obs_background"].values.mean(0))
    data, name = results.export("netcdf")
    (tmp_path / name).write_bytes(data)
    np.testing.assert_array_equal(adapter.open_export(tmp_path / name)["obs_background"].values,
                                  ds["obs_background"].values)
    # O - B equals the engine's one-call path, bit for bit; a re-run with the same seed is identical.
    one_call = state.engine.assimilator.run(results.output.scenario, background=True)
    names = [*adapter.output_variables(ds), "obs_value", "obs_analysis", "obs_background"]
    for v in names:
        np.testing.assert_array_equal(ds[v].values, one_call[v].values, err_msg=v)
    first = results.output
    assert run.start()
    run.wait(TIMEOUT)
    # One new output (the guided ensemble, or the whole run when the poll found it done at once).
    assert run.status == "done" and revisions == [1, 2] and "obs_background" in results.output.dataset
    for v in names:
        np.testing.assert_array_equal(results.output.dataset[v].values, first.dataset[v].values, err_msg=v)


def test_cancel_during_the_background_pass_keeps_the_guided_ensemble(tiny_store, tiny_package, queue, gate):
    state = _state(tiny_store, tiny_package, queue, steps=3)
    run, results = state.run, state.results
    assert run.start()
    assert gate.reached.wait(TIMEOUT)
    run.job.cancel()  # no poll in between: the partial result is delivered even after the job ended
    gate.open.set()
    assert run.job.wait(TIMEOUT) and run.job.status == "cancelled"
    assert not run.poll()
    assert run.status == "cancelled" and (run.step, run.total) == (4, 6)
    assert "O−B was not computed" in run.status_text and "the ensemble is shown" in run.status_text
    assert run.notice.level == "info" and "without O−B" in run.notice.text
    assert results.available and results.revision == 1 and results.innovations_revision == 0
    assert "obs_background" not in results.output.dataset and results.output.dataset.sizes["member"] == 2
    run.poll()
    assert results.revision == 1  # delivered once


def test_a_failure_in_the_background_pass_keeps_the_guided_ensemble(tiny_store, tiny_package, queue, gate):
    state = _state(tiny_store, tiny_package, queue)
    run, results = state.run, state.results
    gate.error = MemoryError("no room for the prior ensemble")
    assert run.start()
    assert gate.reached.wait(TIMEOUT) and run.poll() and results.available
    gate.open.set()
    run.wait(TIMEOUT)
    assert run.status == "failed" and "O−B was not computed" in run.status_text
    assert run.notice.is_error and "O−B background pass failed" in run.notice.text
    assert "MemoryError: no room for the prior ensemble" in run.notice.text
    assert results.available and "obs_background" not in results.output.dataset and results.revision == 1


def test_a_late_background_never_lands_on_other_results(tiny_store, tiny_package, queue, gate):
    state = _state(tiny_store, tiny_package, queue)
    run, results = state.run, state.results
    assert run.start()
    assert gate.reached.wait(TIMEOUT) and run.poll()
    partial = results.output
    other = dataclasses.replace(partial, truth=None)  # e.g. another result opened meanwhile
    results.set_output(other)
    gate.open.set()
    run.wait(TIMEOUT)
    assert run.status == "done" and run.notice.level == "info" and "replaced" in run.notice.text
    assert results.output is other and "obs_background" not in other.dataset
    assert results.revision == 2 and results.innovations_revision == 0
    final = run.job.result
    assert "obs_background" in final.dataset
    # The method itself: only onto the guided output of the same run, and only an O - B that fits.
    assert not results.add_background(final, partial=partial)
    results.set_output(partial)
    assert not results.add_background(dataclasses.replace(final, dataset=final.dataset.isel(obs=[0, 1])),
                                      partial=partial)
    assert not results.add_background(partial, partial=partial)  # no obs_background at all
    assert results.add_background(final, partial=partial) and results.innovations_revision == 1
    results.clear()
    assert not results.add_background(final, partial=partial)


# -- results ----------------------------------------------------------------------------------


@pytest.fixture
def finished(tiny_store, tiny_package, queue):
    state = _state(tiny_store, tiny_package, queue, members=3)
    assert state.run.start()
    state.run.wait(TIMEOUT)
    assert state.run.status == "done"
    return state


def test_results_selection(finished):
    results = finished.results
    ds, output = results.output.dataset, results.output
    assert results.variable == "2m_temperature" and not results.has_levels and results.level == 500
    assert results.layers == ["mean", "spread", "member", "truth", "error"]
    assert results.param.member.bounds == (0, 2) and results.param.time_index.bounds == (0, 2)
    assert results.param.observer.objects == ["", "stations"]
    assert results.time_label == "2020-01-01 00:00 UTC" and results.meta.units == "K"
    results.param.update(layer="error", time_index=2)
    assert results.diverging
    np.testing.assert_allclose(results.field().values, adapter.ensemble_layer(
        ds, output.truth, layer="error", variable="2m_temperature", level=None, time_index=2).values)
    lo, hi = results.value_range()
    assert lo == -hi > -np.inf
    results.param.update(variable="temperature", level=850, layer="member", member=2)
    np.testing.assert_array_equal(results.field().values, ds["temperature"].sel(level=850).values[2, 2])
    # The same output without truth: no truth layers; the 'error' layer falls back to the mean.
    results.layer = "error"
    results.set_output(dataclasses.replace(output, truth=None))
    assert results.layers == ["mean", "spread", "member"] and results.layer == "mean"
    assert results.param.layer.objects == ["mean", "spread", "member"] and results.metrics() is None
    assert results.revision == 2
    # A new output with fewer members and times: the selection is kept where it can be.
    smaller = dataclasses.replace(output, dataset=ds.isel(member=[0], time=[0, 1]))
    results.set_output(smaller)
    assert (results.variable, results.level) == ("temperature", 850)
    assert results.member == 0 and results.time_index == 1 and results.param.member.bounds == (0, 0)
    results.clear()
    assert not results.available and results.field() is None and results.meteogram() is None


def test_results_point_metrics_innovations_exports(finished, tmp_path):
    results = finished.results
    ds = results.output.dataset
    assert results.meteogram() is None
    assert not results.select_point(np.nan, 10.0) and "off the globe" in results.notice.text
    assert not results.select_point(10.0, 95.0) and results.point is None
    assert results.select_point(-7.0, 49.0)  # snaps to the nearest cell: 348.75°E, 50.625°N
    assert results.point == (348.75, 50.625) and results.notice is None
    m = results.meteogram()
    i, j = list(ds["latitude"].values).index(50.625), list(ds["longitude"].values).index(348.75)
    np.testing.assert_array_equal(m.members, ds["2m_temperature"].values[:, :, i, j])
    curves = results.metrics()
    assert list(curves.columns) == ["rmse", "spread", "crps", "ssr"] and len(curves) == 3
    table = results.innovations()
    assert len(table) == ds.sizes["obs"] and set(table["observer"]) == {"stations"}
    results.observer = "stations"
    assert len(results.innovations()) == len(table)
    for fmt in ("netcdf", "zarr"):
        data, name = results.export(fmt)
        (tmp_path / name).write_bytes(data)
        back = adapter.open_export(tmp_path / name)
        np.testing.assert_array_equal(back["2m_temperature"].values, ds["2m_temperature"].values)
    assert results.export("xlsx") is None and "unknown export format" in results.notice.text
    data, name = results.scenario_bytes()
    assert name == "appa-scenario-reanalysis-2020-01-01T00.yaml"
    scenario = adapter.scenario_from_bytes(data, name)
    assert scenario.observations == results.output.scenario.observations
