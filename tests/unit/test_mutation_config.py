"""`make mutate` cannot rot between the sessions that run it (it is not in CI: a full run takes long): every
module it mutates and every test it selects exists, every target names a mutated module, and no mutated
module is left without a target (docs/mutation.md would then report a score nobody measured)."""

from __future__ import annotations

import configparser

from tests.support import ROOT


def mutmut_config() -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["mutmut"]


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def targets() -> list[str]:
    text = (ROOT / "tests" / "mutation_targets.txt").read_text(encoding="utf-8")
    return [line for line in lines(text) if not line.startswith("#")]


def module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_every_mutated_module_and_selected_test_exists() -> None:
    config = mutmut_config()
    for entry in lines(config["only_mutate"]) + lines(config["pytest_add_cli_args_test_selection"]):
        path, _, test = entry.partition("::")  # a file, or one test of it
        assert (ROOT / path).is_file(), f"setup.cfg [mutmut] names {path}, which does not exist"
        assert not test or f"def {test}(" in (ROOT / path).read_text(encoding="utf-8"), f"no test {entry}"


def test_every_target_names_a_mutated_module_and_every_module_has_a_target() -> None:
    modules = [module(path) for path in lines(mutmut_config()["only_mutate"])]
    for glob in targets():
        # a mutant is named module.x_function__mutmut_N or module.xǁClassǁmethod__mutmut_N
        assert any(glob.startswith(m + ".") for m in modules), f"{glob} is in no module of setup.cfg only_mutate"
    for name in modules:
        assert any(glob.startswith(name + ".") for glob in targets()), f"{name} is mutated by no target"


def test_make_mutate_runs_the_targets() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nmutate:", 1)[1].split("\n\n", 1)[0]
    assert "mutmut run" in recipe and "tests/mutation_targets.txt" in recipe
