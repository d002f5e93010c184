import subprocess
import sys

import pytest

from essence.cli import main
from essence.methods import METHODS


def test_list_shows_all_nine_with_status(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        info = METHODS.get(name)
        assert info.cli_name in out
    assert len(METHODS) == 9
    assert "not implemented yet" in out or all(METHODS.get(n).implemented for n in METHODS)


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["reproduc", "moco"], 2, "did you mean 'reproduce'?"),
        (["reproduce", "mcoo"], 2, "did you mean 'moco'?"),
        (["deepsalience"], 2, "did you mean 'deep-salience'?"),
        (["reproduce", "all", "--preset", "huge"], 2, "invalid choice"),
    ],
)
def test_unknown_names_exit_2_with_suggestion(argv, code, message, capsys):
    with pytest.raises(SystemExit) if argv[-1] == "huge" else _nullcontext() as exc:
        rc = main(argv)
    if argv[-1] == "huge":
        rc = exc.value.code
    captured = capsys.readouterr()
    assert rc == code
    assert message in " ".join((captured.out + captured.err).split())


def test_unimplemented_method_is_honest(capsys):
    pending = [n for n in METHODS if not METHODS.get(n).implemented]
    if not pending:
        pytest.skip("every method is implemented")
    assert main([pending[0]]) == 2
    assert "not implemented yet" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "essence", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "reproduce" in out.stdout


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_missing_extra_names_the_extra(monkeypatch):
    import importlib

    from essence import methods

    info = methods.METHODS.get("moco")
    monkeypatch.setitem(methods.METHODS._items, "moco", methods.MethodInfo(**{**info.__dict__, "implemented": True}))

    def fake_import(name, *a, **k):
        raise ModuleNotFoundError("No module named 'kornia'", name="kornia")

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(methods.MissingExtraError, match=r"pip install 'essence\[vision\]'"):
        methods.import_method("moco")
    assert main(["moco", "--help"]) == 1
