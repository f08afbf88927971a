"""The genetic algorithm: budget respected, reproducible, resumable, and better than random search."""

import random

import pytest

from dtypelab.experiments.search.ga import GASettings, cost, evolve, random_search, repair

GENES, OPTIONS = 16, 8
TARGET = [random.Random(7).randrange(OPTIONS) for _ in range(GENES)]
COSTS = [[float(o) for o in range(OPTIONS)] for _ in range(GENES)]


def distance(genomes):
    return [float(sum((g - t) ** 2 for g, t in zip(genome, TARGET, strict=True))) for genome in genomes]


def test_every_scored_genome_fits_the_budget():
    budget = 40.0
    result = evolve(distance, COSTS, budget, GASettings(population=16, generations=6, seed=1))
    assert result.scored and all(cost(g, COSTS) <= budget for g in result.scored)
    assert result.best_fitness == min(result.scored.values())


def test_repair_moves_to_cheaper_options_until_feasible():
    genome = repair([7] * GENES, COSTS, 20.0, random.Random(0))
    assert cost(genome, COSTS) <= 20.0
    with pytest.raises(ValueError, match="budget"):
        repair([0] * GENES, [[1.0]] * GENES, 3.0, random.Random(0))


def test_same_seed_same_result():
    a = evolve(distance, COSTS, 1e9, GASettings(population=12, generations=5, seed=3))
    b = evolve(distance, COSTS, 1e9, GASettings(population=12, generations=5, seed=3))
    assert a.best == b.best and a.history == b.history


def test_resume_after_interruption_loses_nothing(tmp_path):
    ckpt = tmp_path / "ckpt.json"
    full = evolve(distance, COSTS, 1e9, GASettings(population=12, generations=8, seed=5))
    partial = evolve(distance, COSTS, 1e9, GASettings(population=12, generations=4, seed=5), checkpoint=ckpt)
    calls = []

    def counting(genomes):
        calls.extend(genomes)
        return distance(genomes)

    resumed = evolve(counting, COSTS, 1e9, GASettings(population=12, generations=8, seed=5), checkpoint=ckpt,
                     resume=True)
    assert resumed.best == full.best and resumed.history == full.history
    assert len(calls) == full.evaluations - partial.evaluations  # only the new generations were scored


def test_ga_beats_random_search_with_same_evaluations():
    ga = evolve(distance, COSTS, 1e9, GASettings(population=20, generations=15, seed=0))
    rnd = random_search(distance, COSTS, 1e9, ga.evaluations, seed=1)
    assert rnd.evaluations == ga.evaluations
    assert ga.best_fitness < rnd.best_fitness


def test_random_search_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "random.json"
    full = random_search(distance, COSTS, 1e9, 50, seed=3)
    done = []

    def dies_after_two_chunks(genomes):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(genomes)
        return distance(genomes)

    with pytest.raises(KeyboardInterrupt):
        random_search(dies_after_two_chunks, COSTS, 1e9, 50, seed=3, checkpoint=ckpt, chunk=10)
    calls = []

    def counting(genomes):
        calls.extend(genomes)
        return distance(genomes)

    resumed = random_search(counting, COSTS, 1e9, 50, seed=3, checkpoint=ckpt, resume=True, chunk=10)
    assert resumed.best == full.best and resumed.scored == full.scored
    assert len(calls) == 30  # the two scored chunks were not scored again


def test_seeds_join_the_population():
    result = evolve(distance, COSTS, 1e9, GASettings(population=8, generations=1, seed=0), seeds=[tuple(TARGET)])
    assert result.best == tuple(TARGET) and result.best_fitness == 0.0


def test_bad_settings():
    with pytest.raises(ValueError, match="population"):
        GASettings(population=1)
    with pytest.raises(ValueError, match="elite"):
        GASettings(population=4, elite=4)
