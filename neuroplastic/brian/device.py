"""Brian2 devices: run a network in runtime mode, or compile it once to C++ and re-run it with new ``run_args``.

``runtime``  Brian's numpy code generation, in this process (no compiler needed).
``cpp``      cpp_standalone: code generation and compilation once per network *structure* (model files,
             sizes, rule, stream length, glimpse duration, Brian version); every later run — a new epoch,
             seed, learning rate, stimulus or initial weights — is ``device.run(run_args=...)`` of the
             same binary. Builds live in a cache keyed by that structure, shared by all runs and
             processes (a file lock serialises building), each run writing into its own results folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path

__all__ = ["DEVICES", "DeviceError", "Simulator", "build_cache_dir", "check_compiler"]

DEVICES = ("runtime", "cpp")


class DeviceError(RuntimeError):
    """A device that cannot be used here (no compiler, unknown name), with what to do instead."""


def build_cache_dir() -> Path:
    """Root of compiled builds: ``$NEUROPLASTIC_BUILD_DIR`` or ``~/.cache/neuroplastic/brian``."""
    env = os.environ.get("NEUROPLASTIC_BUILD_DIR")
    return Path(env) if env else Path.home() / ".cache" / "neuroplastic" / "brian"


def check_compiler() -> str:
    """Path of the C++ compiler cpp_standalone will use, or a DeviceError that suggests ``--device runtime``."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")):
        path = shutil.which(name)
        if path:
            return path
    raise DeviceError("no C++ compiler found (looked for $CXX, g++, c++, clang++): the 'cpp' device compiles "
                      "the network with one. Install g++ or run with --device runtime.")


class Simulator:
    """Runs networks made by ``make()`` on one device; for ``cpp`` it builds once and then only re-runs.

    ``key`` identifies the network structure (everything that changes the generated code).
    """

    def __init__(self, device: str, key: dict):
        if device not in DEVICES:
            raise DeviceError(f"unknown Brian2 device {device!r}; known: {', '.join(DEVICES)}")
        self.device = device
        self.key = key
        self.network = None
        self.directory: Path | None = None

    @property
    def structure_hash(self) -> str:
        blob = json.dumps({**self.key, "brian2": metadata.version("brian2"), "device": self.device},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, make, x, y, params, eta):
        """Run the network on stream ``x``/``y`` from weights ``params``; return the BrianClapp (read it now)."""
        if self.device == "runtime":
            return self._run_runtime(make, x, y, params, eta)
        return self._run_standalone(make, x, y, params, eta)

    def _run_runtime(self, make, x, y, params, eta):
        import brian2 as b2
        from brian2.devices import reinit_devices

        reinit_devices()
        b2.set_device("runtime")
        b2.prefs.codegen.target = "numpy"
        net = make(x, y, params, eta)
        net.network.run(net.duration, namespace=net.namespace)
        return net

    def _run_standalone(self, make, x, y, params, eta):
        import brian2 as b2

        if self.network is None:
            check_compiler()
            from brian2.devices import reinit_devices
            from filelock import FileLock

            reinit_devices()
            b2.set_device("cpp_standalone", build_on_run=False)
            b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(os.cpu_count() or 1)]
            self.directory = build_cache_dir() / self.structure_hash
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            net = make(x, y, params, eta)
            net.network.run(net.duration, namespace=net.namespace)
            with FileLock(str(self.directory) + ".lock"):
                b2.device.build(directory=str(self.directory), compile=True, run=False, clean=False)
            self.network = net
        net = self.network
        if len(x) != len(net.stimulus.values):
            raise DeviceError(f"the compiled network takes streams of {len(net.stimulus.values)} glimpses, "
                              f"not {len(x)}: a new length needs a new build")
        results = f"results_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        b2.device.run(directory=str(self.directory), results_directory=results,
                      run_args=net.run_args(x, y, params, eta))
        return net

    def release(self, net) -> None:
        """Forget the last standalone run's results folder and run_args files (after its values were read)."""
        if self.device != "cpp":
            return
        import brian2 as b2

        results = Path(b2.device.results_dir)
        b2.device.delete(code=False, data=False, run_args=True, directory=False)
        if results.name.startswith("results_"):
            shutil.rmtree(results, ignore_errors=True)
