"""examples/tour.ipynb runs top to bottom in a real Jupyter kernel (nbclient + ipykernel), with no error."""
import os
from pathlib import Path

import pytest

from conftest import FASHION_DIR, ROOT, needs_fashion

nbformat = pytest.importorskip("nbformat", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")
pytest.importorskip("ipykernel", reason="pip install -e .[dev] (nbformat, nbclient, ipykernel)")

NOTEBOOK = ROOT / "examples" / "tour.ipynb"


@needs_fashion
def test_tour_notebook_executes_without_error(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel runs in a scratch folder (the runs/ it writes stay out of the checkout) and imports this nndl.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NNDL_DATA": str(FASHION_DIR), "OMP_NUM_THREADS": "1"}
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, on any error

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result" and "text/html" in o["data"]]
    assert len(html) >= 5 and all("data:image/png;base64," in page for page in html)  # runs, study, lr finder
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "resolved config" not in text  # quiet by default inside Jupyter
    assert "every fit finite: True" in text
    assert (tmp_path / "runs/tour-regress/metrics.json").exists() and (tmp_path / "runs/tour-study/study.json").exists()
    assert Path(NOTEBOOK).stat().st_size < 50_000  # shipped without outputs
