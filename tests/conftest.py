import importlib.util
import os
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def glossary_hook():
    """The MkDocs hook module hooks/glossary.py, imported as a plain module."""
    spec = importlib.util.spec_from_file_location("glossary_hook", ROOT / "hooks" / "glossary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["glossary_hook"] = module
    spec.loader.exec_module(module)
    return module


def build_site(cwd: Path, out: Path, config: Path | None = None,
               cache: Path | None = None) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the project in ``cwd`` into ``out``.

    ``cache``: the walkthrough's cache folder; by default a new empty one, so the build
    starts cold and the walkthrough trains for real.
    """
    # Never `-q`: it drops the warning count and lets a strict build pass with failing blocks.
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-d", str(out)]
    if config is not None:
        cmd += ["-f", str(config)]
    folder = str(cache) if cache is not None else tempfile.mkdtemp(prefix="llm-glossary-cache-")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "LLM_GLOSSARY_CACHE_DIR": folder}
    env.pop("LLM_GLOSSARY_NO_CACHE", None)
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1200)
    finally:
        if cache is None:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def site_cache(tmp_path_factory) -> Path:
    """The walkthrough cache of the session's site build: empty when that build starts."""
    return tmp_path_factory.mktemp("walkthrough-cache")


@pytest.fixture(scope="session")
def site(root, tmp_path_factory, site_cache) -> Path:
    """The site, built strictly once per test session (tests/test_site.py, tests/test_browser.py),
    from an empty walkthrough cache (the walkthrough trains for real)."""
    assert not any(site_cache.iterdir())
    out = tmp_path_factory.mktemp("site")
    result = build_site(root, out, cache=site_cache)
    assert result.returncode == 0, f"strict site build failed:\n{result.stdout[-5000:]}\n{result.stderr[-15000:]}"
    return out
