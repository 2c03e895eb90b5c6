import numpy as np
import pytest

from nndl.data.regression_table import GAPS, bundled_path, make_synthetic, read_csv
from nndl.base.errors import NndlError

from conftest import ROOT, run_cli


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_header_xy(tmp_path):
    d = read_csv(write(tmp_path, "x,y\n1,2\n3,4\n"))
    assert d.x.shape == (2, 1) and d.x_names == ["x"] and d.y_name == "y"
    np.testing.assert_allclose(d.y, [2, 4])


def test_header_input_label_and_named_columns(tmp_path):
    p = write(tmp_path, "a,input,b,label\n1,2,3,4\n5,6,7,8\n")
    d = read_csv(p, ["input", "b"], "label")
    np.testing.assert_allclose(d.x, [[2, 3], [6, 7]])
    np.testing.assert_allclose(d.y, [4, 8])
    d = read_csv(p)  # default: last column is the target
    assert d.x.shape == (2, 3) and d.y_name == "label"


def test_no_header_multicolumn(tmp_path):
    d = read_csv(write(tmp_path, "1,2,3\n4,5,6\n7,8,9\n"))
    assert not d.has_header and d.x.shape == (3, 2)
    np.testing.assert_allclose(d.y, [3, 6, 9])


def test_matches_numpy_reader_on_bundled_data():
    d = read_csv(bundled_path("regression_train.csv"))
    ref = np.loadtxt(bundled_path("regression_train.csv"), delimiter=",", skiprows=1)
    np.testing.assert_allclose(d.x[:, 0], ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(d.y, ref[:, 1], rtol=1e-6)


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("x,y\n1,abc\n", "row 2, column 'y': 'abc' is not a number"),
    ("x,y\n1,nan\n", "not finite"),
    ("x,y\n1,inf\n", "not finite"),
    ("x,y\n1,2\n3\n", "row 3 has 1 columns, expected 2"),
    ("x,y\n", "no data rows"),
])
def test_bad_input_names_file_and_place(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(NndlError) as e:
        read_csv(p)
    assert str(p) in str(e.value) and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_column_lists_columns(tmp_path):
    p = write(tmp_path, "x,y\n1,2\n")
    with pytest.raises(NndlError, match="no column named 'z'; columns are x, y"):
        read_csv(p, ["z"])
    with pytest.raises(NndlError, match="no header"):
        read_csv(write(tmp_path, "1,2\n", "h.csv"), ["x"])


def test_bundled_data_is_the_documented_generator_output():
    x_train, y_train, x_test, y_test = make_synthetic(seed=2024)
    d = read_csv(bundled_path("regression_train.csv"))
    t = read_csv(bundled_path("regression_test.csv"))
    np.testing.assert_allclose(d.x[:, 0], x_train, atol=1e-5)
    np.testing.assert_allclose(t.y, y_test, atol=1e-5)
    assert len(d.y) == 100 and len(t.y) == 100
    for a, b in GAPS:  # no training point falls in a gap; some test points do
        assert not ((d.x > a) & (d.x < b)).any()
        assert ((t.x > a) & (t.x < b)).any()


@pytest.mark.parametrize("content, extra, needle", [
    ("", [], "empty"),
    ("x,y\n1,abc\n2,3\n", [], "is not a number"),
    ("x,y\n1,2\n1,nan\n", [], "not finite"),
    ("x,y\n1,2\n3\n", [], "columns, expected"),
    ("x,y\n1,2\n3,4\n", ["--x-cols", "q"], "no column named 'q'"),
    ("x,y\n1,2\n3,4\n", [], "fewer than folds"),
])
def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, content, extra, needle):
    bad = write(tmp_path, content, "bad.csv")
    out = tmp_path / "run"
    proc = run_cli("regress", "--train", bad, "--out", out, "--no-progress", *extra)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
