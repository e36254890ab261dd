"""The answers file: one writer, one reader, and no wrong answer from a damaged file (no root)."""

import pytest
from synthetic import STAMP, decoded, encoded, scan_result

from tcp_lld.answers import Answers, checksum
from tcp_lld.grace import GraceMemory
from tcp_lld.states import ESTABLISHED, LISTEN, TIME_WAIT


@pytest.fixture
def raw() -> bytes:
    return encoded(scan_result([80, 443], [3306, 5432]), kernel='{"ListenDrops":0}')


def test_a_file_reads_back_as_written(raw):
    answers = decoded(raw)
    assert (answers.started, answers.source, answers.source_asked, answers.memory) == (1763770000.5, "netlink", "auto", "ok")
    assert answers.ephemeral == (32768, 60999)
    assert [line.port for line in answers.listeners()] == [80, 443]
    assert [(line.port, line.peer_max) for line in answers.outbound()] == [(3306, 1), (5432, 2)]
    line = answers.listeners()[0]
    assert (line.listening, line.queue, line.backlog, line.addresses, line.families, line.uids) == (
        True, 0, 128, ["0.0.0.0"], [4], [0])
    assert answers.kernel() == b'{"ListenDrops":0}'


def test_count_answers_by_listening_port_remote_port_and_total(raw):
    answers = decoded(raw)
    assert answers.count(80, ESTABLISHED - 1, outbound=False) == 3
    assert answers.count(80, LISTEN - 1, outbound=False) == 1
    assert answers.count(80, None, outbound=False) == 4
    assert answers.count(5432, TIME_WAIT - 1, outbound=True) == 2
    assert answers.count(3306, None, outbound=True) == 1
    assert answers.count(None, ESTABLISHED - 1, outbound=False) == 6
    assert answers.count(8080, None, outbound=False) == 0  # nothing there: no socket
    assert answers.count(80, None, outbound=True) == 0  # nobody here connects out to 80


def test_a_changed_byte_that_keeps_every_length_is_refused(raw):
    position = raw.index(b"L 80 ") + 5
    forged = raw[:position] + (b"9" if raw[position:position + 1] != b"9" else b"8") + raw[position + 1:]
    assert len(forged) == len(raw)
    assert Answers.decode(forged) is None


@pytest.mark.parametrize("cut", [1, 10, 100])
def test_a_truncated_file_is_refused(raw, cut):
    assert Answers.decode(raw[:-cut]) is None


def test_other_formats_and_empty_files_are_refused(raw):
    assert Answers.decode(b"") is None
    assert Answers.decode(None) is None
    assert raw.startswith(b"tcp-lld/4 ")
    body = raw[: raw.rindex(b"\nE ")].replace(b"tcp-lld/4", b"tcp-lld/3", 1)
    older = body + b"\nE %x\n" % checksum(body)  # intact, but of the format before `O` lines had peer max
    assert Answers.decode(older) is None
    assert Answers.decode(b"tcp-lld/4 x\nE 00000000\n") is None


def test_a_remembered_outbound_port_with_no_socket_now_has_peer_max_0():
    memory = GraceMemory(STAMP)
    encoded(scan_result([80], [3306, 5432], started=1763770000.5), memory)
    answers = decoded(encoded(scan_result([80], [5432], started=1763770100.5), memory))
    assert [(line.port, line.peer_max, sum(line.counts)) for line in answers.outbound()] == [(3306, 0, 0), (5432, 1, 1)]
