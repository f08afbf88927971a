"""The experiments layer loads lazily and keeps its heavy dependencies (Ray, plotting, models) for when it runs."""

import json
import subprocess
import sys


def test_import_is_light():
    heavy = ["ray", "matplotlib", "transformers", "sklearn"]
    code = ("import json, sys, dtypelab\n"
            f"at_import = [m for m in {heavy + ['dtypelab.experiments', 'dtypelab.report']!r} if m in sys.modules]\n"
            "import dtypelab.experiments, dtypelab.experiments.sweep\n"
            f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
            "print(json.dumps([at_import, loaded, dtypelab.search.search.__module__]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [[], [], "dtypelab.experiments.search.run"]
