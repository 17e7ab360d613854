import re

import pytest

from histosynth.registry import Registry, RegistryError, import_target


def test_register_get_and_list_sorted():
    reg: Registry[int] = Registry("thing")
    reg.register("b", 2, "second")
    reg.register("a", 1)
    assert reg.get("a") == 1 and reg.get("b") == 2
    assert list(reg) == ["a", "b"]
    assert [e.summary for e in reg.entries()] == ["", "second"]
    assert "a" in reg and "zz" not in reg and 3 not in reg


def test_duplicate_name_raises():
    reg: Registry[int] = Registry("thing")
    reg.register("x", 1)
    with pytest.raises(ValueError, match="already registered"):  # a bug in the registering code, not user input
        reg.register("x", 2)
    assert reg.get("x") == 1


def test_unknown_name_suggests_closest():
    reg: Registry[int] = Registry("encoder")
    for name in ("dinov2-vits14", "dinov2-vitb14", "inception"):
        reg.register(name, 0)
    with pytest.raises(RegistryError) as info:
        reg.get("dinov2-vit14")
    message = str(info.value)
    assert "unknown encoder 'dinov2-vit14'" in message and "did you mean" in message and "dinov2-vits14" in message


def test_lazy_entry_imports_only_on_get():
    reg: Registry[object] = Registry("thing")
    reg.register("dumps", "json:dumps")
    reg.register("broken", "histosynth_no_such_module:thing")
    assert reg.entries()[1].is_lazy
    import json

    assert reg.get("dumps") is json.dumps
    with pytest.raises(ModuleNotFoundError):
        reg.get("broken")


def test_import_target_rejects_malformed_strings():
    with pytest.raises(ValueError, match="module:attr"):
        import_target("json.dumps")


def test_decorator_and_resolver():
    reg: Registry[object] = Registry("thing", resolver=lambda n: n.upper() if n.startswith("dyn-") else None)

    @reg.decorator("f", "a function")
    def f():
        return 1

    assert reg.get("f") is f
    assert reg.get("dyn-x") == "DYN-X" and "dyn-y" in reg
    with pytest.raises(RegistryError):
        reg.get("other")


def test_every_published_generator_has_a_complete_bibtex_entry():
    from histosynth.generators.registry import GENERATOR_META

    for name, meta in GENERATOR_META.items():
        if meta.family == "reference":
            continue  # reference rows cite no paper
        entry = meta.citation
        assert entry.startswith("@") and entry.rstrip().endswith("}"), name
        for field in ("title", "author", "year"):
            assert re.search(rf"^\s*{field}\s*=\s*\{{.+\}}", entry, re.M), f"{name}: BibTeX without {field}"


def test_unknown_message_names_the_resolver_patterns_and_refuses_non_strings():
    reg: Registry[str] = Registry("metric", resolver=lambda n: n if n.endswith("_ratio") else None,
                                  patterns=("<metric>_ratio",))
    reg.register("fd", "fd")
    assert reg.get("fd_ratio") == "fd_ratio"
    with pytest.raises(RegistryError, match=r"unknown metric 'fid'; did you mean 'fd'\? \(known: fd; and <metric>_ratio\)"):
        reg.get("fid")
    for name in (None, ["fd"], 3):
        with pytest.raises(RegistryError, match=re.escape(f"unknown metric {name!r} (known: fd")):
            reg.get(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("target, lookup, typo, meant", [
    ("histosynth.benchmark.metric_registry:METRICS", "histosynth.benchmark.metric_registry:metric_spec", "mio", "miou"),
    ("histosynth.generators.conditioning.registry:CONDITIONERS",
     "histosynth.generators.conditioning.registry:conditioner_from_config", "tissue-onehot", "tissue-one-hot"),
    ("histosynth.generators.diffusion.sampling:SAMPLERS", "histosynth.generators.diffusion.sampling:make_sampler",
     "ddmi", "ddim"),
    ("histosynth.baselines.harp_inpaint.model:SAMPLERS", None, "repiant", "repaint"),
])
def test_the_tables_of_named_things_are_registries(target, lookup, typo, meant):
    table = import_target(target)
    assert isinstance(table, Registry) and meant in table
    calls = {"metric_spec": lambda f: f(typo), "conditioner_from_config": lambda f: f({"name": typo}),
             "make_sampler": lambda f: f(typo, {})}
    with pytest.raises(RegistryError, match=f"did you mean [^?]*'{re.escape(meant)}'"):
        if lookup is None:
            table.get(typo)
        else:
            function = import_target(lookup)
            calls[function.__name__](function)
