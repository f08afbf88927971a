"""A genetic algorithm over per-layer choices, with a hard bit budget, checkpoints and resume.

A genome is a tuple of option indices, one gene per decision (a layer's weight scheme, its activation scheme).
Each gene has a cost; a genome is feasible when its total cost is within the budget (the search turns
"average stored bits per weight" into this form). Infeasible children are repaired: random genes are moved
to cheaper options until the genome fits. Lower fitness is better.

Per generation: elitism (the best ``elite`` survive unchanged), tournament selection, uniform crossover,
per-gene mutation. Fitness values are memoised, so a genome is never scored twice. Every generation is
checkpointed atomically (JSON); ``resume=True`` continues from the checkpoint with nothing lost and gives
the same result as an uninterrupted run with the same seed.

Example:
    >>> costs = [[1, 2, 3]] * 4                        # 4 genes, options cost 1, 2, 3
    >>> fitness = lambda gs: [-sum(g) for g in gs]     # wants the costliest options...
    >>> r = evolve(fitness, costs, budget=9, settings=GASettings(generations=15, population=12, seed=0))
    >>> sum(r.best), r.best_fitness                    # ...but the budget allows total cost 9
    (5, -5.0)
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dtypelab._io import atomic_write

Genome = tuple[int, ...]
Fitness = Callable[[list[Genome]], list[float]]  # scores a batch (lets an executor parallelise)


@dataclass(frozen=True)
class GASettings:
    population: int = 24
    generations: int = 12
    elite: int = 2
    tournament: int = 3
    crossover_rate: float = 0.9
    mutation_rate: float | None = None  # per gene; default 1 / number of genes
    seed: int = 0

    def __post_init__(self) -> None:
        if self.population < 2 or self.generations < 1:
            raise ValueError(f"need population >= 2 and generations >= 1, got {self.population}, {self.generations}")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"elite must be in [0, population), got {self.elite}")


@dataclass
class GAResult:
    best: Genome
    best_fitness: float
    history: list[dict] = field(default_factory=list)  # per generation: best, mean, evaluations
    scored: dict[Genome, float] = field(default_factory=dict)  # every genome evaluated

    @property
    def evaluations(self) -> int:
        return len(self.scored)


def cost(genome: Sequence[int], costs: Sequence[Sequence[float]]) -> float:
    return float(sum(costs[i][g] for i, g in enumerate(genome)))


def repair(genome: list[int], costs: Sequence[Sequence[float]], budget: float, rng: random.Random) -> Genome:
    """Move random genes to strictly cheaper options until the genome fits the budget."""
    while cost(genome, costs) > budget:
        movable = [i for i, g in enumerate(genome) if min(costs[i]) < costs[i][g]]
        if not movable:
            raise ValueError(f"no assignment fits the budget {budget}: the cheapest costs {cost(genome, costs)}")
        i = rng.choice(movable)
        cheaper = [o for o in range(len(costs[i])) if costs[i][o] < costs[i][genome[i]]]
        genome[i] = max(cheaper, key=lambda o: costs[i][o])  # the next cheaper option
    return tuple(genome)


def random_genome(costs: Sequence[Sequence[float]], budget: float, rng: random.Random) -> Genome:
    return repair([rng.randrange(len(c)) for c in costs], costs, budget, rng)


def evolve(fitness: Fitness, costs: Sequence[Sequence[float]], budget: float, settings: GASettings = GASettings(),
           seeds: Sequence[Genome] = (), checkpoint: str | os.PathLike | None = None, resume: bool = False,
           progress: Callable[[dict], None] | None = None) -> GAResult:
    """Minimise ``fitness`` over feasible genomes. ``seeds`` (e.g. uniform configs) join the first population."""
    rng = random.Random(settings.seed)
    mutation = settings.mutation_rate if settings.mutation_rate is not None else 1.0 / max(len(costs), 1)
    scored: dict[Genome, float] = {}
    history: list[dict] = []
    start = 0
    state = _load(checkpoint) if resume and checkpoint and Path(checkpoint).exists() else None
    if state is not None:
        try:
            rng.setstate(_rng_state(state["rng"]))
            scored = _scored(state, costs)
            history = list(state["history"])
            population = [_genome(g, costs) for g in state["population"]]
            start = int(state["generation"]) + 1
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {str(checkpoint)!r} is damaged ({type(err).__name__}: {err}); delete it "
                             "to start afresh") from None
    else:
        population = [tuple(s) for s in seeds if cost(s, costs) <= budget][: settings.population]
        while len(population) < settings.population:
            population.append(random_genome(costs, budget, rng))
        _score(population, fitness, scored)

    for generation in range(start, settings.generations):
        if generation > 0 or state is not None:
            ranked = sorted(population, key=lambda g: scored[g])
            children = ranked[: settings.elite]
            while len(children) < settings.population:
                a, b = _tournament(ranked, scored, settings.tournament, rng), _tournament(ranked, scored,
                                                                                          settings.tournament, rng)
                child = list(a)
                if rng.random() < settings.crossover_rate:
                    child = [x if rng.random() < 0.5 else y for x, y in zip(a, b, strict=True)]
                child = [rng.randrange(len(costs[i])) if rng.random() < mutation else g for i, g in enumerate(child)]
                children.append(repair(child, costs, budget, rng))
            population = children
            _score(population, fitness, scored)
        values = [scored[g] for g in population]
        record = {"generation": generation, "best": min(values), "mean": sum(values) / len(values),
                  "evaluations": len(scored)}
        history.append(record)
        if progress:
            progress(record)
        if checkpoint:
            _save(checkpoint, {"generation": generation, "population": [list(g) for g in population],
                               "scored": [[list(g), f] for g, f in scored.items()], "history": history,
                               "rng": _rng_json(rng.getstate()), "settings": asdict(settings)})
    best = min(scored, key=lambda g: (scored[g], g))
    return GAResult(best, scored[best], history, scored)


def random_search(fitness: Fitness, costs: Sequence[Sequence[float]], budget: float, evaluations: int,
                  seed: int = 0, checkpoint: str | os.PathLike | None = None, resume: bool = False,
                  chunk: int = 24) -> GAResult:
    """The baseline: ``evaluations`` distinct random feasible genomes (fewer if the space is smaller), scored
    ``chunk`` at a time; the scores so far are checkpointed after each chunk, and ``resume=True`` scores only
    the rest (the genomes follow from ``seed``, so the result is that of an uninterrupted run)."""
    rng = random.Random(seed)
    scored: dict[Genome, float] = {}
    if resume and checkpoint and Path(checkpoint).exists():
        try:
            scored = _scored(_load(checkpoint), costs)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"checkpoint {str(checkpoint)!r} is damaged ({type(err).__name__}: {err}); delete it "
                             "to start afresh") from None
    batch: list[Genome] = []
    attempts = 0
    while len(batch) < evaluations and attempts < 50 * evaluations:
        g = random_genome(costs, budget, rng)
        attempts += 1
        if g not in batch:
            batch.append(g)
    for start in range(0, len(batch), chunk):
        _score(batch[start:start + chunk], fitness, scored)
        if checkpoint:
            _save(checkpoint, {"seed": seed, "scored": [[list(g), f] for g, f in scored.items()]})
    best = min(scored, key=lambda g: (scored[g], g))
    return GAResult(best, scored[best], [], scored)


def _score(population: list[Genome], fitness: Fitness, scored: dict[Genome, float]) -> None:
    new = list(dict.fromkeys(g for g in population if g not in scored))
    if new:
        for g, f in zip(new, fitness(new), strict=True):
            scored[g] = float(f)


def _tournament(ranked: list[Genome], scored: dict[Genome, float], k: int, rng: random.Random) -> Genome:
    return min(rng.sample(ranked, min(k, len(ranked))), key=lambda g: scored[g])


def _rng_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def _save(path: str | os.PathLike, state: dict) -> None:
    atomic_write(path, json.dumps(state))


def _load(path: str | os.PathLike) -> dict:
    try:
        with open(path) as f:
            state = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {str(path)!r} is not JSON ({err}); delete it to start afresh") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a checkpoint; delete it")
    return state


def _genome(genes: object, costs: Sequence[Sequence[float]]) -> Genome:
    """A stored genome, checked against this search's genes (a checkpoint of another search does not fit)."""
    if (not isinstance(genes, list) or len(genes) != len(costs)
            or not all(isinstance(g, int) and 0 <= g < len(c) for g, c in zip(genes, costs, strict=True))):
        raise ValueError(f"genome {genes!r} does not fit this search's {len(costs)} genes")
    return tuple(genes)


def _scored(state: dict, costs: Sequence[Sequence[float]]) -> dict[Genome, float]:
    return {_genome(g, costs): float(f) for g, f in state["scored"]}
