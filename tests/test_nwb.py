"""NWB export of a spiking run: what the NWB file holds equals the run's npz recordings, value for value."""
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

import neuroplastic.engines.brian  # noqa: F401  (silences brian2's import warning)
from neuroplastic.cli import main as cli
from neuroplastic.engines.brian.engine import SAVED_SPIKE_NEURONS
from neuroplastic.errors import RunError
from neuroplastic.nwb import MONITORS, SPIKES, export_nwb

ROOT = Path(__file__).resolve().parents[1]
# A spiking run of digits in seconds: runtime device, two tiny layers, 4 ms glimpses, one epoch, no extras.
TINY = ["--device", "runtime", "--set", "data.max_samples=20", "--set", "train.epochs=1",
        "--set", "model.layers=[6, 4]", "--set", "stimulus.glimpse_ms=4", "--set", "engine.dt_ms=0.5",
        "--set", "evaluate.folds=0", "--set", "evaluate.presentations=1", "--set", "evaluate.fidelity=false",
        "--set", "evaluate.baseline=false"]


def assert_nwb_equals_run(nwb_path: Path, run: Path):
    """Every spike, trace, per-glimpse value and metadata field of the NWB file against the run directory's files."""
    pynwb = pytest.importorskip("pynwb")
    manifest = json.loads((run / "manifest.json").read_text())
    layers = manifest["protocol"]["model"]["layers"]
    glimpse_s = manifest["protocol"]["stimulus"]["glimpse_ms"] / 1000
    spikes, mon = dict(np.load(run / SPIKES)), dict(np.load(run / MONITORS))
    assert pynwb.validate(path=str(nwb_path)) == []
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        nwb = io.read()
        assert nwb.identifier == run.name
        assert nwb.session_start_time == datetime.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%S%z")
        assert nwb.session_start_time.tzinfo is not None
        assert nwb.protocol == manifest["name"]
        notes = json.loads(nwb.notes)
        assert notes["seed"] == manifest["seed"] and notes["protocol_hash"] == manifest["protocol_hash"]
        assert notes["protocol"] == manifest["protocol"]
        assert ["neuroplastic", manifest["versions"]["neuroplastic"]] in [list(r) for r in nwb.was_generated_by[:]]

        units = nwb.units
        rows = [(l + 1, n) for l, size in enumerate(layers) for n in range(min(SAVED_SPIKE_NEURONS, size))]
        assert list(zip(units["layer"][:], units["neuron"][:])) == rows
        for row, (l, n) in enumerate(rows):
            t, i = spikes[f"layer{l}/t_s"], spikes[f"layer{l}/i"]
            got = np.asarray(units["spike_times"][row])
            np.testing.assert_array_equal(got, t[i == n])
            assert got.dtype == t.dtype
        assert sum(len(units["spike_times"][r]) for r in range(len(rows))) == \
            sum(len(spikes[f"layer{l + 1}/t_s"]) for l in range(len(layers)))
        np.testing.assert_array_equal(units["obs_intervals"][0], [[0.0, len(mon["x"]) * glimpse_s]])

        for l in range(1, len(layers) + 1):
            v, d = nwb.acquisition[f"layer{l}_soma_v"], nwb.acquisition[f"layer{l}_dendrite_d"]
            np.testing.assert_array_equal(v.data[:], mon[f"layer{l}/v"])
            np.testing.assert_array_equal(d.data[:], mon[f"layer{l}/d"])
            np.testing.assert_array_equal(v.timestamps[:], mon[f"layer{l}/t_s"])
            np.testing.assert_array_equal(d.timestamps[:], mon[f"layer{l}/t_s"])
            assert v.unit == d.unit == "dimensionless"
            for key in ("z", "u", "M"):
                series = nwb.processing["glimpses"][f"layer{l}_{key}"]
                np.testing.assert_array_equal(series.data[:], mon[f"layer{l}/{key}"])
                assert series.rate == pytest.approx(1 / glimpse_s) and series.starting_time == pytest.approx(glimpse_s)
        np.testing.assert_array_equal(nwb.stimulus["glimpse_input"].data[:], mon["x"])

        glimpses = nwb.intervals["glimpses"]
        k = np.arange(len(mon["y"]))
        np.testing.assert_allclose(glimpses["start_time"][:], k * glimpse_s, rtol=0, atol=1e-15)
        np.testing.assert_allclose(glimpses["stop_time"][:], (k + 1) * glimpse_s, rtol=0, atol=1e-15)
        for key in ("image", "position", "y"):
            np.testing.assert_array_equal(glimpses[key][:], mon[key])
        kind = np.asarray(glimpses["kind"][:])
        assert set(kind[mon["y"] > 0]) == {"fixation"} and set(kind[mon["y"] < 0]) == {"saccade"}
    assert not list(nwb_path.parent.glob(".*.tmp")), "a temporary file was left behind"


def test_export_of_a_tiny_spiking_run_round_trips(tmp_path, capsys):
    pytest.importorskip("pynwb")
    rc = cli(["run", str(ROOT / "protocols" / "clapp_digits_spiking.toml"), "--out", str(tmp_path), "--quiet", *TINY])
    assert rc == 0, capsys.readouterr().err
    (run,) = tmp_path.iterdir()
    spikes = np.load(run / SPIKES)
    assert all(len(spikes[f"layer{l}/t_s"]) > 0 for l in (1, 2))
    capsys.readouterr()
    assert cli(["export", str(run)]) == 0
    assert f"written: {run / 'spikes.nwb'}" in capsys.readouterr().out
    assert_nwb_equals_run(run / "spikes.nwb", run)


def fake_spiking_run(directory: Path, layers=(5, 20), glimpse_ms=10.0, n=30, drop=None) -> Path:
    """A run directory with the manifest and the npz files (keys, shapes, dtypes) a spiking run of ``layers`` writes.

    Neuron 1 of each layer never spikes (an empty spike train); ``drop`` leaves one array out.
    """
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    protocol = {"name": "fake_spiking", "description": "d", "seed": 7, "model": {"layers": list(layers)},
                "stimulus": {"glimpse_ms": glimpse_ms}, "engine": {"name": "brian", "variant": "spiking"},
                "rule": {"name": "clapp_s"}}
    manifest = {"name": "fake_spiking", "protocol": protocol, "protocol_hash": "ab12", "seed": 7,
                "versions": {"neuroplastic": "0.1.0", "brian2": "2.8.0"}, "git_revision": None, "command": ["x"],
                "created": "2024-05-06T07:08:09-0300", "status": "finished", "elapsed_s": 1.0}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    g, steps = glimpse_ms / 1000, 10
    spikes, mon = {}, {"image": rng.integers(0, 9, n), "position": np.arange(n) % 9,
                       "y": np.r_[0.0, rng.choice([-1.0, 1.0], n - 1)], "x": rng.random((n + 5, 16))}
    for l, size in enumerate(layers, start=1):
        recorded = min(SAVED_SPIKE_NEURONS, size)
        t = np.sort(rng.random(200) * (n + 5) * g)
        i = rng.choice([m for m in range(recorded) if m != 1], 200).astype(np.int32)
        spikes[f"layer{l}/t_s"], spikes[f"layer{l}/i"] = t, i
        mon[f"layer{l}/t_s"] = np.arange((n + 5) * steps) * g / steps
        mon[f"layer{l}/v"], mon[f"layer{l}/d"] = rng.normal(size=(2, (n + 5) * steps))
        mon[f"layer{l}/z"], mon[f"layer{l}/u"] = rng.random((n, size)), rng.normal(size=n)
        mon[f"layer{l}/M"] = mon["y"] * (1 - mon["y"] * mon[f"layer{l}/u"] > 0)
    for name, arrays in ((SPIKES, spikes), (MONITORS, mon)):
        np.savez(directory / name, **{k: v for k, v in arrays.items() if k != drop})
    return directory


def test_export_writes_the_npz_contents_exactly_and_replaces_an_older_file(tmp_path):
    pytest.importorskip("pynwb")
    run = fake_spiking_run(tmp_path / "fake_spiking-ab12")
    target = tmp_path / "elsewhere" / "out.nwb"
    assert export_nwb(run, target) == target
    assert_nwb_equals_run(target, run)          # 5 units of layer 1, the first 16 of layer 2's 20
    assert not (run / "spikes.nwb").exists()
    (run / "spikes.nwb").write_bytes(b"an older export")
    assert export_nwb(run) == run / "spikes.nwb"
    assert_nwb_equals_run(run / "spikes.nwb", run)


def test_a_run_without_spikes_is_refused_with_the_file_it_lacks(tmp_path, capsys):
    run = fake_spiking_run(tmp_path / "rate-run")
    (run / SPIKES).unlink()
    assert cli(["export", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(run / SPIKES) in err and "spiking" in err and "Traceback" not in err
    with pytest.raises(RunError, match="not a run directory"):
        export_nwb(tmp_path / "nowhere")


def test_a_missing_array_is_named_and_an_older_file_kept(tmp_path):
    run = fake_spiking_run(tmp_path / "partial", drop="layer2/d")
    (run / "spikes.nwb").write_bytes(b"an older export")
    with pytest.raises(RunError, match=r"brian_monitors\.npz: no array 'layer2/d'"):
        export_nwb(run)
    assert (run / "spikes.nwb").read_bytes() == b"an older export"


def test_without_pynwb_the_error_says_what_to_install(tmp_path, monkeypatch):
    run = fake_spiking_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "pynwb", None)       # import pynwb now raises ImportError
    with pytest.raises(RunError, match=r"pip install neuroplastic\[nwb\]"):
        export_nwb(run)
