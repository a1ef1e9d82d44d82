import pytest

from spright.transport import registry


def transports() -> list:
    """Every transport users can pick; one that this machine cannot run is skipped with its reason."""
    params = []
    for name, cls in registry().items():
        reason = cls.unavailable_reason()
        marks = [pytest.mark.skip(reason=f"{name}: {reason}")] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=transports(), scope="module")
def transport(request: pytest.FixtureRequest) -> str:
    return request.param
