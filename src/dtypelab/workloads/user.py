"""A user's own model, evaluation and calibration callables behind the workload interface.

``load_user(model="pkg.mod:factory", evaluate="pkg.mod:fn", calib="pkg.mod:fn")`` is what the CLI's
``--model/--eval/--calib`` options call. Each spec is ``"module:attribute"`` where the module is an importable
dotted name or a path to a ``.py`` file and the attribute may be dotted (``"pkg.mod:Class.method"``).

- ``factory()`` returns an ``nn.Module`` (called once; ``model()`` hands out deep copies in eval mode);
- ``evaluate(model)`` (or ``evaluate(model, limit=...)`` if it accepts ``limit``) returns a dict of floats or
  one float (then named after the primary metric);
- ``calib()`` (or ``calib(n_batches)``) returns an iterable of input batches.

Example:
    >>> w = load_user(model="torch.nn:Identity", evaluate="dtypelab.workloads.user:_example_eval",
    ...               primary_metric="score")
    >>> w.evaluate(w.model())
    {'score': 1.0}
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import itertools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dtypelab.workloads.base import Workload

__all__ = ["load_user", "UserWorkload", "resolve"]


def _example_eval(model: Any) -> float:
    """Evaluation used by the module's example: always 1.0."""
    return 1.0


def resolve(spec: str, what: str = "callable") -> Callable[..., Any]:
    """Import ``"module:attr"`` (module dotted or a ``.py`` path; attr may be dotted) and return the callable.

    Errors name the bad part of the spec and what would be valid.

    Example:
        >>> resolve("math:sqrt")(4.0)
        2.0
        >>> resolve("math.sqrt")
        Traceback (most recent call last):
        ...
        ValueError: callable spec 'math.sqrt' must look like 'package.module:attribute' (or 'path/file.py:attribute')
    """
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) == 3 and len(parts[0]) == 1 and parts[0].isalpha() and parts[1][:1] in ("\\", "/"):
        parts = [f"{parts[0]}:{parts[1]}", parts[2]]  # a Windows path such as C:\\code\\m.py:factory
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{what} spec {spec!r} must look like 'package.module:attribute' "
                         "(or 'path/file.py:attribute')")
    module_name, attr = parts
    module = _import(module_name, spec, what)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module_name, *attr.split(".")[:i]])
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            close = difflib.get_close_matches(part, public, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            shown = ", ".join(public[:30]) + (", ..." if len(public) > 30 else "")
            raise ValueError(f"{what} spec {spec!r}: {owner!r} has no attribute {part!r}; {hint}"
                             f"it has: {shown or '(none)'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{what} spec {spec!r} names a {type(obj).__name__}, not a callable")
    return obj


def _import(module_name: str, spec: str, what: str) -> Any:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ValueError(f"{what} spec {spec!r}: file {str(path)!r} does not exist")
        name = f"dtypelab_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
        if name in sys.modules:
            return sys.modules[name]
        file_spec = importlib.util.spec_from_file_location(name, path)
        if file_spec is None or file_spec.loader is None:  # pragma: no cover - odd files only
            raise ValueError(f"{what} spec {spec!r}: cannot load {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[name] = module
        try:
            file_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(f"{what} spec {spec!r}: cannot import module {module_name!r} ({exc}); "
                             "is it installed or on PYTHONPATH?") from exc
        raise


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds)


class UserWorkload(Workload):
    """A workload from a user's callables (see :func:`load_user`)."""

    def __init__(self, factory: Callable[[], Any], evaluate_fn: Callable[..., Any],
                 calib_fn: Callable[..., Any] | None = None, run_fn: Callable[..., Any] | None = None,
                 name: str = "user", primary_metric: str | None = None, higher_is_better: bool = True) -> None:
        self._factory = factory
        self._evaluate_fn = evaluate_fn
        self._calib_fn = calib_fn
        self._run_fn = run_fn
        self.name = name
        self.primary_metric = primary_metric or getattr(evaluate_fn, "primary_metric", None) or "metric"
        self.higher_is_better = higher_is_better

    def _build_model(self) -> Any:
        from torch import nn

        model = self._factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model factory {self._factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    def calibration(self, n_batches: int = 4) -> list[Any]:
        """The first ``n_batches`` batches from the user's calibration function."""
        if self._calib_fn is None:
            raise ValueError(f"workload {self.name!r} has no calibration data: pass calib='pkg.module:batches' "
                             "(--calib) to quantize activations")
        batches = self._calib_fn(n_batches) if _positional_count(self._calib_fn) >= 1 else self._calib_fn()
        return list(itertools.islice(batches, n_batches))

    def run(self, model: Any, batch: Any) -> Any:
        """The user's ``run(model, batch)`` if given, else ``model(**batch)`` for a mapping, ``model(batch)``."""
        import torch

        with torch.no_grad():
            if self._run_fn is not None:
                return self._run_fn(model, batch)
            if isinstance(batch, Mapping):
                return model(**batch)
            return model(batch)

    def evaluate(self, model: Any, limit: int | None = None) -> dict[str, float]:
        """The user's evaluation as a dict of floats that contains the primary metric."""
        if limit is not None and _accepts(self._evaluate_fn, "limit"):
            result = self._evaluate_fn(model, limit=limit)
        else:
            result = self._evaluate_fn(model)
        if isinstance(result, Mapping):
            metrics = {str(k): float(v) for k, v in result.items()}
        else:
            try:
                metrics = {self.primary_metric: float(result)}
            except (TypeError, ValueError) as exc:
                raise TypeError(f"evaluate function {self._evaluate_fn!r} returned {type(result).__name__}; "
                                "expected a float or a dict of floats") from exc
        if self.primary_metric not in metrics:
            raise ValueError(f"evaluate function returned metrics {sorted(metrics)} without the primary metric "
                             f"{self.primary_metric!r}; pass primary_metric= one of them")
        return metrics


def load_user(model: str | Callable[[], Any], evaluate: str | Callable[..., Any],
              calib: str | Callable[..., Any] | None = None, *, run: str | Callable[..., Any] | None = None,
              name: str = "user", primary_metric: str | None = None, higher_is_better: bool = True) -> UserWorkload:
    """Wrap a user's model factory, evaluation and (optional) calibration into a :class:`Workload`.

    Each of ``model``, ``evaluate``, ``calib``, ``run`` is a ``"module:attr"`` string or a callable.
    ``primary_metric`` defaults to the evaluate function's ``primary_metric`` attribute, else ``"metric"``.

    Example:
        >>> load_user(model="torch.nn:Nope", evaluate="math:sqrt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: model spec 'torch.nn:Nope': 'torch.nn' has no attribute 'Nope'; it has: ...
    """
    factory = resolve(model, "model") if isinstance(model, str) else model
    evaluate_fn = resolve(evaluate, "evaluate") if isinstance(evaluate, str) else evaluate
    calib_fn = resolve(calib, "calib") if isinstance(calib, str) else calib
    run_fn = resolve(run, "run") if isinstance(run, str) else run
    for label, fn in (("model", factory), ("evaluate", evaluate_fn), ("calib", calib_fn), ("run", run_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{label} must be a 'module:attr' string or a callable, got {type(fn).__name__}")
    return UserWorkload(factory, evaluate_fn, calib_fn, run_fn, name=name, primary_metric=primary_metric,
                        higher_is_better=higher_is_better)
