"""The dequantization workspace (`nf4_dequant.DequantWorkspace`): one buffer per device and dtype, which `take`
grows for a larger weight and `borrow` never grows (CPU tensors stand in for CUDA ones)."""

import torch

from nextai.modules.nf4_dequant import DequantWorkspace

CPU = torch.device("cpu")


def test_take_grows_and_every_view_shares_one_buffer():
    workspace = DequantWorkspace()
    small = workspace.take(torch.Size([4, 8]), torch.bfloat16, CPU)
    assert workspace.nbytes() == 4 * 8 * 2
    large = workspace.take(torch.Size([16, 8]), torch.bfloat16, CPU)
    assert large.shape == (16, 8) and workspace.nbytes() == 16 * 8 * 2
    again = workspace.take(torch.Size([2, 8]), torch.bfloat16, CPU)
    assert again.data_ptr() == large.data_ptr() and workspace.nbytes() == 16 * 8 * 2  # no regrowth
    assert small.data_ptr() != large.data_ptr()  # the first buffer was replaced, not extended


def test_borrow_never_grows_and_keeps_dtypes_apart():
    workspace = DequantWorkspace()
    assert workspace.borrow(torch.Size([2, 2]), torch.bfloat16, CPU) is None  # nothing reserved yet
    workspace.reserve(64, torch.bfloat16, CPU)
    view = workspace.borrow(torch.Size([8, 8]), torch.bfloat16, CPU)
    assert view is not None and view.shape == (8, 8)
    assert workspace.borrow(torch.Size([8, 9]), torch.bfloat16, CPU) is None  # too large: the caller allocates
    assert workspace.borrow(torch.Size([2, 2]), torch.float32, CPU) is None  # another dtype, another buffer
    assert workspace.nbytes() == 64 * 2
