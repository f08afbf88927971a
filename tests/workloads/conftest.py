import pytest


@pytest.fixture(scope="module")
def tmp_cache(tmp_path_factory):
    """One temporary model cache per test module: a tiny model is trained once and reused by later tests, and the
    user's cache is never written with test data."""
    path = tmp_path_factory.mktemp("dtypelab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DTYPELAB_CACHE", str(path))
        yield path
