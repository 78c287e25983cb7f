"""Every function the package registers has an entry point in setup.py that imports to
that very function, so a config naming it (also in a shared tok2vec) resolves without
importing the package."""

import ast
import importlib
from pathlib import Path

from spacy.util import registry

import spacy_hybridner  # noqa: F401 (registers everything by decorator)

ROOT = Path(__file__).parent.parent


def setup_entry_points():
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf8"))
    call = next(
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    groups = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    parsed = {}
    for group, lines in groups.items():
        parsed[group] = {}
        for line in lines:
            name, target = (part.strip() for part in line.split("=", 1))
            parsed[group][name] = target
    return parsed


def resolve(target):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def registered_by_package():
    found = {}
    for registry_name in registry.get_registry_names():
        # the registry's entry-point group: spacy_<name>, or thinc_<name> for the ones spaCy
        # shares with thinc (schedules); factories load from spacy_factories
        group = getattr(registry, registry_name).entry_point_namespace
        if registry_name == "factories":
            group = "spacy_factories"
        for name, func in getattr(registry, registry_name).get_all().items():
            if getattr(func, "__module__", "").startswith("spacy_hybridner"):
                found[(group, name)] = func
    return found


def test_every_registered_function_has_an_entry_point():
    entry_points = setup_entry_points()
    registered = registered_by_package()
    assert ("spacy_architectures", "spacy-hybridner.CharMultiHashEmbed.v3") in registered
    assert ("spacy_factories", "hybrid_ner") in registered
    missing = [key for key in registered if key[1] not in entry_points.get(key[0], {})]
    assert missing == []
    for (group, name), func in registered.items():
        assert resolve(entry_points[group][name]) is func, (group, name)


def test_every_entry_point_is_registered():
    registered = registered_by_package()
    for group, names in setup_entry_points().items():
        if group.startswith(("spacy_", "thinc_")):
            for name, target in names.items():
                assert registered.get((group, name)) is resolve(target), (group, name)
