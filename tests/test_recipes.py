"""The recipe "Add a statistic" of docs/architecture.md, run: its entry, added to a copy of
lninspect.statistics in a fresh process, reaches every place the recipe says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lninspect

ARCHITECTURE = Path(__file__).parents[1] / "docs" / "architecture.md"

CHECK = """
import importlib.util, json, sys
source, entry = sys.argv[1], sys.argv[2]
text = open(source).read()
end = text.index("\\n)\\n# fmt: on")
spec = importlib.util.spec_from_loader("lninspect.statistics", loader=None)
module = importlib.util.module_from_spec(spec)
module.__file__ = source
sys.modules["lninspect.statistics"] = module
exec(compile(text[:end] + "\\n" + entry + text[end:], source, "exec"), module.__dict__)

import numpy as np, torch
from rich.console import Console
from lninspect import capture, statistics
from lninspect.comparison import norm_values
from lninspect.corpus.aggregator import Aggregator
from lninspect.render.stats_tables import stats_table
from lninspect.results import StatsResult
from lninspect.trends import norm_record

model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0))
with capture(model, reductions="eager") as cap:
    model(x)
result = cap.result()
want = model[0](x).detach().double().abs().mean(-1).numpy()
assert np.allclose(result.norms[0].input.absmean, want, rtol=1e-6)
doc = json.loads(json.dumps(result.to_json()))
assert doc["schema"] == statistics.schemas("stats")[-1] and doc["schema"].endswith("/6")
assert "absmean" in doc["norms"][0]["input"]
assert np.allclose(StatsResult.from_json(doc).norms[0].input.absmean, want, rtol=1e-6)
console = Console(width=200, record=True)
console.print(stats_table(result, wide=True))
assert "mean|x|" in console.export_text()
assert "absmean" in norm_record(result.norms[0]).quantiles
assert "absmean" in norm_values(result, result.norms[0], False).medians
assert "absmean" in Aggregator([], 4, torch.device("cpu")).keys
assert "`input.absmean`" in statistics.markdown_table()
print("recipe ok")
"""


def recipe_entry() -> str:
    """The python block of the recipe section."""
    section = ARCHITECTURE.read_text().split("## Recipe: add a statistic", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_add_a_statistic_recipe_works():
    source = str(Path(lninspect.__file__).parent / "statistics.py")
    done = subprocess.run(
        [sys.executable, "-c", CHECK, source, recipe_entry()], capture_output=True, text=True
    )
    assert done.returncode == 0 and "recipe ok" in done.stdout, done.stderr[-3000:]
