"""A fitted LightGBM model compiled to machine code, used only where it predicts exactly what LightGBM does.

LightGBM's ``Booster.predict`` walks its trees node by node for every row: about 1.5 us a row for the
discovery re-ranker's 100 trees of 31 leaves, 150 us for a request's 100 candidates. Compiled (lleaves' code
generator, LLVM through llvmlite) the same forest predicts them in about 20 us.

The answers must not change, so:

- the trees are summed in LightGBM's order, one after the other from the first (lleaves' cache blocking,
  which sums blocks of trees apart and then adds the blocks, is off: it changes the last bits of a sum);
- the rows are what LightGBM's C API reads from a dense matrix: float64, and a value within LightGBM's zero
  threshold (1e-35) of zero is zero;
- :func:`exact_compiled` compares the compiled forest with ``Booster.predict`` (``np.array_equal``) on the
  caller's sample of real rows and on rows that put each feature on each split threshold of the model and
  on the floats either side of it, missing, infinite, zero and near zero. One difference, or any failure
  (lleaves or llvmlite missing, a model lleaves cannot read, a compile error), and it returns None, logged:
  the caller keeps predicting with LightGBM.

Compiling takes seconds (the re-ranker: about 8 s on two busy cores), so it is for a model that is loaded to
serve, not for training. A :class:`CodeStore` (serving keeps one in files: :mod:`serving.compiled_store`)
keeps the machine code under a key made of the model's text, the compiler's versions and this CPU (its name
and features), so that the next load of the same model on the same kind of machine reads it instead (0.01 s);
it is checked like a fresh compile.

Example
-------
>>> compiled = exact_compiled(booster, sample_rows)                            # doctest: +SKIP
>>> compiled.predict(rows) if compiled is not None else booster.predict(rows)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

ZERO_THRESHOLD = float(np.float32(1e-35))
"""LightGBM's ``kZeroThreshold`` (a float constant compared as a double): a value whose magnitude is at most
this is read as zero."""
ENTRY = "forest_root"
"""The name of the compiled forest's entry function."""
_CACHE_FORMAT = "1"
"""Part of the cache key: bump when the compile settings below change."""
_DOUBLE_P = ctypes.POINTER(ctypes.c_double)
_ENTRY_TYPE = ctypes.CFUNCTYPE(None, _DOUBLE_P, _DOUBLE_P, ctypes.c_int32, ctypes.c_int32)
"""``forest_root(rows, out, first_row, end_row)``: float64 rows in, float64 predictions out (ctypes releases
the GIL during the call)."""


class CodeStore(Protocol):
    """Where compiled forests are kept between loads, by key (a hex string)."""

    def get(self, key: str) -> bytes | None:
        """The machine code kept under ``key``, or None."""

    def put(self, key: str, code: bytes) -> None:
        """Keep ``code`` under ``key`` (a failure is the store's to log: the code is used all the same)."""


def lightgbm_rows(X: np.ndarray) -> np.ndarray:
    """The rows as LightGBM's C API reads a dense matrix: a float64 C-ordered copy, with every value whose
    magnitude is at most :data:`ZERO_THRESHOLD` (-0.0 and denormals included) set to 0.0; NaN stays NaN."""
    rows = np.array(X, dtype=np.float64, order="C")
    rows[np.abs(rows) <= ZERO_THRESHOLD] = 0.0
    return rows


class CompiledTrees:
    """A LightGBM model's forest as machine code: :meth:`predict` gives ``Booster.predict`` (not raw scores,
    all trees), on one thread. Build it with :func:`exact_compiled` (checked) or :func:`compile_booster`."""

    def __init__(self, engine: Any, n_features: int, source: str) -> None:
        self._engine = engine  # owns the machine code: kept as long as the entry function is
        self._entry = _ENTRY_TYPE(engine.get_function_address(ENTRY))
        self.n_features = n_features
        self.source = source
        """``"compiled"`` or ``"cache"``: where the machine code came from."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (float64) for the rows of ``X`` (rows x features)."""
        rows = lightgbm_rows(X)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {rows.shape}")
        if len(rows) >= 2**31 - 1:
            raise ValueError(f"{len(rows)} rows: predict fewer than 2**31 - 1 at a time")
        out = np.zeros(len(rows))
        if len(rows):
            self._entry(rows.ctypes.data_as(_DOUBLE_P), out.ctypes.data_as(_DOUBLE_P), 0, len(rows))
        return out


def exact_compiled(booster: lgb.Booster, sample: np.ndarray, store: CodeStore | None = None
                   ) -> CompiledTrees | None:
    """``booster`` compiled (:func:`compile_booster`), if it predicts exactly ``booster.predict`` on the
    rows of ``sample`` (real rows of the model's features) and on :func:`boundary_rows`; None (logged) when it
    differs on any row or anything fails."""
    t0 = time.perf_counter()
    try:
        compiled = compile_booster(booster, store)
        t1 = time.perf_counter()
        sample = np.asarray(sample, dtype=np.float64).reshape(-1, booster.num_feature())
        rows = np.vstack([sample, boundary_rows(booster, sample)])
        got = compiled.predict(rows)
        want = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    except Exception:
        log.warning("could not compile the LightGBM model: LightGBM predicts", exc_info=True)
        return None
    if not np.array_equal(got, want):
        log.warning("the compiled LightGBM model differs from LightGBM on %d of %d rows: LightGBM predicts",
                    int(np.sum(~(got == want))), len(rows))
        return None
    log.info("LightGBM model of %d trees compiled (%s, %.2f s), the same predictions on %d rows (%.2f s)",
             booster.num_trees(), compiled.source, t1 - t0, len(rows), time.perf_counter() - t1)
    return compiled


def compile_booster(booster: lgb.Booster, store: CodeStore | None = None) -> CompiledTrees:
    """``booster``'s forest compiled to machine code for this CPU, unchecked (see :func:`exact_compiled`);
    taken from ``store`` when it holds this model's code, put there when not. Raises ImportError without
    lleaves or llvmlite, ValueError for a model of several outputs a row (multiclass)."""
    import llvmlite.binding as llvm

    if booster.num_model_per_iteration() != 1:  # several outputs a row: predict() has room for one
        raise ValueError(f"{booster.num_model_per_iteration()} models per iteration: only models of one "
                         "output a row are compiled")
    text = booster.model_to_string()
    machine, machine_key = _target_machine(llvm)
    key = _cache_key(text, machine_key)
    cached = store.get(key) if store is not None else None
    module = llvm.parse_assembly("") if cached is not None else _optimised_module(llvm, text, machine)
    engine = llvm.create_mcjit_compiler(module, machine)
    made: list[bytes] = []
    if cached is not None:  # LLVM asks for the module's object code: the stored one, nothing is compiled
        engine.set_object_cache(getbuffer_func=lambda _module: cached)
    elif store is not None:
        engine.set_object_cache(notify_func=lambda _module, code: made.append(bytes(code)))
    engine.finalize_object()
    engine.run_static_constructors()
    if store is not None and made:
        store.put(key, made[0])
    return CompiledTrees(engine, booster.num_feature(), "cache" if cached is not None else "compiled")


def boundary_rows(booster: lgb.Booster, base: np.ndarray) -> np.ndarray:
    """Rows (float64) where one feature sits where the trees decide: on each numerical split threshold of
    the model, on the float64 and float32 values either side of it and on its float32 rounding; and each
    feature NaN, +-inf, +-0.0, +-1e-36 and +-(zero threshold and the float above it). The other features
    come from the rows of ``base`` in turn (a row of NaN if it has none)."""
    n = booster.num_feature()
    base = np.asarray(base, dtype=np.float64).reshape(-1, n)
    if not len(base):
        base = np.full((1, n), np.nan)
    up, down = np.float64(np.inf), np.float64(-np.inf)
    near_zero = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-36, -1e-36, ZERO_THRESHOLD, -ZERO_THRESHOLD,
                 float(np.nextafter(ZERO_THRESHOLD, up)), float(np.nextafter(-ZERO_THRESHOLD, down))]
    feats: list[int] = []
    values: list[float] = []
    for f, t in _numerical_splits(booster):
        t32 = np.float32(t)
        vals = [t, np.nextafter(t, up), np.nextafter(t, down), t32, np.nextafter(t32, np.float32(np.inf)),
                np.nextafter(t32, np.float32(-np.inf))]
        feats += [f] * len(vals)
        values += [float(v) for v in vals]
    for f in range(n):
        feats += [f] * len(near_zero)
        values += near_zero
    rows = base[np.arange(len(values)) % len(base)].copy()
    rows[np.arange(len(values)), feats] = values
    return rows


def _numerical_splits(booster: lgb.Booster) -> list[tuple[int, float]]:
    """(feature, threshold) of every numerical split of the model, once each."""
    out: set[tuple[int, float]] = set()
    stack = [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        if node.get("decision_type") == "<=":
            out.add((int(node["split_feature"]), float(node["threshold"])))
        stack += [node["left_child"], node["right_child"]]
    return sorted(out)


def _target_machine(llvm: Any) -> tuple[Any, str]:
    """An LLVM target machine for this CPU (position-independent code, large code model: lleaves'
    settings), and what identifies it in the cache key."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on this host
        features = ""
    machine = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, reloc="pic",
                                                                    codemodel="large")
    return machine, f"{triple}|{cpu}|{features}"


def _optimised_module(llvm: Any, text: str, machine: Any) -> Any:
    """The LLVM module of the model ``text`` (lleaves' code generator: the trees in one block, summed in
    order), optimised at LLVM's level 3."""
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import gen_forest

    with tempfile.TemporaryDirectory() as d:  # lleaves reads a model file
        p = Path(d) / "model.txt"
        p.write_text(text)
        forest = parse_to_ast(str(p))
    forest.raw_score = False
    ir = llvmlite.ir.Module(name="forest")
    gen_forest(forest, ir, max(1, len(forest.trees)), ENTRY, True)  # one block of all trees; float64
    ir.triple = llvm.get_process_triple()
    module = llvm.parse_assembly(str(ir))
    module.verify()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    passes.getModulePassManager().run(module, passes)
    return module


def _cache_key(text: str, machine_key: str) -> str:
    h = hashlib.sha256()
    for part in (_CACHE_FORMAT, metadata.version("lleaves"), metadata.version("llvmlite"), machine_key, text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]
