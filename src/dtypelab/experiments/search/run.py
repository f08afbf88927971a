"""``dl.search.search``: LPQ-style mixed-configuration search on a workload, end to end.

1. build the problem (candidates per layer, exact bits, FP32 caches, per-layer divergences; dominated options
   pruned);
2. a genetic algorithm minimises the global-local contrastive objective under the bit budget (average stored
   bits per weight, scales included, as a hard constraint), seeded with uniform assignments; checkpointed
   every generation;
3. random search with the same number of evaluations, as the baseline;
4. the winner, the random-search best, the objective's Pareto front (bits vs objective) and uniform formats
   at the budget's width are evaluated on the workload's test metric.

Example (a tiny run on a user model is in the tests; the CLI is ``dtypelab search``):
    >>> from dtypelab.experiments.search import search  # doctest: +SKIP
    >>> result = search("digits-vgg", space="lp", budget=5.0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from dtypelab._io import atomic_write
from dtypelab._markdown import markdown_table
from dtypelab._pareto import pareto_indices
from dtypelab.experiments.evaluate import evaluate
from dtypelab.experiments.executors import make_executor
from dtypelab.experiments.search.ga import GAResult, GASettings, Genome, evolve, random_search
from dtypelab.experiments.search.objective import Objective
from dtypelab.experiments.search.prior import load_ranking, prior_seeds
from dtypelab.experiments.search.problem import Problem, build_problem, layer_weights
from dtypelab.experiments.store import RunLock

log = logging.getLogger(__name__)

CONTRASTIVE = Objective()
OBJECTIVES = {"global+local": CONTRASTIVE, "global": Objective(local_weight=0), "local": Objective(global_weight=0)}
DEFAULT_GA = GASettings()
DEFAULT_ACTIVATIONS = {"lp": "lp(8,1,7,0)/tensor/log2-hist", "posit": "posit(8,1)/tensor/log2-hist"}


@dataclass
class Score:
    """Picklable fitness: the objective of one genome."""

    problem: Problem
    objective: Objective

    def __call__(self, genome: Genome) -> float:
        p = self.problem.loaded()
        q = p.final_representation(genome) if self.objective.global_weight else None
        return self.objective(q, p.f_final, p.local_terms(genome))


@dataclass
class Evaluated:
    label: str
    bits_per_weight: float
    metrics: dict[str, float]
    objective: float | None = None
    config: dict | None = None


@dataclass
class Ablated:
    """The GA's best under one objective, with both terms of the objective measured on it."""

    objective: str
    best: Evaluated
    global_term: float
    local_term: float


@dataclass
class SearchResult:
    workload: str
    primary_metric: str
    budget: float
    fp32: dict[str, float]
    best: Evaluated
    random_best: Evaluated
    pareto: list[Evaluated]
    uniform: list[Evaluated]
    history: list[dict]
    evaluations: int
    objective: str
    extra: dict[str, Any] = field(default_factory=dict)
    ablation: list[Ablated] = field(default_factory=list)

    def table(self) -> str:
        key = self.primary_metric
        rows = [["fp32", 32.0, self.fp32[key], "", ""]]
        rows += [[e.label, round(e.bits_per_weight, 3), e.metrics[key],
                  "" if e.objective is None else round(e.objective, 5), ""] for e in [self.best, self.random_best]]
        rows += [[e.label, round(e.bits_per_weight, 3), e.metrics[key], "", "uniform"] for e in self.uniform]
        rows += [[e.label, round(e.bits_per_weight, 3), e.metrics[key], round(e.objective or 0, 5), "pareto"]
                 for e in self.pareto]
        table = markdown_table(["config", "bits/weight", key, "objective", "kind"], rows)
        if not self.ablation:
            return table
        ablation = markdown_table(
            ["GA objective", "bits/weight", key, "global term", "local term"],
            [[a.objective, round(a.best.bits_per_weight, 3), a.best.metrics[key], round(a.global_term, 5),
              round(a.local_term, 5)] for a in self.ablation])
        return f"{table}\n\nAblation: the GA's best under each objective, both terms measured on it\n\n{ablation}"

    def to_json(self) -> dict:
        def ev(e: Evaluated) -> dict:
            return {"label": e.label, "bits_per_weight": e.bits_per_weight, "metrics": e.metrics,
                    "objective": e.objective, "config": e.config}

        return {"workload": self.workload, "primary_metric": self.primary_metric, "budget": self.budget,
                "fp32": self.fp32, "best": ev(self.best), "random_best": ev(self.random_best),
                "pareto": [ev(e) for e in self.pareto], "uniform": [ev(e) for e in self.uniform],
                "history": self.history, "evaluations": self.evaluations, "objective": self.objective,
                "ablation": [{"objective": a.objective, "global_term": a.global_term, "local_term": a.local_term,
                              **ev(a.best)} for a in self.ablation], **self.extra}


def _evaluate(workload: Any, config: dict | None, limit: int | None) -> dict[str, float]:
    return evaluate(workload, config, limit=limit, energy=False).metrics


def uniform_config(weights: str, activations: str | None) -> dict:
    """One weight scheme for every layer, dynamic activation scales (Embedding inputs are indices: kept)."""
    return {"weights": weights, "activations": activations, "activation_scales": "dynamic"}


def uniform_baselines(budget: float) -> list[str]:
    """Uniform formats at the budget's width: posit, LP, int, DT (and NF4 at 4 bits), scaled per layer."""
    n = max(3, min(8, math.floor(budget)))
    specs = [f"posit({n},1)/tensor/log2-energy", f"posit({n},0)/tensor/log2-energy",
             f"lp({n},1,{n - 1},0)/tensor/log2-energy", f"lp({n},2,2,0)/tensor/log2-energy",
             f"int{n}/channel/absmax", f"dt{n}/channel/absmax"]
    if n == 4:
        specs.append("nf4/channel/absmax")
    return specs


def search(workload: str | Any, space: str | Sequence[str] = "lp", budget: float = 5.0,
           activations: Sequence[str | None] | None = None, objective: Objective = CONTRASTIVE,
           settings: GASettings = DEFAULT_GA, executor: str = "process", workers: int | None = None,
           out_dir: str | os.PathLike | None = None, resume: bool = False, batches: int = 2,
           eval_limit: int | None = None, pareto_points: int = 5, ablation: bool = False,
           progress: Callable[[dict], None] | None = None, prior: Any = None) -> SearchResult:
    """Search per-layer weight (and optionally activation) schemes of ``workload`` under ``budget`` bits/weight.

    ``workload`` is a registered name (``dl.workloads.names()``) or a Workload object. ``out_dir`` receives
    ``checkpoint.json`` (every generation), and at the end ``best_config.yaml``, ``results.json``,
    ``pareto.csv`` and ``pareto.png``; ``resume=True`` continues from its checkpoint. ``ablation=True`` also runs
    the GA (same settings and seed) under the other two of ``OBJECTIVES`` and reports each winner. ``prior`` (a
    sensitivity result, a list of layer names most sensitive first, or a ``dtypelab sensitivity`` run directory)
    seeds the first population from that ranking before the uniform seeds (:mod:`.prior`).
    """
    from dtypelab import workloads

    wl = workloads.get(workload) if isinstance(workload, str) else workload
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive, finite number of bits per weight, got {budget!r}")
    if activations is None:
        activations = [DEFAULT_ACTIVATIONS.get(space, None) if isinstance(space, str) else None]
    ranking = load_ranking(prior) if prior is not None else None
    out = Path(out_dir) if out_dir else None
    lock = RunLock(out, "search output") if out else None
    try:
        if out:
            _check_run(out, {**_fingerprint(wl, space, budget, activations, objective, settings, batches, ablation),
                             **({"prior": ranking} if ranking is not None else {})}, resume)
        problem = build_problem(wl, space, activations, batches=batches)
        costs = problem.gene_costs()
        budget_bits = budget * sum(problem.numel)
        cheapest = sum(min(c) for c in costs)
        if cheapest > budget_bits:
            raise ValueError(f"budget {budget} bits/weight is below the cheapest configuration "
                             f"({cheapest / sum(problem.numel):.3f} bits/weight) of this space")
        with make_executor(executor, workers) as run:
            def fitness_under(obj: Objective) -> Callable[[list[Genome]], list[float]]:
                score = Score(problem, obj)
                return lambda genomes: run(score, genomes)

            others = {name: obj for name, obj in OBJECTIVES.items() if name != objective.name} if ablation else {}
            seeds = (_prior_seeds(problem, ranking, costs, budget_bits) if ranking is not None else []) \
                + _seeds(problem)
            ga = evolve(fitness_under(objective), costs, budget_bits, settings, seeds=seeds,
                        checkpoint=out / "checkpoint.json" if out else None, resume=resume, progress=progress)
            rnd = random_search(fitness_under(objective), costs, budget_bits, ga.evaluations, seed=settings.seed + 1,
                                checkpoint=out / "checkpoint-random.json" if out else None, resume=resume)
            ablated = {name: evolve(fitness_under(obj), costs, budget_bits, settings, seeds=seeds,
                                    checkpoint=out / f"checkpoint-{name}.json" if out else None, resume=resume)
                       for name, obj in others.items()}
        result = _finish(wl, problem, objective, budget, ga, rnd, ablated, eval_limit, pareto_points, ablation)
        if out:
            _write_outputs(out, result)
    finally:
        if lock:
            lock.close()
    return result


def _fingerprint(workload: Any, space: str | Sequence[str], budget: float, activations: Sequence[str | None],
                 objective: Objective, settings: GASettings, batches: int, ablation: bool) -> dict[str, Any]:
    """Everything a search's checkpoints depend on (a resumed search must ask for the same)."""
    own = getattr(workload, "settings", None)
    return {"workload": workload.name, "workload_settings": asdict(own) if is_dataclass(own) else repr(own),
            "space": space if isinstance(space, str) else list(space), "budget": budget,
            "activations": list(activations), "objective": objective.name, "ga": asdict(settings),
            "batches": batches, "ablation": ablation}


def _check_run(out: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """Record what this search is in ``out/search.json``; on resume, refuse a search that asks for another."""
    path = out / "search.json"
    if resume and any(out.glob("checkpoint*.json")):
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"cannot resume the search in {str(out)!r}: it holds checkpoints but no search.json "
                             "recording what they were computed for; start afresh (without --resume) or use "
                             "another --out") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {str(path)!r} ({err}); delete the directory or use another --out") \
                from None
        changed = [f"{k}: {stored.get(k)!r} then, {v!r} now" for k, v in fingerprint.items() if stored.get(k) != v]
        if changed:
            raise ValueError(f"cannot resume the search in {str(out)!r} with other settings ({'; '.join(changed)}); "
                             "resume with the same settings, or start a new search in another --out")
    atomic_write(path, json.dumps(fingerprint, indent=1))


def _finish(wl: Any, problem: Problem, objective: Objective, budget: float, ga: GAResult, rnd: GAResult,
            ablated: dict[str, GAResult], eval_limit: int | None, pareto_points: int, ablation: bool) -> SearchResult:
    """Evaluate the winners, the Pareto front and the uniform baselines on the workload's test metric."""
    primary = wl.primary_metric
    fp32 = _evaluate(wl, None, eval_limit)

    def evaluated(label: str, genome: Genome, result: GAResult | None = None) -> Evaluated:
        config = problem.config(genome)
        obj = result.scored.get(genome) if result else None
        return Evaluated(label, problem.bits_per_weight(genome), _evaluate(wl, config, eval_limit), obj, config)

    best = evaluated("ga-best", ga.best, ga)
    random_best = evaluated("random-best", rnd.best, rnd)
    front = _front(ga, problem)[:pareto_points]
    pareto = [evaluated(f"pareto-{i}", g, ga) for i, g in enumerate(front)]
    uniform = []
    act = problem.activations[0]
    for spec in uniform_baselines(budget):
        config = uniform_config(spec, None if act is None else str(act))
        bits = _uniform_bits(problem, spec)
        uniform.append(Evaluated(spec, bits, _evaluate(wl, config, eval_limit), None, config))
    terms = (Score(problem, OBJECTIVES["global"]), Score(problem, OBJECTIVES["local"]))
    winners = {objective.name: (best, ga.best)} if ablation else {}
    winners.update({name: (evaluated(f"ga-{name}", r.best, r), r.best) for name, r in ablated.items()})
    ablation_rows = [Ablated(name, e, terms[0](g), terms[1](g)) for name, (e, g) in winners.items()]
    return SearchResult(wl.name, primary, budget, fp32, best, random_best, pareto, uniform, ga.history,
                          ga.evaluations, objective.name,
                          {"random_best_objective": rnd.best_fitness, "layers": problem.layers,
                           "options_kept": [len(o) for o in problem.options], "options_total": problem.pruned_from},
                          ablation_rows)


def _uniform_bits(problem: Problem, spec: str) -> float:
    from dtypelab.model.stats import size_only
    from dtypelab.schemes import Scheme

    scheme = Scheme.parse(spec)
    bits = sum(size_only(w, scheme).storage_bits for n in problem.layers
               for w in layer_weights(problem.model.get_submodule(n)).values())
    return bits / sum(problem.numel)


def _seeds(problem: Problem) -> list[Genome]:
    """Uniform-rank assignments: every layer at its k-th cheapest kept option, for each k."""
    n_layers = len(problem.layers)
    most = max(len(o) for o in problem.options)
    seeds = []
    for k in range(most):
        weights = [min(k, len(o) - 1) for o in problem.options]
        acts = [len(problem.activations) - 1] * n_layers if problem.searches_activations else []
        seeds.append(tuple(weights + acts))
    return seeds


def _prior_seeds(problem: Problem, ranking: list[str], costs: list[list[float]], budget_bits: float
                 ) -> list[Genome]:
    """The ranking's seeds (:func:`.prior.prior_seeds` on the weight genes; activations as in :func:`_seeds`),
    with the activation genes' cost taken out of the budget."""
    n = len(problem.layers)
    acts = [len(problem.activations) - 1] * n if problem.searches_activations else []
    spent = sum(costs[n + i][g] for i, g in enumerate(acts))
    return [tuple(list(w) + acts) for w in prior_seeds(ranking, problem.layers, costs[:n], budget_bits - spent)]


def _front(result: GAResult, problem: Problem) -> list[Genome]:
    """Scored genomes not dominated in (bits, objective), best objective (usually the most bits) first."""
    genomes = list(result.scored)
    kept = pareto_indices([problem.bits_per_weight(g) for g in genomes], [result.scored[g] for g in genomes])
    return [genomes[i] for i in kept][::-1]


def _write_outputs(out: Path, result: SearchResult) -> None:
    from dtypelab.model.config import QuantConfig

    atomic_write(out / "best_config.yaml", QuantConfig.coerce(result.best.config).to_yaml())
    atomic_write(out / "results.json", json.dumps(result.to_json(), indent=2))
    key = result.primary_metric
    lines = ["label,bits_per_weight,objective," + key]
    lines += [f"{e.label},{e.bits_per_weight},{e.objective},{e.metrics[key]}" for e in result.pareto]
    atomic_write(out / "pareto.csv", "\n".join(lines) + "\n")
    atomic_write(out / "summary.md", result.table() + "\n")
    from dtypelab.report.result_plots import pareto_plot

    pareto_plot(result, out / "pareto.png")

