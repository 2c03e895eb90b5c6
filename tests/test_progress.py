"""Progress bars draw on a terminal or in a notebook, never into a log: no carriage-return floods."""
import io
import os
import subprocess
import sys

from nndl.base.progress import bars_visible, progress_bar

from conftest import ROOT


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_bars_draw_only_where_someone_watches():
    assert not bars_visible(io.StringIO())
    assert bars_visible(FakeTTY())
    log, tty = io.StringIO(), FakeTTY()
    for stream in (log, tty):
        for _ in progress_bar(range(50), file=stream, mininterval=0):
            pass
    assert log.getvalue() == "" and "\r" in tty.getvalue()
    for _ in progress_bar(range(5), file=FakeTTY(), enabled=False):
        pass


def test_cli_output_to_a_file_has_no_carriage_returns(tmp_path):
    """`nndl regress > log 2>&1` (CI, nohup, a cluster job): the epoch lines, no bar redraws."""
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "nndl", "regress", "--set", "epochs=40", "--out", tmp_path / "r",
                               "--no-figures"], stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text and "test_mse" in text
