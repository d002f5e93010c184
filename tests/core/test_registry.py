import pytest

from essence.core.registry import Registry, UnknownNameError, suggest


def test_registry_register_get_and_suggest():
    reg = Registry("corruption")

    @reg.register("fog", tags=["weather"])
    def fog():
        return "fog"

    reg.register("frost", lambda: "frost", tags=["weather"])
    reg.register("gaussian_noise", lambda: "noise", tags=["noise"])
    assert reg.get("fog")() == "fog"
    assert reg.names("weather") == ["fog", "frost"]
    assert "frost" in reg and len(reg) == 3
    with pytest.raises(UnknownNameError) as err:
        reg.get("fgo")
    assert "unknown corruption 'fgo'; did you mean 'fog'?" in str(err.value)
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("fog", fog)


def test_suggest_nothing_close():
    assert suggest("zzzz", ["fog", "frost"]) == ""
