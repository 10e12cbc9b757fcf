"""Position conversion against an independent count: the text encoded with Python's codecs."""
import pytest

from lsp.positions import UTF8, UTF16, UTF32, char_offsets, to_offset, to_position

TEXT = "a = 1\r\nb = '😀é'\rc\n\nlast 😀"


def units_ref(s: str, encoding: str) -> int:
    return {UTF8: len(s.encode("utf-8")), UTF16: len(s.encode("utf-16-le")) // 2, UTF32: len(s)}[encoding]


@pytest.mark.parametrize("encoding", [UTF8, UTF16, UTF32])
def test_every_offset_round_trips(encoding):
    lines = ["a = 1", "b = '😀é'", "c", "", "last 😀"]
    starts = [0, 7, 16, 18, 19]
    for line, (start, content) in enumerate(zip(starts, lines)):
        for i in range(len(content) + 1):
            pos = (line, units_ref(content[:i], encoding))
            assert to_offset(TEXT, *pos, encoding) == start + i
            assert to_position(TEXT, start + i, encoding) == pos


def test_utf16_counts_astral_characters_twice():
    assert to_offset(TEXT, 1, 7, UTF16) == 7 + 6  # after "b = '😀": 5 + 2 units, 6 characters
    assert to_offset(TEXT, 1, 6, UTF16) == 7 + 6  # half a surrogate pair: the character after it
    assert to_offset(TEXT, 1, 7, UTF8) == 7 + 6  # 5 bytes + 2 of the 4 of 😀: the character after it
    assert to_offset(TEXT, 1, 9, UTF8) == 7 + 6


def test_out_of_range_positions_clamp():
    assert to_offset(TEXT, 0, 999) == 5  # end of line 0, before "\r\n"
    assert to_offset(TEXT, 99, 0) == len(TEXT)
    assert to_offset(TEXT, -3, -3) == 0
    assert to_offset("", 5, 5) == 0
    assert to_position(TEXT, 10**9) == (4, units_ref("last 😀", UTF16))
    assert to_position(TEXT, -1) == (0, 0)



@pytest.mark.parametrize("text", ["plain ascii", TEXT, "\ud800 lone surrogate é", "日本語 = '😀'\n"])
def test_char_offsets_match_decoding_every_prefix(text):
    data = text.encode("utf-8", "surrogatepass")
    offset = char_offsets(data)
    boundaries = [0]
    for ch in text:
        boundaries.append(boundaries[-1] + len(ch.encode("utf-8", "surrogatepass")))
    for byte in range(len(data) + 1):
        end = next(b for b in boundaries if b >= byte)  # inside a character: the place after it
        assert offset(byte) == len(data[:end].decode("utf-8", "surrogatepass")), byte
