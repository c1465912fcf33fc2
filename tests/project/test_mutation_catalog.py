"""The mutation catalog stays applicable (tests/mutations/catalog.py; `python -m tests.mutations`
runs it, outside this suite): every snippet occurs exactly once in its file, and every test it
names exists. Nothing is mutated here."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_catalog():
    spec = importlib.util.spec_from_file_location("mutation_catalog",
                                                  ROOT / "tests" / "mutations" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTATIONS


def test_every_mutation_applies_once_and_names_existing_tests():
    mutations = load_catalog()
    ids = [m.id for m in mutations]
    assert len(ids) == len(set(ids)), "duplicate mutation ids"
    assert len(mutations) >= 45
    for m in mutations:
        assert m.file.startswith("jaxformer/"), m.id
        path = ROOT / m.file
        assert path.is_file(), f"{m.id}: no {m.file}"
        count = path.read_text().count(m.old)
        assert count == 1, f"{m.id}: its snippet occurs {count} times in {m.file}, not once"
        assert m.new != m.old, m.id
        assert m.tests, f"{m.id} names no tests"
        for test in m.tests:
            file, _, name = test.partition("::")
            assert (ROOT / file).is_file(), f"{m.id}: no {file}"
            if name:
                function = name.split("::")[-1].split("[")[0]
                assert re.search(rf"^\s*def {re.escape(function)}\(", (ROOT / file).read_text(),
                                 re.M), f"{m.id}: no test {function} in {file}"
