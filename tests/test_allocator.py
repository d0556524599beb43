"""The host allocator setting every entry's process makes (``benchbed.train.allocator``)."""
import platform

import pytest
import torch

from benchbed.train.allocator import keep_freed_pages


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_setting_and_torch_still_allocates():
    assert keep_freed_pages() is True
    assert keep_freed_pages() is True  # once per process; a second call is the first's answer
    big = torch.ones(4 << 20)  # 16 MiB: from the heap now, where glibc would have mapped it afresh
    assert float(big.sum()) == 4 << 20
