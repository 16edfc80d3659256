"""The copies between the pipelines match their sources (scripts/check_copies.py), and the
checker catches a drifted copy, repairs it with --fix, and reports a note naming no source."""
import importlib.util
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_copies", ROOT / "scripts" / "check_copies.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module       # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_copies = _checker()

SOURCE = '''\
class Text2Img:
    @staticmethod
    def width(c: int) -> int:
        """Text2Img's width."""
        return c + 1

    def __call__(self, x):
        y = x * 2
        # Block: decode
        name = "text2img"
        out = [y, name]
        # End block
        return out
'''

COPIES = '''\
class Img2Img:
    # Copied from ldm_core.a.Text2Img.width with Text2Img->Img2Img
    @staticmethod
    def width(c: int) -> int:
        """Img2Img's width."""
        return c + 1

    def __call__(self, x):
        y = x * 3
        # Copied from ldm_core.a.Text2Img.__call__: decode
        name = "text2img"
        out = [y, name]
        # End copy
        return out


# Copied from ldm_core.a.Text2Img.width
@staticmethod
def width(c: int) -> int:
    """Text2Img's width."""
    return c + 1
'''


def _tree(tmp_path: Path, copies: str = COPIES) -> Path:
    (tmp_path / "ldm_core").mkdir()
    (tmp_path / "ldm_core" / "a.py").write_text(SOURCE)
    (tmp_path / "ldm_core" / "b.py").write_text(copies)
    return tmp_path


def test_the_repositorys_copies_match_their_sources():
    report = check_copies.check(ROOT)
    assert report.copies, "the pipelines carry copy notes"
    assert report.ok, "\n".join([d for _, d in report.drifted] + report.errors)


def test_matching_copies_pass_and_patterns_apply(tmp_path, capsys):
    root = _tree(tmp_path)
    assert check_copies.main(["--root", str(root)]) == 0
    assert "all 3 copies match" in capsys.readouterr().out


def test_a_drifted_copy_is_caught_and_fix_repairs_it(tmp_path, capsys):
    drifted = COPIES.replace("        return c + 1\n", "        return c + 2\n", 1)   # the method copy
    drifted = drifted.replace("out = [y, name]", "out = [name]")                      # the block copy
    root = _tree(tmp_path, drifted)
    assert check_copies.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "ldm_core/b.py:2: copy of ldm_core.a.Text2Img.width has drifted" in out
    assert "ldm_core/b.py:10: copy of ldm_core.a.Text2Img.__call__: decode has drifted" in out
    assert "-        return c + 1" in out and "+        return c + 2" in out
    assert check_copies.main(["--root", str(root), "--fix"]) == 0
    assert (root / "ldm_core" / "b.py").read_text() == COPIES
    assert check_copies.main(["--root", str(root)]) == 0


def test_a_note_naming_a_missing_source_or_malformed_is_an_error(tmp_path, capsys):
    bad = COPIES + textwrap.dedent('''

        # Copied from ldm_core.a.Text2Img.missing
        def missing():
            pass


        def f():
            # Copied from ldm_core.a.Text2Img.__call__: encode
            pass
            # End copy


        # Copied from ldm_core.nowhere.f
        def g():
            pass


        # Copied from ldm_core.a.Text2Img.width, more or less
        def h():
            pass
        ''')
    root = _tree(tmp_path, bad)
    assert check_copies.main(["--root", str(root), "--fix"]) == 1
    out = capsys.readouterr().out
    assert "ldm_core/b.py:24: source ldm_core.a.Text2Img.missing not found" in out
    assert "ldm_core/b.py:30: source ldm_core.a.Text2Img.__call__: encode not found" in out
    assert "ldm_core/b.py:35: source ldm_core.nowhere.f not found" in out
    assert "ldm_core/b.py:40: malformed note" in out
