"""The grace memory's rules, in memory (no root): what it keeps, for how long, and what a damaged
file costs. Times are explicit, so nothing here depends on the machine's clock."""

from synthetic import EPHEMERAL, scan_result

from tcp_lld.cli import DEFAULT_GRACE
from tcp_lld.grace import MAX_LISTENERS, MIN_RETENTION, GraceMemory

STAMP = "boot/7/4026532001"
T0 = 1763770000.0


def remembered(memory, result, now, grace=DEFAULT_GRACE, min_age=3600.0, ephemeral=EPHEMERAL):
    memory.update(result, now, grace, ephemeral, min_age)
    return memory


def test_a_gone_listener_is_remembered_with_its_first_and_last_sighting():
    memory = remembered(GraceMemory(STAMP), scan_result([80, 443]), T0)
    remembered(memory, scan_result([80, 443]), T0 + 100)
    remembered(memory, scan_result([80]), T0 + 200)
    entry = memory.listeners[443]
    assert (entry.first_seen, entry.last_seen, entry.listening) == (T0, T0 + 100, False)
    assert memory.listeners[80].listening


def test_it_round_trips_through_its_file():
    memory = remembered(GraceMemory(STAMP), scan_result([80], [3306]), T0)
    again = GraceMemory.from_bytes(memory.to_bytes(), STAMP)
    assert again.to_bytes() == memory.to_bytes()
    assert again.outbound == {3306: T0}
    assert memory.to_bytes().startswith(b"tcp-lld-grace/1 " + STAMP.encode() + b"\n")


def test_a_damaged_line_costs_that_line_only():
    memory = remembered(GraceMemory(STAMP), scan_result([80, 443, 8443]), T0)
    lines = memory.to_bytes().split(b"\n")
    damaged = b"\n".join(line.replace(b"L 443 ", b"L 4x3 ") for line in lines)
    again = GraceMemory.from_bytes(damaged, STAMP)
    assert sorted(again.listeners) == [80, 8443]
    assert again.damaged_lines == 1


def test_another_namespace_or_format_counts_as_empty():
    stored = remembered(GraceMemory(STAMP), scan_result([80]), T0).to_bytes()
    assert GraceMemory.from_bytes(stored, "boot/8/4026532001").listeners == {}
    assert GraceMemory.from_bytes(stored.replace(b"grace/1", b"grace/0"), STAMP).listeners == {}


def test_the_longest_grace_asked_is_kept_not_cut_to_a_day():
    memory = remembered(GraceMemory(STAMP), scan_result([80, 443]), T0, grace=7 * 86400)
    remembered(memory, scan_result([80]), T0 + 10)
    remembered(memory, scan_result([80]), T0 + 3 * 86400)  # a default caller, three days later
    assert 443 in memory.listeners


def test_a_default_grace_forgets_after_a_day():
    memory = remembered(GraceMemory(STAMP), scan_result([80, 443]), T0)
    remembered(memory, scan_result([80]), T0 + 10)
    remembered(memory, scan_result([80]), T0 + MIN_RETENTION + 20)
    assert 443 not in memory.listeners


def test_a_sighting_in_the_future_is_taken_as_now():
    """The clock stepped back an hour: the entry must not outlive any grace by that hour."""
    memory = remembered(GraceMemory(STAMP), scan_result([80, 443], [3306]), T0 + 3600)
    remembered(memory, scan_result([80]), T0)
    assert memory.listeners[443].last_seen == T0
    assert memory.outbound[3306] == T0


def test_short_lived_listeners_of_the_ephemeral_range_are_forgotten_once_gone():
    memory = remembered(GraceMemory(STAMP), scan_result([80, 40000, 41000]), T0)
    remembered(memory, scan_result([80, 40000, 41000]), T0 + 4000)  # 40000, 41000 now old enough
    remembered(memory, scan_result([80, 41000, 42000]), T0 + 4010)
    remembered(memory, scan_result([80]), T0 + 4020)
    assert 40000 in memory.listeners and 41000 in memory.listeners  # listened over an hour
    assert 42000 not in memory.listeners  # listened 10 s on a random port


def test_a_widened_ephemeral_range_does_not_make_a_service_forgettable():
    wide = (1024, 65535)
    memory = remembered(GraceMemory(STAMP), scan_result([3306]), T0, ephemeral=wide)
    remembered(memory, scan_result([3306]), T0 + 3600, ephemeral=wide)
    remembered(memory, scan_result([]), T0 + 3700, ephemeral=wide)
    assert 3306 in memory.listeners


def test_the_memory_is_bounded():
    memory = GraceMemory(STAMP)
    remembered(memory, scan_result(range(1, MAX_LISTENERS + 1)), T0, min_age=0)
    remembered(memory, scan_result(range(MAX_LISTENERS + 1, MAX_LISTENERS + 501)), T0 + 5, min_age=0)
    assert len(memory.listeners) == MAX_LISTENERS
    assert all(memory.listeners[port].listening for port in range(MAX_LISTENERS + 1, MAX_LISTENERS + 501))
