"""Mixed-configuration search: LPQ-style genetic search with a global-local contrastive objective."""

from dtypelab.search.ga import GAResult, GASettings, evolve, random_search
from dtypelab.search.objective import Objective, info_nce
from dtypelab.search.run import SearchResult, search

__all__ = ["search", "SearchResult", "GASettings", "GAResult", "Objective", "evolve", "random_search", "info_nce"]
