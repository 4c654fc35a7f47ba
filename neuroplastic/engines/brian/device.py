"""Brian2 devices: run a network in runtime mode, or compile it once to C++ and re-run it with new ``run_args``.

``runtime``
    Brian's numpy code generation, in this process (no compiler needed).
``cpp``
    cpp_standalone: code generation and compilation once per network *structure* (model files,
    sizes, rule, stream length, glimpse duration, Brian version); every later run — a new epoch,
    seed, learning rate, stimulus or initial weights — is ``device.run(run_args=...)`` of the
    same binary. Builds live in a cache keyed by that structure, shared by all runs and
    processes (a file lock serialises building), each run writing into its own results folder.
``cuda``
    cuda_standalone (brian2cuda, ``pip install -e ".[cuda]"``): the same, compiled with nvcc for
    compute capability ``cuda_arch``. The flags nvcc 13 needs (C++17) and cuRAND's headers and
    library (from the ``nvidia-curand`` wheel) are set here. Without a GPU the project can still
    be generated and compiled (``build_only``); running it needs a GPU.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
from filelock import FileLock

from ...environ import environment
from ...errors import DeviceError
from ...progress import phase

__all__ = ["DEVICES", "DeviceError", "NOISE_SEED_VARIABLE", "Simulator", "build_cache_dir", "check_compiler",
           "gpu_available", "seed_from_environment"]

log = logging.getLogger(__name__)

DEVICES = ("runtime", "cpp", "cuda")
_STANDALONE = {"cpp": "cpp_standalone", "cuda": "cuda_standalone"}




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


def gpu_available() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def _nvcc_version() -> float:
    import re
    import subprocess

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise DeviceError("no nvcc found on PATH: the 'cuda' device compiles the network with the CUDA "
                          "toolkit's nvcc. Install the CUDA toolkit, or use --device cpp.")
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+\.\d+)", out)
    if not match:
        raise DeviceError(f"cannot read the CUDA version from '{nvcc} --version': {out.strip()[-200:]}")
    return float(match.group(1))


def _curand_dirs() -> tuple[Path, Path]:
    """cuRAND's include directory and a library directory with an unversioned ``libcurand.so``.

    The ``nvidia-curand`` wheel ships only ``libcurand.so.<N>``, so ``-lcurand`` cannot link against
    it; a symlink in the build cache fixes that (the binary then finds it through its rpath). Without
    the wheel, the CUDA toolkit's own cuRAND (beside ``nvcc``) serves.
    """
    try:
        import nvidia
        roots = list(map(Path, nvidia.__path__))
    except ImportError:
        roots = []
    for root in roots:
        for inc in sorted(root.glob("cu*/include")):
            libs = sorted(inc.parent.glob("lib/libcurand.so*"))
            if (inc / "curand.h").is_file() and libs:
                link_dir = build_cache_dir() / "curand-lib" / inc.parent.name
                link_dir.mkdir(parents=True, exist_ok=True)
                link = link_dir / "libcurand.so"
                if not link.exists():
                    tmp = link_dir / f".libcurand.so.{os.getpid()}"
                    tmp.symlink_to(libs[0])
                    os.replace(tmp, link)
                return inc, link_dir
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        toolkit = Path(nvcc).resolve().parent.parent
        for lib in ("lib64", "lib", "targets/x86_64-linux/lib"):
            if (toolkit / "include" / "curand.h").is_file() and (toolkit / lib / "libcurand.so").exists():
                return toolkit / "include", toolkit / lib
    raise DeviceError("cuRAND headers/library not found (neither the nvidia-curand wheel nor the CUDA toolkit "
                      "beside nvcc has them): pip install -e \".[cuda]\"")


def _configure_cuda(arch: float) -> None:
    import brian2 as b2

    try:
        import brian2cuda  # noqa: F401  (registers the cuda_standalone device)
    except ImportError:
        raise DeviceError("the 'cuda' device needs brian2cuda: pip install -e \".[cuda]\"") from None
    version = _nvcc_version()
    include, libdir = _curand_dirs()
    b2.set_device("cuda_standalone", build_on_run=False)
    backend = b2.prefs.devices.cuda_standalone.cuda_backend
    backend.detect_gpus = False              # detection fails without a GPU; we say what to build for
    backend.compute_capability = float(arch)
    backend.cuda_runtime_version = version
    backend.gpu_id = 0
    backend.extra_compile_args_nvcc = list(backend.extra_compile_args_nvcc) + ["-std=c++17"]
    cpp = b2.prefs.codegen.cpp
    cpp.extra_compile_args_gcc = list(cpp.extra_compile_args_gcc) + ["-std=c++17"]
    cpp.include_dirs = list(cpp.include_dirs) + [str(include)]
    cpp.library_dirs = list(cpp.library_dirs) + [str(libdir)]
    cpp.runtime_library_dirs = list(cpp.runtime_library_dirs) + [str(libdir)]


@contextmanager
def _run_lock(directory: Path, shared: bool, blocking: bool = True):
    """flock on ``<build>.run.lock``: shared while a binary runs, exclusive to rebuild or clean up.

    A binary passes through the build lock (:func:`_build_lock`) on its way to the shared lock: runs of
    several processes that overlap one another would otherwise hold the shared lock without a gap, and a
    process waiting to build would wait for all of them to finish. Yields whether the lock was taken
    (always, when ``blocking``).
    """
    fd = os.open(f"{directory}.run.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            if shared and blocking:
                with FileLock(f"{directory}.lock"):    # queue behind a waiting builder
                    fcntl.flock(fd, fcntl.LOCK_SH)
            else:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)               # closing the descriptor releases the lock


@contextmanager
def _build_lock(directory: Path):
    """The build alone: one builder at a time (``<build>.lock``), and no binary of it running.

    Held from the moment it waits, the build lock stops new runs from starting (:func:`_run_lock`).
    """
    with FileLock(f"{directory}.lock"), _run_lock(directory, shared=False):
        yield


def _builder_digest() -> str:
    """Hash of the code that creates the Brian2 objects (``neuroplastic/engines/brian/*.py``)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


#: The environment variable from which a standalone binary reads the seed of its random numbers (see
#: :func:`seed_from_environment`): the spike noise changes from run to run without a new build.
NOISE_SEED_VARIABLE = "NEUROPLASTIC_NOISE_SEED"


def seed_from_environment() -> None:
    """Make the standalone project being built reseed its random numbers from :data:`NOISE_SEED_VARIABLE`, if set.

    Call it right after ``brian2.seed(...)``: Brian2 compiles that seed into ``main``, and this inserts
    code after it that replaces it when the variable is set (cpp_standalone and brian2cuda). Runtime
    mode seeds with ``brian2.seed`` directly (:meth:`Simulator.run`).
    """
    import brian2 as b2
    from brian2.devices.cpp_standalone.device import CPPStandaloneDevice

    device = b2.get_device()
    if not isinstance(device, CPPStandaloneDevice):      # brian2cuda's device is one too
        return
    if type(device).__name__.startswith("CUDA"):
        reseed = "random_number_buffer.set_seed(strtoull(_noise, NULL, 10));"
    else:
        threads = max(1, int(b2.prefs.devices.cpp_standalone.openmp_threads))
        reseed = f"for (int _i = 0; _i < {threads}; _i++) brian::_random_generators[_i].seed(atol(_noise) + _i);"
    device.insert_code("main", f'{{ const char* _noise = getenv("{NOISE_SEED_VARIABLE}"); '
                               f"if (_noise != NULL) {{ {reseed} }} }}")


class Simulator:
    """Runs networks made by ``make()`` on one device; for ``cpp`` it builds once and then only re-runs.

    ``key`` identifies the network structure (everything that changes the generated code); the source
    of the builders in this package is part of the build's identity too, so a changed builder never
    reuses a stale binary.
    """

    def __init__(self, device: str, key: dict, *, cuda_arch: float = 9.0, name: str = "the network"):
        if device not in DEVICES:
            raise DeviceError(f"unknown Brian2 device {device!r}; known: {', '.join(DEVICES)}")
        self.device = device
        self.name = name
        self.cuda_arch = cuda_arch
        self.key = {**key, "cuda_arch": cuda_arch} if device == "cuda" else key
        self.network = None
        self.directory: Path | None = None

    @property
    def structure_hash(self) -> str:
        blob = json.dumps({**self.key, "brian2": metadata.version("brian2"), "device": self.device,
                           "builders": _builder_digest()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, make, x, y, params, eta, noise_seed: int | None = None, carry: dict | None = None):
        """Run the network on stream ``x``/``y`` from weights ``params``; return the BrianClapp (read it now).

        ``noise_seed`` replaces the seed of the random numbers (spike noise) of this run only; a standalone
        binary reads it from :data:`NOISE_SEED_VARIABLE` if ``make`` called :func:`seed_from_environment`.
        ``carry`` (the previous run's ``net.carry()``) continues a stream: the run starts from that state.
        """
        if self.device == "runtime":
            return self._run_runtime(make, x, y, params, eta, noise_seed, carry)
        return self._run_standalone(make, x, y, params, eta, noise_seed, carry)

    def _run_runtime(self, make, x, y, params, eta, noise_seed=None, carry=None):
        import brian2 as b2
        from brian2.devices import reinit_devices

        reinit_devices()
        b2.set_device("runtime")
        b2.prefs.codegen.target = "numpy"
        net = make(x, y, params, eta)
        if carry:
            for key, value in net.run_args(x, y, params, eta, carry).items():
                if isinstance(key, b2.TimedArray):
                    key.values[...] = value          # the generated code reads this very array
                else:
                    key[:] = value
        if noise_seed is not None:
            b2.seed(noise_seed)
        net.run()
        return net

    def build(self, make, x, y, params, eta) -> Path:
        """Generate and compile the standalone project (once); return its directory. Runs nothing.

        The project is generated from zeros of the shapes of ``x``, ``y`` and ``params`` and a learning
        rate of 0: every value reaches the binary as a run argument, so the sources of one structure are
        the same whatever the data, seed or learning rate, and a later build recompiles nothing.
        """
        import brian2 as b2

        if self.network is not None:
            return self.directory
        from brian2.devices import reinit_devices

        check_compiler()
        # Reinitialising resets defaultclock.dt on the active device: on a standalone one that would be a
        # line of code in the next project, which a fresh process does not write (and so a recompilation).
        b2.set_device("runtime")
        reinit_devices()
        if self.device == "cuda":
            _configure_cuda(self.cuda_arch)
        else:
            b2.set_device("cpp_standalone", build_on_run=False)
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = ["-j", str(os.cpu_count() or 1)]
        self.directory = build_cache_dir() / self.structure_hash
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        cached = (self.directory / "main").is_file()
        log.info("%s build of %s: %s (%s)", self.device, self.name, "cached, reused" if cached else "not cached yet",
                 self.directory)
        status = (f"reusing the cached {self.device} build of {self.name} (only changed sources recompile)" if cached
                  else f"compiling {self.name} for the {self.device} device (first build takes "
                       f"{'about a minute' if self.device == 'cpp' else 'minutes'}; cached afterwards)")
        with phase(status, logger=log):
            net = make(np.zeros_like(x, dtype=float), np.zeros_like(y, dtype=float),
                       {key: np.zeros_like(w, dtype=float) for key, w in params.items()}, 0.0)
            net.run()
            # Building rewrites the project's static arrays in place: wait until no binary of this build runs.
            with _build_lock(self.directory):
                b2.device.build(directory=str(self.directory), compile=True, run=False, clean=False)
        self.network = net
        return self.directory

    def _run_standalone(self, make, x, y, params, eta, noise_seed=None, carry=None):
        import brian2 as b2

        if self.device == "cuda" and not gpu_available():
            raise DeviceError("no GPU found (nvidia-smi -L lists none): the 'cuda' device can only compile "
                              "here. Use --build-only to generate and compile the CUDA project, or --device cpp.")
        self.build(make, x, y, params, eta)
        net = self.network
        if len(x) != len(net.stimulus.values):
            raise DeviceError(f"the compiled network takes streams of {len(net.stimulus.values)} glimpses, "
                              f"not {len(x)}: a new length needs a new build")
        results = f"results_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        env = {NOISE_SEED_VARIABLE: str(int(noise_seed))} if noise_seed is not None else {}
        with _run_lock(self.directory, shared=True), environment(env):   # other processes may run the same binary
            b2.device.run(directory=str(self.directory), results_directory=results,
                          run_args=net.run_args(x, y, params, eta, carry))
        return net

    def release(self, net) -> None:
        """Forget the last standalone run's results folder and run_args files (after its values were read)."""
        if self.device == "runtime":
            return
        import brian2 as b2

        results = Path(b2.device.results_dir)
        # run_args files are named by their content, so another process may be about to read the same
        # one: delete them only when no other process holds the build (else they stay, harmlessly).
        with _run_lock(self.directory, shared=False, blocking=False) as alone:
            if alone:
                locks = [self.directory / "static_arrays" / f"{name}.lock" for name in b2.device.run_args_arrays]
                b2.device.delete(code=False, data=False, run_args=True, directory=False)
                for lock in locks:                   # Brian2 leaves the lock file of every run_args file
                    lock.unlink(missing_ok=True)
        if results.name.startswith("results_"):
            shutil.rmtree(results, ignore_errors=True)
