import importlib.util
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
