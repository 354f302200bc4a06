"""``manycore bench`` and the measuring tools the ``benchmarks/`` suite shares with it."""
