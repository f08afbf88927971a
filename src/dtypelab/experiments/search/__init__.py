"""Mixed-configuration search: LPQ-style genetic search with a global-local contrastive objective."""

from dtypelab.experiments.search.ga import GAResult, GASettings, evolve, random_search
from dtypelab.experiments.search.objective import Objective, info_nce
from dtypelab.experiments.search.run import SearchResult, search

__all__ = ["search", "SearchResult", "GASettings", "GAResult", "Objective", "evolve", "random_search", "info_nce"]
