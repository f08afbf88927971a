"""Does the sensitivity ranking as a prior make the search converge in fewer evaluations?

On one workload (default digits-vgg, space lp, budget 5 bits/weight), the GA is run with the default seeds
(uniform assignments) and with the ranking's seeds first (``search(..., prior=...)``), for several GA seeds,
on one problem (same candidates, costs and objective). For each pair two targets, each a final best objective
plus ``--tolerance`` times its magnitude (the objective is minimised and may be negative): the lower of the two
final bests (a run that never reached it prints ``-``) and the higher one (both runs reach it); the figures are
the numbers of evaluations each run needed before its best reached the target. The ranking comes from ``dtypelab
sensitivity`` (``--prior RUN_DIR``), or is measured here with ``--scheme`` and written to
``runs/sensitivity-WORKLOAD``.

    nice python benchmarks/search_prior.py [--workload digits-vgg] [--space lp] [--budget 5] [--seeds 0 1 2]
                                           [--prior runs/sensitivity-digits-vgg] [--scheme int4/channel/absmax]
                                           [--population 24] [--generations 12] [--batches 2] [--local-samples 16]

``--batches`` (calibration batches the objective's output term runs on) and ``--local-samples`` (inputs per layer
for its local term) set the cost of one evaluation; a smaller ``--population`` / ``--generations`` a run's. A
cheap budget that finishes in about 15 min on two shared cores (sensitivity measured beforehand)::

    nice python benchmarks/search_prior.py --prior runs/sensitivity-digits-vgg --population 12 --generations 6 \
        --batches 1 --local-samples 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dtypelab._markdown import markdown_table
from dtypelab.experiments.search.ga import GASettings, evolve
from dtypelab.experiments.search.prior import load_ranking
from dtypelab.experiments.search.problem import build_problem
from dtypelab.experiments.search.run import CONTRASTIVE, DEFAULT_ACTIVATIONS, Score, _prior_seeds, _seeds


def evaluations_to(history: list[dict], target: float) -> int | None:
    """Evaluations done when the best first reached ``target`` (None: never)."""
    return next((h["evaluations"] for h in history if h["best"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="digits-vgg")
    parser.add_argument("--space", default="lp")
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--batches", type=int, default=2, help="calibration batches the objective runs on")
    parser.add_argument("--local-samples", type=int, default=16, help="inputs per layer for the local term")
    parser.add_argument("--json", type=Path, default=None, help="also write each run's history here")
    parser.add_argument("--prior", type=Path, default=None)
    parser.add_argument("--scheme", default="int4/channel/absmax", help="sensitivity scheme when measured here")
    parser.add_argument("--limit", type=int, default=500, help="test items for the sensitivity's metric")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dtypelab import workloads
    from dtypelab.experiments.sensitivity import sensitivity, write

    wl = workloads.get(args.workload)
    if args.prior is None:
        start = time.perf_counter()
        result = sensitivity(wl, args.scheme, limit=args.limit)
        args.prior = Path("runs") / f"sensitivity-{wl.name}"
        write(result, args.prior)
        print(f"sensitivity ({args.scheme}, {time.perf_counter() - start:.0f} s) -> {args.prior}")
    ranking = load_ranking(args.prior)
    print("ranking:", ", ".join(ranking))
    problem = build_problem(wl, args.space, [DEFAULT_ACTIVATIONS.get(args.space)], batches=args.batches,
                            local_samples=args.local_samples)
    costs = problem.gene_costs()
    budget = args.budget * sum(problem.numel)
    score = Score(problem, CONTRASTIVE)

    def fitness(genomes):
        return [score(g) for g in genomes]

    uniform = _seeds(problem)
    seeded = _prior_seeds(problem, ranking, costs, budget) + uniform
    rows, gains, runs = [], [], []
    for seed in args.seeds:
        ga = GASettings(population=args.population, generations=args.generations, seed=seed)
        start = time.perf_counter()
        plain, prior = evolve(fitness, costs, budget, ga, seeds=uniform), evolve(fitness, costs, budget, ga,
                                                                                   seeds=seeded)
        low, high = sorted((plain.best_fitness, prior.best_fitness))
        target, common = low + args.tolerance * abs(low), high + args.tolerance * abs(high)
        a, b = evaluations_to(plain.history, target), evaluations_to(prior.history, target)
        c, d = evaluations_to(plain.history, common), evaluations_to(prior.history, common)
        if a is not None and b is not None:
            gains.append(a / b)
        rows.append([seed, plain.history[0]["best"], prior.history[0]["best"], plain.best_fitness,
                     prior.best_fitness, "-" if a is None else a, "-" if b is None else b, c, d,
                     plain.evaluations, prior.evaluations])
        print(f"GA seed {seed}: {rows[-1][1:]} ({time.perf_counter() - start:.0f} s)", flush=True)
        runs.append({"seed": seed, "uniform": plain.history, "prior": prior.history})
        if args.json:
            args.json.write_text(json.dumps({"settings": vars(args) | {"prior": str(args.prior), "json": None},
                                             "runs": runs}, indent=1))
    print(markdown_table(["GA seed", "gen-0 best (uniform)", "gen-0 best (prior)", "final best (uniform)",
                          "final best (prior)", "evals to lower final (uniform)", "evals to lower final (prior)",
                          "evals to higher final (uniform)", "evals to higher final (prior)", "evals (uniform)",
                          "evals (prior)"], rows))
    if gains:
        print(f"evaluations to the lower final best, uniform / prior: {min(gains):.2f} .. {max(gains):.2f} "
              f"(median {statistics.median(gains):.2f}) over {len(gains)} seeds with both reaching it")


if __name__ == "__main__":
    main()
