"""The benchmark's optional dependencies, checked before any work starts.

scikit-learn fits the membership-inference attack and matplotlib draws the plot. Both are
in the `eval` extra; without this check a missing one failed only after the whole run.
"""

from __future__ import annotations

import importlib.util

# import name -> distribution name, as pip knows it
OPTIONAL = {"sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def missing_optional() -> list[str]:
    """The distribution names of the optional dependencies that cannot be imported."""
    return [dist for module, dist in OPTIONAL.items() if importlib.util.find_spec(module) is None]


def check_optional_dependencies() -> None:
    """Raise SystemExit naming `pip install ssd_fast[eval]` when an optional dependency is missing."""
    missing = missing_optional()
    if missing:
        raise SystemExit(
            f"python -m ssd_fast.eval.bench needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: run `pip install ssd_fast[eval]` "
            f"(or `pip install {' '.join(missing)}`)"
        )
