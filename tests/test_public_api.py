"""The names `ckpt_tools` promises to pipelines resolve, and `import ckpt_tools` is cheap."""

import subprocess
import sys

import ckpt_tools


def test_every_export_resolves_to_the_same_object_every_time():
    import types
    for name in ckpt_tools.__all__:
        first = getattr(ckpt_tools, name)
        assert first is getattr(ckpt_tools, name), name  # a submodule import must not shadow it
        assert not isinstance(first, types.ModuleType), name


def test_calls_named_like_their_module():
    from ckpt_tools.diff import diff
    from ckpt_tools.download import download
    from ckpt_tools.validate import validate
    from ckpt_tools.verify import verify
    assert all(callable(f) for f in (diff, download, validate, verify))


def test_import_does_not_pull_numpy():
    code = "import sys, ckpt_tools; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
