import pytest


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """An empty data root, so tests never touch (or depend on) the user's installed data."""
    monkeypatch.setenv("MDM_PRIME_DATA", str(tmp_path / "root"))
    return tmp_path / "root"
