"""The protection registry: every module loads, names are unique, classes are well-formed."""

from __future__ import annotations

import importlib
import pkgutil

import attrs
import pytest

import protections
from protections import DuplicateProtection, Protection, build_settings


class TestRegistry:
    def test_every_module_under_protections_imports_and_registers(self) -> None:
        """Importing every module of the package registers one protection per public module."""
        registry = protections.load_all()
        modules = {m.name for m in pkgutil.iter_modules(protections.__path__) if not m.name.startswith("_")}
        registered_modules = {cls.__module__.rsplit(".", 1)[1] for cls in registry.values()}
        assert modules <= registered_modules

    @pytest.mark.parametrize("name", sorted(protections.load_all()))
    def test_protection_is_declarative(self, name: str) -> None:
        """Each protection has a docstring, a description, event types and frozen attrs settings with defaults."""
        cls = protections.REGISTRY[name]
        assert cls.__doc__
        assert cls.description
        assert cls.event_types
        assert attrs.has(cls.Settings)
        assert cls.Settings.__setattr__ is not object.__setattr__
        assert build_settings(cls.Settings, {}) == cls.Settings()

    def test_duplicate_name_is_refused(self) -> None:
        """A second class claiming an existing name fails at class creation."""
        protections.load_all()

        @attrs.frozen
        class S:
            x: int = 1

        with pytest.raises(DuplicateProtection):

            class Impostor(Protection):
                name = "flood"
                Settings = S

    def test_reloading_a_module_is_not_a_duplicate(self) -> None:
        """Re-importing a protection module registers the same name again without complaint."""
        module = importlib.import_module("protections.flood")
        importlib.reload(module)
        assert protections.REGISTRY["flood"].__module__ == "protections.flood"


class TestBuildSettings:
    def test_unknown_key_is_named(self) -> None:
        """An unknown setting raises SettingsError naming the key."""
        cls = protections.load_all()["flood"].Settings
        with pytest.raises(protections.SettingsError) as err:
            build_settings(cls, {"max_mesages": 3})
        assert err.value.key == "max_mesages"

    def test_wrong_type_is_named(self) -> None:
        """A bool where an int belongs is refused with the key named."""
        cls = protections.load_all()["flood"].Settings
        with pytest.raises(protections.SettingsError) as err:
            build_settings(cls, {"max_messages": True})
        assert err.value.key == "max_messages"

    def test_validator_failure_is_refused(self) -> None:
        """A value the validator rejects (zero messages) is refused."""
        cls = protections.load_all()["flood"].Settings
        with pytest.raises(protections.SettingsError):
            build_settings(cls, {"max_messages": 0})

    def test_overrides_apply_over_a_base(self) -> None:
        """Room overrides change only the keys they name."""
        cls = protections.load_all()["flood"].Settings
        base = build_settings(cls, {"per_seconds": 30})
        assert build_settings(cls, {"max_messages": 5}, base=base) == cls(max_messages=5, per_seconds=30.0)
