"""Export a spiking run's recordings as NWB (Neurodata Without Borders), the field's exchange format.

A spiking run (Brian2 engine, ``[engine] variant = "spiking"``) saves what it recorded during its last
training epoch as npz files in its run directory; :func:`export_nwb` writes them into one NWB file that
any NWB reader (pynwb, MatNWB, NWB Widgets, DANDI) opens without this package:

==============================  ===============================================================================
NWB                             from
==============================  ===============================================================================
``units``                       ``brian_spikes.npz``: spike times (s) of the recorded neurons of every layer, one
                                row per neuron with its ``layer`` and ``neuron`` (index in the layer); no electrodes
``acquisition``                 ``brian_monitors.npz`` ``layer{l}/v``, ``/d``, ``/t_s``: soma and dendrite of each
                                layer's neuron 0 (``layer{l}_soma_v``, ``layer{l}_dendrite_d``)
``stimulus``                    ``x``: the input rates of the first glimpses' pixels (``glimpse_input``)
``intervals/glimpses``          ``image``, ``position``, ``y``: the training stream's glimpses, fixation or saccade
``processing/glimpses``         ``layer{l}/z``, ``/u``, ``/M``: spike-count rate, score and modulation per glimpse
==============================  ===============================================================================

Times are seconds from the start of that epoch's simulation. The session metadata come from the run's
``manifest.json`` (identifier = the run directory's name, start = when the run was created). The file is
written atomically (:func:`neuroplastic.results.atomic_write`). pynwb is optional
(``pip install neuroplastic[nwb]``) and imported by :func:`export_nwb` only.
"""
from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import RunError
from .results import Run, atomic_write

__all__ = ["export_nwb", "SPIKES", "MONITORS"]

#: The run directory's files that hold the recordings of a spiking run's last epoch.
SPIKES, MONITORS = "brian_spikes.npz", "brian_monitors.npz"
_DIMENSIONLESS = "dimensionless"


def export_nwb(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the spikes and traces of the spiking run in ``run_dir`` to ``path`` (default ``<run_dir>/spikes.nwb``).

    Raises :class:`~neuroplastic.errors.RunError` when ``run_dir`` is not a run directory, has no spike
    recordings (a rate run, another engine, or a run that has not finished its last epoch), lacks one of the
    arrays above, or pynwb is not installed. Returns the path written.
    """
    run = Run.load(run_dir)
    directory = run.directory
    path = directory / "spikes.nwb" if path is None else Path(path)
    manifest = run.manifest
    protocol = manifest.get("protocol") or {}
    engine = protocol.get("engine") or {}
    if not (directory / SPIKES).is_file():
        kind = f"engine {engine.get('name', '?')!r}, variant {engine.get('variant', '?')!r}"
        raise RunError(f"{directory / SPIKES}: not found ({kind}, status {manifest.get('status', '?')!r}); NWB "
                       "export needs the spikes a spiking run saves after its last epoch ([engine] name = \"brian\", "
                       "variant = \"spiking\")")
    try:
        layers = [int(n) for n in protocol["model"]["layers"]]
        glimpse_s = float(protocol["stimulus"]["glimpse_ms"]) / 1000
    except (KeyError, TypeError, ValueError):
        raise RunError(f"{directory / 'manifest.json'}: no [model] layers or [stimulus] glimpse_ms in its "
                       "protocol; the run directory is damaged") from None
    names = [f"layer{l}" for l in range(1, len(layers) + 1)]
    spikes = _arrays(directory / SPIKES, [f"{n}/{k}" for n in names for k in ("t_s", "i")])
    monitors = _arrays(directory / MONITORS, ["image", "position", "y", "x", *(
        f"{n}/{k}" for n in names for k in ("t_s", "v", "d", "z", "u", "M"))])
    pynwb = _pynwb()

    nwb = pynwb.NWBFile(**_session(directory, manifest, protocol))
    _add_units(pynwb, nwb, spikes, directory / SPIKES, names, layers, len(monitors["x"]) * glimpse_s)
    _add_traces(pynwb, nwb, monitors, names, glimpse_s)
    atomic_write(path, _file_image(pynwb, nwb))
    return path


def _pynwb():
    try:
        import pynwb
    except ImportError as err:
        raise RunError(f"NWB export needs pynwb, which is not installed ({err}): "
                       "pip install neuroplastic[nwb]") from None
    return pynwb


def _arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the npz file ``path``, or a RunError naming the file and what is missing."""
    if not path.is_file():
        raise RunError(f"{path}: not found; the run saved its spikes but not its per-glimpse recordings")
    try:
        with np.load(path) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise RunError(f"{path}: no array {', '.join(repr(k) for k in missing)} (it has "
                               f"{', '.join(data.files) or 'none'}); the run was saved by another version of the "
                               "engine")
            return {k: data[k] for k in keys}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise RunError(f"{path}: damaged ({err or type(err).__name__}); run the protocol again") from None


def _session(directory: Path, manifest: dict, protocol: dict) -> dict:
    """NWBFile metadata: what ran, from which protocol and seed, with which software, when."""
    name, seed = manifest.get("name", protocol.get("name", "")), manifest.get("seed", protocol.get("seed"))
    versions = manifest.get("versions") or {}
    created = manifest.get("created")
    try:
        start = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        try:
            start = datetime.fromisoformat(created)
        except (TypeError, ValueError):
            raise RunError(f"{directory / 'manifest.json'}: created = {created!r} is not a time "
                           "(YYYY-MM-DDTHH:MM:SS+HHMM); the run directory is damaged") from None
    if start.tzinfo is None:         # NWB requires a time zone; a manifest without one was written in local time
        start = start.astimezone()
    notes = {k: manifest.get(k) for k in ("seed", "protocol_hash", "git_revision", "command", "versions")}
    notes["protocol"] = protocol
    rule = str((protocol.get("rule") or {}).get("name", ""))
    return {
        "session_description": f"neuroplastic run {directory.name}: protocol {name!r} "
                               f"({protocol.get('description', '')}), seed {seed}, last training epoch",
        "identifier": directory.name,
        "session_start_time": start,
        "session_id": f"{name} seed {seed}",
        "protocol": name,
        "experiment_description": protocol.get("description") or name,
        "keywords": ["neuroplastic", "simulation", "Brian2", "spiking network", rule],
        "notes": json.dumps(notes, default=str),
        "was_generated_by": [[k, str(v)] for k, v in versions.items() if k in ("neuroplastic", "brian2") and v],
    }


def _add_units(pynwb, nwb, spikes: dict, source: Path, names: list[str], layers: list[int],
               recorded_s: float) -> None:
    """One Units row per recorded neuron of every layer: spike times (s), layer, index within the layer."""
    from .engines.brian.engine import SAVED_SPIKE_NEURONS

    from pynwb.misc import Units

    nwb.units = Units(
        name="units", description="simulated two-compartment neurons (no electrodes): the first "
        f"{SAVED_SPIKE_NEURONS} neurons of each layer (all of a smaller layer), spikes of the first glimpses of the "
        "last training epoch (obs_intervals)")
    nwb.add_unit_column(name="layer", description="network layer of the neuron (1 = the first after the input)")
    nwb.add_unit_column(name="neuron", description="index of the neuron in its layer")
    for l, (name, size) in enumerate(zip(names, layers), start=1):
        t, i = spikes[f"{name}/t_s"], spikes[f"{name}/i"]
        recorded = min(SAVED_SPIKE_NEURONS, size)
        if len(i) and (i.min() < 0 or i.max() >= recorded):
            raise RunError(f"{source}: {name}/i holds neuron {int(i.max())}, but the run recorded neurons 0 .. "
                           f"{recorded - 1} of the layer's {size}")
        for n in range(recorded):
            nwb.add_unit(spike_times=t[i == n], obs_intervals=[[0.0, recorded_s]], layer=l, neuron=n)


def _add_traces(pynwb, nwb, monitors: dict, names: list[str], glimpse_s: float) -> None:
    """Soma and dendrite traces, the glimpses' input and schedule, and the per-glimpse readouts."""
    from hdmf.common import VectorData
    from pynwb import TimeSeries
    from pynwb.epoch import TimeIntervals

    per_glimpse = nwb.create_processing_module(
        name="glimpses", description="per-glimpse readouts of every layer in the last training epoch, read at the "
        "end of each glimpse (timestamps: the glimpses' ends)")
    rate = 1 / glimpse_s
    for l, name in enumerate(names, start=1):
        v = TimeSeries(name=f"{name}_soma_v", data=monitors[f"{name}/v"], unit=_DIMENSIONLESS,
                       timestamps=monitors[f"{name}/t_s"],
                       description=f"somatic potential v of neuron 0 of layer {l} (in units of the rate neuron's "
                       "activation: it fires with hazard rate_out [v]+, and <v> = W x)")
        nwb.add_acquisition(v)
        nwb.add_acquisition(TimeSeries(
            name=f"{name}_dendrite_d", data=monitors[f"{name}/d"], unit=_DIMENSIONLESS, timestamps=v,
            description=f"dendritic potential d of neuron 0 of layer {l}, driven through W_pred by the layer's "
            "spikes one glimpse back (<d> = W_pred z_prev)"))
        for key, what in (("z", "spike-count rate per neuron: spikes after the settle window / (rate_out * counted "
                                "time), ~ ReLU(W x)"),
                          ("u", "score u = sum_j z_j dbar_j, z the model file's rate readout"),
                          ("M", "modulation factor M = y Theta(1 - y u) broadcast at the glimpse's end")):
            per_glimpse.add(TimeSeries(name=f"{name}_{key}", data=monitors[f"{name}/{key}"], unit=_DIMENSIONLESS,
                                       starting_time=glimpse_s, rate=rate, description=f"layer {l}: {what}"))
    x = monitors["x"]
    nwb.add_stimulus(TimeSeries(
        name="glimpse_input", data=x, unit=_DIMENSIONLESS, starting_time=0.0, rate=rate,
        description=f"input x of every pixel of the first {len(x)} glimpses, in [0, 1]: the pixel's neuron spikes "
        "at rate_in * x"))
    y = monitors["y"]
    k = np.arange(len(y))
    kind = np.where(y > 0, "fixation", np.where(y < 0, "saccade", "start"))
    columns = [("start_time", "start of the glimpse (s)", k * glimpse_s),
               ("stop_time", "end of the glimpse (s)", (k + 1) * glimpse_s),
               ("image", "index of the image in the data set", monitors["image"]),
               ("position", "index of the glimpse's position on the image", monitors["position"]),
               ("y", "+1: a fixation (the next position of the same image), -1: a saccade (the same position of "
                     "another image), 0: the first glimpse (no context)", y),
               ("kind", "fixation, saccade or start (y as words)", kind.tolist())]
    nwb.add_time_intervals(TimeIntervals(
        name="glimpses", description="the training stream's glimpses in the last epoch (blank glimpses that pad "
        "the simulation after them are not listed)",
        columns=[VectorData(name=n, description=d, data=v) for n, d, v in columns]))


def _file_image(pynwb, nwb) -> bytes:
    """The NWB file as bytes (written in memory, so that :func:`atomic_write` can put it in place at once)."""
    import h5py

    name = f"in-memory-{id(nwb)}.nwb"          # never on disk (backing_store=False)
    h5 = h5py.File(name, "w", driver="core", backing_store=False)
    io = pynwb.NWBHDF5IO(path=name, file=h5, mode="w")
    try:
        io.write(nwb)
        h5.flush()
        return h5.id.get_file_image()
    finally:
        io.close()          # closes h5 as well
