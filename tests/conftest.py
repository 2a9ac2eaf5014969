import pytest
import torch

from .zoo import export, fold_bn_into_conv

_cache = {}


@pytest.fixture(scope="session")
def exported():
    """case -> (torch model, exported ONNX model), exported once per session."""
    def get(case):
        if case.name not in _cache:
            model = case.build().eval()
            if not case.keep_bn:  # fold first, so the file and the reference share weights
                model = fold_bn_into_conv(model)
            x = torch.randn(4, *case.sample_shape)
            _cache[case.name] = (model, export(model, x, softmax=case.softmax,
                                               dynamo=case.dynamo, keep_bn=case.keep_bn,
                                               fixed_batch=case.fixed_batch))
        return _cache[case.name]
    return get
