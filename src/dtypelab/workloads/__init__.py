"""Real models + data + metrics behind one small interface (:class:`Workload`).

``get(name)`` returns a workload; ``names()`` lists the ones that run here; ``load_user(...)`` wraps your own
model, evaluation and calibration callables. Importing this package is light: scikit-learn, transformers and
matplotlib load only when a workload needs them.

==============  ===========================================================  ==============
name            what                                                         primary metric
==============  ===========================================================  ==============
``digits-vgg``  seed 004's VGG on scikit-learn's digits (trained, cached)      ``top1`` (%)
``minilm``      all-MiniLM-L6-v2 on a pydoc-topics retrieval task              ``recall@1``
``pydoc-gpt``   a small GPT-2 trained on Python's own docs (trained, cached)   ``perplexity``
``lm``          any local Hugging Face causal LM on a text file               ``perplexity``
==============  ===========================================================  ==============

Perplexity is lower-is-better (``higher_is_better`` is False); ``get("lm", model="DIR", text="FILE")``.

``cifar10``, ``imagenet`` and ``gpt2`` are known but cannot run here (nothing can be downloaded); ``get``
raises :class:`WorkloadUnavailable` explaining how to bring your own files.

Example:
    >>> from dtypelab import workloads
    >>> workloads.names()
    ['digits-vgg', 'lm', 'minilm', 'pydoc-gpt']
    >>> w = workloads.get("digits-vgg")
    >>> w.primary_metric
    'top1'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from dtypelab.workloads.base import Workload, WorkloadUnavailable, atomic_write, cache_dir
from dtypelab.workloads.user import UserWorkload, load_user

__all__ = ["Workload", "WorkloadUnavailable", "UserWorkload", "get", "names", "register", "load_user",
           "cache_dir", "atomic_write", "unavailable"]

_REGISTRY: dict[str, Callable[..., Workload]] = {}


def register(name: str, factory: Callable[..., Workload] | str) -> None:
    """Register a workload factory under ``name``; ``factory`` may be ``"module:attr"`` (imported on first use).

    Example:
        >>> register("digits-vgg", "dtypelab.workloads.digits:DigitsVGG")  # re-registering the same is fine
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"workload name must be a non-empty string, got {name!r}")
    if name in _UNAVAILABLE:
        raise ValueError(f"workload name {name!r} is reserved for a workload that cannot run here")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        if not module_name or not attr:
            raise ValueError(f"workload factory {factory!r} must look like 'package.module:attribute'")

        def lazy(*args: Any, _m: str = module_name, _a: str = attr, **kwargs: Any) -> Workload:
            return getattr(importlib.import_module(_m), _a)(*args, **kwargs)

        lazy.__qualname__ = lazy.__name__ = f"lazy[{factory}]"
        _REGISTRY[name] = lazy
    elif callable(factory):
        _REGISTRY[name] = factory
    else:
        raise TypeError(f"workload factory must be a callable or 'module:attr' string, got {type(factory).__name__}")


def names() -> list[str]:
    """The names of the workloads that run here, sorted.

    Example:
        >>> "minilm" in names()
        True
    """
    return sorted(_REGISTRY)


def unavailable() -> dict[str, str]:
    """Workloads dtypelab knows but cannot run here, each with the reason and what to do instead.

    Example:
        >>> sorted(unavailable())
        ['cifar10', 'gpt2', 'imagenet']
    """
    return dict(_UNAVAILABLE)


def get(name: str, **kwargs: Any) -> Workload:
    """The workload called ``name`` (keyword arguments go to its constructor).

    Example:
        >>> get("mnist")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        KeyError: "unknown workload 'mnist'; known: digits-vgg, lm, minilm, pydoc-gpt (not runnable here: ...)"
    """
    if name in _REGISTRY:
        return _REGISTRY[name](**kwargs)
    if name in _UNAVAILABLE:
        raise WorkloadUnavailable(_UNAVAILABLE[name])
    raise KeyError(f"unknown workload {name!r}; known: {', '.join(names())} "
                   f"(not runnable here: {', '.join(sorted(_UNAVAILABLE))})")


_BRING_YOUR_OWN = ("To quantize your own copy, wrap it: dtypelab.workloads.load_user(model='pkg.mod:factory', "
                   "evaluate='pkg.mod:evaluate', calib='pkg.mod:batches') (CLI: --model/--eval/--calib).")
_UNAVAILABLE: dict[str, str] = {
    "cifar10": "cifar10: CIFAR-10 and a model trained on it cannot be downloaded on this machine, and dtypelab "
               "ships no stand-in. If you have the python-pickle dataset ('cifar-10-batches-py'), "
               "dtypelab.workloads.cifar.load_cifar10(path) reads it (or set DTYPELAB_CIFAR10_DIR) for your own "
               "evaluate function. " + _BRING_YOUR_OWN,
    "imagenet": "imagenet: ImageNet and pretrained ImageNet weights cannot be downloaded on this machine, and "
                "dtypelab ships no stand-in. " + _BRING_YOUR_OWN,
    "gpt2": "gpt2: GPT-2 weights and WikiText-2 cannot be downloaded on this machine, and dtypelab ships no "
            "stand-in. With GPT-2 saved on disk (save_pretrained) and a text file, use the 'lm' workload: "
            "get('lm', model='./gpt2', text='wiki.test.raw') (CLI: -w lm --lm-model ./gpt2 --text wiki.test.raw); "
            "'pydoc-gpt' is the small GPT-2 dtypelab trains itself. " + _BRING_YOUR_OWN,
}

register("digits-vgg", "dtypelab.workloads.digits:DigitsVGG")
register("minilm", "dtypelab.workloads.minilm:MiniLM")
register("pydoc-gpt", "dtypelab.workloads.pydoc_gpt:PydocGPT")
register("lm", "dtypelab.workloads.lm:LocalLM")
