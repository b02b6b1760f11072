"""With k2 installed the pruned RNN-T loss comes from k2; fast_rnnt (the fallback) must give the same losses and
gradients on the same inputs, so switching backends never changes training."""

import pytest
import torch

try:
    import k2
except (ImportError, OSError) as exc:  # OSError: a k2 build that does not match torch
    pytest.skip(f"k2 does not import ({exc}); run tools/install.sh with --k2-source to build it",
                allow_module_level=True)
import fast_rnnt

from mt2kd_lib.losses import rnnt_backend


def _pruned_loss(backend, am, lm, joint, symbols, boundary, s_range):
    """The transducer head's recipe: smoothed loss -> prune ranges -> pruned loss on a toy joiner."""
    simple, (px_grad, py_grad) = backend.rnnt_loss_smoothed(
        lm=lm, am=am, symbols=symbols, termination_symbol=0, lm_only_scale=0.25, am_only_scale=0.0,
        boundary=boundary, reduction="sum", return_grad=True)
    ranges = backend.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=s_range)
    am_p, lm_p = backend.do_rnnt_pruning(am=am, lm=lm, ranges=ranges)
    logits = joint(am_p, lm_p)
    pruned = backend.rnnt_loss_pruned(logits=logits, symbols=symbols, ranges=ranges, termination_symbol=0,
                                      boundary=boundary, reduction="sum")
    return simple, pruned, ranges


def test_the_backend_is_k2_when_k2_imports():
    assert rnnt_backend.BACKEND_NAME == "k2"
    assert rnnt_backend.backend_module() is k2


def test_k2_and_fast_rnnt_give_the_same_pruned_loss_and_gradients():
    torch.manual_seed(0)
    n, t, s, v = 3, 20, 6, 11
    am0 = torch.randn(n, t, v, dtype=torch.float64)
    lm0 = torch.randn(n, s + 1, v, dtype=torch.float64)
    symbols = torch.randint(1, v, (n, s))
    boundary = torch.tensor([[0, 0, 6, 20], [0, 0, 4, 15], [0, 0, 2, 9]], dtype=torch.int64)
    w = torch.randn(v, v, dtype=torch.float64)

    def joint(a, b):
        return torch.tanh(a + b) @ w

    out = {}
    for name, backend in (("k2", k2), ("fast_rnnt", fast_rnnt)):
        am, lm = am0.clone().requires_grad_(), lm0.clone().requires_grad_()
        simple, pruned, ranges = _pruned_loss(backend, am, lm, joint, symbols, boundary, s_range=3)
        (simple + pruned).backward()
        out[name] = (simple.detach(), pruned.detach(), ranges, am.grad, lm.grad)
    for a, b, what in zip(out["k2"], out["fast_rnnt"], ("simple loss", "pruned loss", "ranges", "am grad",
                                                           "lm grad")):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"{what} differs")
        else:
            assert torch.equal(a, b), f"{what} differs"
    assert out["k2"][1] > 0 and out["k2"][3].abs().sum() > 0  # a real loss with real gradients
