"""The names `ckpt_tools` promises to pipelines resolve, and `import ckpt_tools` is cheap."""

import subprocess
import sys

import ckpt_tools


def test_every_export_resolves():
    for name in ckpt_tools.__all__:
        assert getattr(ckpt_tools, name) is not None, name


def test_import_does_not_pull_numpy():
    code = "import sys, ckpt_tools; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
