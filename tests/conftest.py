import pytest

from .zoo import exported_case


@pytest.fixture(scope="session")
def exported():
    """case -> (torch model, exported ONNX model), exported once per session."""
    return exported_case
