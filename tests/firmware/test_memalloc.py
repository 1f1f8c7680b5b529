"""MEM allocator: free ranges per bank, striped tensors, and what its errors say."""

import pytest

from openlpu.firmware.memalloc import AllocError, MemAllocator
from openlpu.firmware.schedule import CompileError
from openlpu.params import preset

P = preset("default")           # 4 MEM slices x 2 banks x 256 words


def test_stripes_split_the_words_and_first_fit_each_bank():
    a = MemAllocator(P)
    assert a.free_words() == a.capacity == 8 * P.mem_words
    s = a.stripe("X", 5, [(0, 0), (1, 0)])
    assert s == [(0, 0, 0, 1), (1, 0, 0, 1)]          # 3 words in slice 0, 2 in slice 1
    assert a.largest_run((0, 0)) == P.mem_words - 3 and a.largest_run((1, 0)) == P.mem_words - 2
    t = a.stripe("Y", 4, [(0, 0), (1, 0)])
    assert t == [(0, 0, 3, 1), (1, 0, 2, 1)]
    assert a.owner((0, 0), 2) == "X" and a.owner((0, 0), 3) == "Y" and a.owner((0, 0), 5) is None
    assert a.free_words() == a.capacity - 9


def test_free_merges_ranges_and_the_space_is_reused():
    a = MemAllocator(P)
    a.stripe("X", 10, [(2, 1)])
    a.stripe("Y", 10, [(2, 1)])
    a.free("X")
    assert a.largest_run((2, 1)) == P.mem_words - 20
    assert a.stripe("Z", 10, [(2, 1)]) == [(2, 1, 0, 1)]     # X's words again
    a.free("Y")
    a.free("Z")
    assert a.largest_run((2, 1)) == P.mem_words and a.free_words() == a.capacity


def test_reserve_fixed_words():
    a = MemAllocator(P)
    assert a.reserve("const", (2, 0), 0, 4) == (2, 0, 0, 1)
    assert a.stripe("X", 3, [(2, 0)]) == [(2, 0, 4, 1)]
    with pytest.raises(AllocError, match=r"other needs words \[2, 6\) of MEM slice 2 bank 0, "
                                         r"which are not free"):
        a.reserve("other", (2, 0), 2, 4)


def test_a_tensor_that_does_not_fit_is_named_with_its_size_and_the_free_words():
    a = MemAllocator(P, "matmul 16x384x384 on preset 'default'")
    a.stripe("A", 200, [(0, 0)])
    with pytest.raises(AllocError) as e:
        a.stripe("B^T", 4608, [(0, 0), (1, 0)])
    msg = str(e.value)
    assert msg == ("matmul 16x384x384 on preset 'default': B^T needs 4608 words (147456 bytes) "
                   "in 2 stripes of 2304 words; the largest free run in bank 0 of mem_w0, "
                   "mem_w1 is 256 words (312 free there, 1848 free of 2048 in all)")
    assert isinstance(e.value, CompileError)
    assert a.free_words() == 2048 - 200                    # nothing allocated


@pytest.mark.parametrize("units, message", [
    ([], "was given no MEM banks"),
    ([(0, 0), (0, 0)], "a bank given twice"),
    ([(9, 0)], "MEM slice 9 bank 0 does not exist"),
    ([(0, 2)], "MEM slice 0 bank 2 does not exist"),
    ([(0, 0), (1, 0), (2, 0), (3, 0)], "has 3 word\\(s\\), fewer than its 4 stripes"),
])
def test_bad_requests(units, message):
    with pytest.raises(AllocError, match=message):
        MemAllocator(P).stripe("X", 3, units)


def test_fits_agrees_with_stripe():
    a = MemAllocator(P)
    a.stripe("X", P.mem_words - 10, [(1, 1)])
    assert a.fits(20, [(1, 1), (0, 1)]) and not a.fits(21, [(1, 1), (0, 1)])
    a.stripe("Y", 20, [(1, 1), (0, 1)])
    with pytest.raises(AllocError):
        a.stripe("Z", 1, [(1, 1)])
